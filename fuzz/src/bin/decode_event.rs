//! Fuzz target: the event decoders, fed as an HTTP delivery (header lines, a blank line, the
//! body; binary-mode CloudEvents arrive through their `ce-*` headers) and as a Lambda payload.

use std::error::Error;

use http::{HeaderMap, HeaderName, HeaderValue};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let (headers, body) = split(data);
        if let Err(error) = bucketfn::event::decode(body, &headers) {
            describe(&error);
        }
        // The Lambda runtime hands the decoder a `Value` it parsed itself.
        if let Ok(value) = serde_json::from_slice(body)
            && let Err(error) = bucketfn::event::decode_value(value)
        {
            describe(&error);
        }
    });
}

/// Splits `name: value` lines up to the first empty line from the body after it. Input without
/// a line break is all body. A header line an HTTP server would refuse is dropped, as it never
/// reaches the decoder; values may hold any byte a server passes on.
fn split(data: &[u8]) -> (HeaderMap, &[u8]) {
    let mut headers = HeaderMap::new();
    let mut rest = data;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let (line, after) = rest.split_at(end);
        rest = &after[1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim_ascii()),
            HeaderValue::from_bytes(value[1..].trim_ascii()),
        ) {
            headers.append(name, value);
        }
    }
    (headers, rest)
}

/// Renders an error and its causes, as the runtimes do when they report it.
fn describe(error: &dyn Error) {
    let mut cause = Some(error);
    while let Some(error) = cause {
        std::hint::black_box(error.to_string());
        cause = error.source();
    }
}
