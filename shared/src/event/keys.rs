//! Object-key decoding by the rules of each source, applied exactly once: a key decoded twice
//! turns a literal `%2B` into `+`, and one not decoded at all leaves `+` where a space was.

use super::DecodeError;

/// How a source escapes object keys in its notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyEncoding {
    /// HTML-form encoding: `+` is a space, then percent escapes (AWS S3, and MinIO, whose Go
    /// `url.QueryEscape` also escapes `/` as `%2F` and `+` as `%2B`).
    Form,
    /// The key as stored, no escaping.
    Raw,
}

/// Why an escaped key could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyDecodeError {
    #[error("has an invalid percent escape at byte {0}")]
    BadEscape(usize),
    #[error("is not UTF-8 once percent-decoded")]
    NotUtf8,
}

impl KeyEncoding {
    pub(crate) fn decode(self, key: &str) -> Result<String, KeyDecodeError> {
        match self {
            Self::Raw => Ok(key.to_owned()),
            Self::Form => form_decode(key),
        }
    }

    /// [`Self::decode`] for a key read from an event of `format`, failing as that event.
    pub(crate) fn decode_in(self, format: &'static str, key: &str) -> Result<String, DecodeError> {
        self.decode(key).map_err(|problem| DecodeError::BadKey {
            format,
            key: key.to_owned(),
            problem,
        })
    }
}

fn form_decode(key: &str) -> Result<String, KeyDecodeError> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .ok_or(KeyDecodeError::BadEscape(i))?;
                let hex = std::str::from_utf8(hex).map_err(|_| KeyDecodeError::BadEscape(i))?;
                let byte = u8::from_str_radix(hex, 16).map_err(|_| KeyDecodeError::BadEscape(i))?;
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| KeyDecodeError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn form_decoding_turns_plus_into_space_once() -> TestResult {
        let decode = |k| KeyEncoding::Form.decode(k);
        assert_eq!(decode("my+photo.jpg")?, "my photo.jpg");
        assert_eq!(decode("a%2Bb.jpg")?, "a+b.jpg");
        assert_eq!(decode("a%252B.jpg")?, "a%2B.jpg");
        assert_eq!(decode("photos%2F2024%2Fcat.jpg")?, "photos/2024/cat.jpg");
        assert_eq!(decode("caf%C3%A9+%E2%98%95.png")?, "café ☕.png");
        assert_eq!(decode("%3Cscript%3E%22%26%27.jpg")?, "<script>\"&'.jpg");
        Ok(())
    }

    #[test]
    fn raw_keys_are_untouched() -> TestResult {
        assert_eq!(KeyEncoding::Raw.decode("a+b%20c")?, "a+b%20c");
        Ok(())
    }

    #[test]
    fn broken_escapes_are_errors() {
        assert_eq!(
            KeyEncoding::Form.decode("a%zz"),
            Err(KeyDecodeError::BadEscape(1))
        );
        assert_eq!(
            KeyEncoding::Form.decode("abc%4"),
            Err(KeyDecodeError::BadEscape(3))
        );
        assert_eq!(
            KeyEncoding::Form.decode("%FF%FE"),
            Err(KeyDecodeError::NotUtf8)
        );
    }
}
