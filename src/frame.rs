//! What goes over the wire ([`Frame`]) and where it sits in the server's
//! stream ([`Cursor`]): the bottom of the module graph, used by errors,
//! protocols and messages alike.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

/// One WebSocket data frame: what the application sends, and the payload of
/// what it receives.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame (UTF-8).
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

impl Frame {
    /// The text, if this is a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Frame::Text(t) => Some(t),
            Frame::Binary(_) => None,
        }
    }

    /// The raw bytes (UTF-8 for a text frame).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Frame::Text(t) => t.as_bytes(),
            Frame::Binary(b) => b,
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// `true` when the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses a text frame as JSON. `None` for binary frames and for text
    /// that is not JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.as_text()?).ok()
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_payload(f, self.as_text(), self.as_bytes())
    }
}

/// A payload for `Debug`: its size and a short head only, as payloads can
/// be large and can carry secrets.
pub(crate) fn fmt_payload(
    f: &mut fmt::Formatter<'_>,
    text: Option<&str>,
    bytes: &[u8],
) -> fmt::Result {
    const HEAD: usize = 64;
    match text {
        Some(t) => {
            let mut end = t.len().min(HEAD);
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            let more = if end < t.len() { "…" } else { "" };
            write!(f, "Text({} bytes: {:?}{more})", t.len(), &t[..end])
        }
        None => write!(f, "Binary({} bytes)", bytes.len()),
    }
}

impl From<String> for Frame {
    fn from(s: String) -> Self {
        Frame::Text(s)
    }
}

impl From<&str> for Frame {
    fn from(s: &str) -> Self {
        Frame::Text(s.to_owned())
    }
}

impl From<Vec<u8>> for Frame {
    fn from(b: Vec<u8>) -> Self {
        Frame::Binary(b)
    }
}

impl From<serde_json::Value> for Frame {
    fn from(v: serde_json::Value) -> Self {
        Frame::Text(v.to_string())
    }
}

impl From<&serde_json::Value> for Frame {
    fn from(v: &serde_json::Value) -> Self {
        Frame::Text(v.to_string())
    }
}

/// An ordered position in the server's stream: a sequence number or a
/// timestamp such as `createTime`. Numbers compare as numbers, strings as
/// strings (ISO timestamps sort correctly); a number sorts before a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Cursor {
    /// A whole number.
    Int(i64),
    /// Anything else, compared as text.
    Text(String),
}

impl Cursor {
    /// The cursor a JSON value holds: integers (and integral floats) become
    /// [`Cursor::Int`], strings [`Cursor::Text`]; anything else `None`.
    pub fn from_json(v: &Value) -> Option<Cursor> {
        match v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .map(Cursor::Int),
            Value::String(s) => Some(Cursor::Text(s.clone())),
            _ => None,
        }
    }

    /// The cursor as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Cursor::Int(i) => Value::from(*i),
            Cursor::Text(s) => Value::from(s.as_str()),
        }
    }
}

/// Keeps the highest cursor seen: `top` becomes `c` when it has none yet
/// or `c` is higher (a tie keeps the first). `true` when it moved.
pub(crate) fn raise(top: &mut Option<Cursor>, c: Cursor) -> bool {
    if top.as_ref().is_none_or(|t| c > *t) {
        *top = Some(c);
        return true;
    }
    false
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cursor::Int(i) => write!(f, "{i}"),
            Cursor::Text(s) => f.write_str(s),
        }
    }
}

impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cursor {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Cursor::Int(a), Cursor::Int(b)) => a.cmp(b),
            (Cursor::Text(a), Cursor::Text(b)) => a.cmp(b),
            (Cursor::Int(_), Cursor::Text(_)) => Ordering::Less,
            (Cursor::Text(_), Cursor::Int(_)) => Ordering::Greater,
        }
    }
}
