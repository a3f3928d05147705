//! JSON text written straight into a buffer, for the encoders that write one object per
//! message (the file sink's lines, the log-ingest lines): strings escaped exactly as serde_json
//! escapes them, but looked through eight bytes at a time, since nearly every byte of a log
//! line needs no escape and serde_json's byte-at-a-time escaping was the larger part of
//! forwarding a log file.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Non-zero where one of the eight bytes of `word` is a control character, `"` or `\\`. The
/// classic test for a byte below n, `(x - n·ONES) & !x & HIGHS`, is exact as a whole for
/// n ≤ 128 (it may mark more bytes after the first, never a word without one); equality is a
/// zero byte after an exclusive or.
fn special_bytes(word: u64) -> u64 {
    let below = |word: u64, n: u64| word.wrapping_sub(n * ONES) & !word & HIGHS;
    let quote = word ^ (u64::from(b'"') * ONES);
    let backslash = word ^ (u64::from(b'\\') * ONES);
    below(word, 0x20) | below(quote, 1) | below(backslash, 1)
}

/// The special bytes of an eight-byte word ([`special_bytes`]).
fn special_in(word: &[u8]) -> u64 {
    let mut eight = [0u8; 8];
    eight.copy_from_slice(word);
    special_bytes(u64::from_le_bytes(eight))
}

/// How many bytes at the start of `bytes` need no escape: 32 bytes at a time while none does,
/// then 8, then byte by byte.
fn clean_prefix(bytes: &[u8]) -> usize {
    let mut clean = 0;
    for block in bytes.chunks_exact(32) {
        if block
            .chunks_exact(8)
            .map(special_in)
            .fold(0, |any, word| any | word)
            != 0
        {
            break;
        }
        clean += 32;
    }
    for word in bytes[clean..].chunks_exact(8) {
        if special_in(word) != 0 {
            break;
        }
        clean += 8;
    }
    let rest = &bytes[clean..];
    clean
        + rest
            .iter()
            .position(|&byte| is_special(byte))
            .unwrap_or(rest.len())
}

fn is_special(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The escape of a special byte; a control character without a short form as `\u00xx`,
/// lower-case, as serde_json writes it.
fn escape(byte: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        0x08 => b'b',
        0x0c => b'f',
        _ => {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// `text` as a JSON string, quotes included.
pub(super) fn string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut rest = bytes;
    loop {
        let clean = clean_prefix(rest);
        out.extend_from_slice(&rest[..clean]);
        let Some((&special, after)) = rest[clean..].split_first() else {
            break;
        };
        escape(special, out);
        rest = after;
    }
    out.push(b'"');
}

/// `"name":`, the start of an object's member.
fn name(out: &mut Vec<u8>, name: &str) {
    string(out, name);
    out.push(b':');
}

/// The pairs as a JSON object of strings, in their order.
pub(super) fn object<'a>(out: &mut Vec<u8>, members: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push(b'{');
    for (n, (member, value)) in members.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        name(out, member);
        string(out, value);
    }
    out.push(b'}');
}

/// An integer.
pub(super) fn integer(out: &mut Vec<u8>, value: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(text: &str) -> String {
        let mut out = Vec::new();
        string(&mut out, text);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn every_byte_that_needs_an_escape_is_found_wherever_it_sits_in_a_word() {
        for byte in 0..=u8::MAX {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = byte;
                let expected = is_special(byte);
                assert_eq!(
                    special_bytes(u64::from_le_bytes(word)) != 0,
                    expected,
                    "{byte:#x} at {at}"
                );
            }
        }
    }

    /// Strings of log-like text with special characters sprinkled in, at every offset within
    /// a word, against serde_json's own encoding of the same strings.
    #[test]
    fn strings_are_written_exactly_as_serde_json_writes_them() {
        const ALPHABET: [&str; 16] = [
            "a", "Z", " ", "0", "~", "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1f}", "\u{7f}",
            "é", "€", "😀",
        ];
        let mut noise = crate::testing::Noise(0x9e37_79b9_7f4a_7c15);
        let mut next = move || noise.next_u64();
        for case in 0..5000 {
            let plain = (next() % 24) as usize;
            let mut text = "x".repeat(case % 9);
            for _ in 0..next() % 12 {
                let rare = next() % 4 == 0;
                let pick = (next() % 16) as usize;
                text.push_str(if rare {
                    ALPHABET[pick]
                } else {
                    ALPHABET[pick % 5]
                });
                text.push_str(&"p".repeat(plain % 11));
            }
            let expected = serde_json::to_string(&text).unwrap_or_default();
            assert_eq!(ours(&text), expected, "{text:?}");
        }
    }
}
