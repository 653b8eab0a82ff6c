//! A few lines of JSON writing, so the domain can render the responses it
//! stores (which are replayed byte for byte) without a serialization crate.

use std::fmt::Write;

/// Builds one flat-or-nested JSON object, keys in insertion order.
#[derive(Debug, Default)]
pub struct JsonObject {
    text: String,
}

impl JsonObject {
    pub fn new() -> Self {
        Self::default()
    }

    fn key(&mut self, key: &str) {
        self.text.push(if self.text.is_empty() { '{' } else { ',' });
        push_string(&mut self.text, key);
        self.text.push(':');
    }

    pub fn string(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_string(&mut self.text, value);
        self
    }

    pub fn optional_string(mut self, key: &str, value: Option<&str>) -> Self {
        self.key(key);
        match value {
            Some(value) => push_string(&mut self.text, value),
            None => self.text.push_str("null"),
        }
        self
    }

    pub fn integer(mut self, key: &str, value: i64) -> Self {
        self.key(key);
        let _ = write!(self.text, "{value}");
        self
    }

    /// Finite numbers only (NaN and infinities are not JSON); callers hold
    /// parsed coordinates, which are finite by construction.
    pub fn number(mut self, key: &str, value: f64) -> Self {
        self.key(key);
        if value.is_finite() {
            let _ = write!(self.text, "{value:?}");
        } else {
            self.text.push_str("null");
        }
        self
    }

    pub fn object(mut self, key: &str, value: JsonObject) -> Self {
        self.key(key);
        self.text.push_str(&value.finish());
        self
    }

    pub fn finish(mut self) -> String {
        if self.text.is_empty() {
            self.text.push('{');
        }
        self.text.push('}');
        self.text
    }
}

fn push_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_objects_and_escapes_strings() {
        let text = JsonObject::new()
            .string("message", "say \"hi\"\n\\ \u{1}")
            .object(
                "ride",
                JsonObject::new()
                    .integer("id", 7)
                    .number("lat", 0.0)
                    .number("tiny", 1e-7)
                    .optional_string("charge", None),
            )
            .finish();
        assert_eq!(
            text,
            r#"{"message":"say \"hi\"\n\\ \u0001","ride":{"id":7,"lat":0.0,"tiny":1e-7,"charge":null}}"#
        );
        assert_eq!(JsonObject::new().finish(), "{}");
    }
}
