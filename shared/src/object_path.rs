//! How messages name an object: `bucket/key`, with the control characters of hostile keys made
//! visible. Below every other module, since every layer's errors name objects.

use std::fmt;

/// `bucket/key` for messages, with control characters in hostile keys made visible.
pub struct ObjectPath<'a>(pub &'a str, pub &'a str);

impl fmt::Display for ObjectPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.escape_debug(), self.1.escape_debug())
    }
}
