//! Bayeux messages on the wire: reading a batch without copying payloads, and writing replies
//! and delivered messages as bytes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// One incoming message: each known field kept as raw JSON until the protocol reads it, so a
/// published `data` is never parsed into a tree.
#[derive(Default, Debug)]
pub struct Message<'a> {
    pub channel: Option<&'a RawValue>,
    pub id: Option<&'a RawValue>,
    pub client_id: Option<&'a RawValue>,
    pub data: Option<&'a RawValue>,
    pub subscription: Option<&'a RawValue>,
    pub advice: Option<&'a RawValue>,
    pub connection_type: Option<&'a RawValue>,
    pub supported_connection_types: Option<&'a RawValue>,
    pub ext: Option<&'a RawValue>,
    /// The first field nested deeper than allowed, if any.
    pub too_deep: Option<String>,
}

/// Why a message could not be read; becomes an unsuccessful reply.
#[derive(Debug, PartialEq, Eq)]
pub enum FieldError {
    NotAnObject,
    Unknown(String),
    Malformed,
}

/// The Bayeux fields a message may carry (Bayeux 1.0, section 3). `version`,
/// `minimumVersion`, `timestamp`, `successful` and `error` are accepted and not used.
const IGNORED_FIELDS: [&str; 5] = [
    "version",
    "minimumVersion",
    "timestamp",
    "successful",
    "error",
];

/// A map key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The fields of one message object, in order, as raw values.
struct Fields<'a>(Vec<(Key<'a>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(6));
                while let Some(entry) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// An object's members, in order, as raw values.
pub type Members<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// The members of a JSON object; `None` when `raw` is not an object.
pub fn object_members(raw: &str) -> Option<Members<'_>> {
    let fields: Fields<'_> = serde_json::from_str(raw).ok()?;
    Some(
        fields
            .0
            .into_iter()
            .map(|(key, value)| (key.0, value))
            .collect(),
    )
}

/// Splits a request body into its messages: a JSON array of objects, or a single object.
pub fn split_batch(body: &[u8]) -> Result<Vec<&RawValue>, serde_json::Error> {
    let text = std::str::from_utf8(body).map_err(|_| de::Error::custom("body is not UTF-8"))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        serde_json::from_str::<Vec<&RawValue>>(text)
    } else {
        serde_json::from_str::<&RawValue>(text).map(|one| vec![one])
    }
}

/// Reads one message's fields; unknown fields are refused by name. The first field whose value
/// nests arrays and objects more than `max_depth` deep is named in `too_deep`, for the caller
/// to refuse once it knows the message's channel and id.
pub fn read_message(raw: &RawValue, max_depth: usize) -> Result<Message<'_>, FieldError> {
    if !raw.get().starts_with('{') {
        return Err(FieldError::NotAnObject);
    }
    let Fields(fields) = serde_json::from_str(raw.get()).map_err(|_| FieldError::Malformed)?;
    let mut message = Message {
        too_deep: fields
            .iter()
            .find(|(_, value)| deeper_than(value.get(), max_depth))
            .map(|(Key(name), _)| name.to_string()),
        ..Message::default()
    };
    for (Key(name), value) in fields {
        // JSON null means absent, as Bayeux clients sometimes send it.
        let value = (value.get() != "null").then_some(value);
        let slot = match &*name {
            "channel" => &mut message.channel,
            "id" => &mut message.id,
            "clientId" => &mut message.client_id,
            "data" => &mut message.data,
            "subscription" => &mut message.subscription,
            "advice" => &mut message.advice,
            "connectionType" => &mut message.connection_type,
            "supportedConnectionTypes" => &mut message.supported_connection_types,
            "ext" => &mut message.ext,
            other if IGNORED_FIELDS.contains(&other) => continue,
            other => return Err(FieldError::Unknown(other.to_owned())),
        };
        *slot = value;
    }
    Ok(message)
}

/// Whether a JSON value nests arrays and objects more than `max` deep (`1` is 0 deep, `[1]`
/// 1, `{"a":[]}` 2). One pass over its bytes, without recursion, skipping strings with memchr;
/// a value too short to be that deep is not read at all. The value must be valid JSON, as a
/// `RawValue` is.
pub fn deeper_than(value: &str, max: usize) -> bool {
    let bytes = value.as_bytes();
    // Each level takes two bytes at least.
    if bytes.len() <= 2 * max || !matches!(bytes.first(), Some(b'[' | b'{')) {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string, to its closing quote, stepping over escapes.
                i += 1;
                loop {
                    let rest = bytes.get(i..).unwrap_or_default();
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(at) if rest[at] == b'\\' => i += at + 2,
                        Some(at) => {
                            i += at;
                            break;
                        }
                        None => return false, // not JSON: the parser says so
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// A raw value as a string, if it is one.
pub fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    if let Ok(text) = serde_json::from_str::<&str>(raw.get()) {
        return Some(Cow::Borrowed(text));
    }
    serde_json::from_str::<String>(raw.get())
        .ok()
        .map(Cow::Owned)
}

/// A raw value as a string or a non-empty array of strings (`subscription`).
pub fn as_str_list(raw: &RawValue) -> Option<Vec<Cow<'_, str>>> {
    if let Some(one) = as_str(raw) {
        return Some(vec![one]);
    }
    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
    items.into_iter().map(as_str).collect()
}

/// A field whose value has the wrong type or range.
#[derive(Debug)]
pub struct InvalidField;

/// `advice.timeout` in milliseconds, if the advice is an object carrying a non-negative number.
pub fn advice_timeout(raw: &RawValue) -> Result<Option<u64>, InvalidField> {
    #[derive(Deserialize)]
    struct Advice {
        timeout: Option<f64>,
    }
    let advice: Advice = serde_json::from_str(raw.get()).map_err(|_| InvalidField)?;
    match advice.timeout {
        Some(t) if t.is_finite() && t >= 0.0 => Ok(Some(t as u64)),
        Some(_) => Err(InvalidField),
        None => Ok(None),
    }
}

/// An `id` must be a string or a number; it is echoed back byte for byte.
pub fn valid_id(raw: &RawValue) -> bool {
    let text = raw.get();
    text.starts_with('"') || text.starts_with('-') || text.starts_with(|c: char| c.is_ascii_digit())
}

/// Writes one JSON object, field by field, with no intermediate tree.
pub struct ObjectWriter<'b> {
    out: &'b mut Vec<u8>,
    first: bool,
}

impl<'b> ObjectWriter<'b> {
    pub fn new(out: &'b mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A field whose value is already JSON.
    pub fn raw(&mut self, key: &str, json: &[u8]) -> &mut Self {
        self.key(key);
        self.out.extend_from_slice(json);
        self
    }

    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        write_string(self.out, value);
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.raw(key, if value { b"true" } else { b"false" })
    }

    /// A number that JSON can hold; integral values print without a fraction.
    pub fn float(&mut self, key: &str, value: f64) -> &mut Self {
        self.key(key);
        if value.fract() == 0.0 && value.abs() < 9.0e15 {
            self.out
                .extend_from_slice((value as i64).to_string().as_bytes());
        } else {
            let _ = serde_json::to_writer(&mut *self.out, &value);
        }
        self
    }

    pub fn number(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        self.out.extend_from_slice(value.to_string().as_bytes());
        self
    }

    pub fn finish(&mut self) {
        self.out.push(b'}');
    }
}

/// Writes a JSON string literal with the escapes JSON requires.
pub fn write_string(out: &mut Vec<u8>, value: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// A response body: a JSON array built by appending ready-made message bytes.
pub struct Body {
    bytes: Vec<u8>,
    empty: bool,
}

impl Body {
    pub fn new() -> Self {
        let mut bytes = Vec::with_capacity(256);
        bytes.push(b'[');
        Self { bytes, empty: true }
    }

    /// Appends one message's bytes.
    pub fn push(&mut self, message: &[u8]) {
        self.separator();
        self.bytes.extend_from_slice(message);
    }

    /// Appends a message written in place.
    pub fn object(&mut self) -> ObjectWriter<'_> {
        self.separator();
        ObjectWriter::new(&mut self.bytes)
    }

    fn separator(&mut self) {
        if !self.empty {
            self.bytes.push(b',');
        }
        self.empty = false;
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.push(b']');
        self.bytes
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_an_array_or_one_object() {
        assert_eq!(split_batch(br#"[{"a":1},{"b":2}]"#).unwrap().len(), 2);
        assert_eq!(split_batch(br#" {"a":1}"#).unwrap().len(), 1);
        assert!(split_batch(b"[{").is_err());
        assert!(split_batch(b"\xff").is_err());
    }

    #[test]
    fn reads_fields_and_refuses_unknown_ones() {
        let raw = split_batch(br#"[{"channel":"/a","id":7,"data":{"x":[1,2]},"ext":{}}]"#).unwrap();
        let message = read_message(raw[0], 128).unwrap();
        assert_eq!(as_str(message.channel.unwrap()).unwrap(), "/a");
        assert_eq!(message.id.unwrap().get(), "7");
        assert_eq!(message.data.unwrap().get(), r#"{"x":[1,2]}"#);
        let raw = split_batch(br#"{"channel":"/a","bogus":1}"#).unwrap();
        assert_eq!(
            read_message(raw[0], 128).unwrap_err(),
            FieldError::Unknown("bogus".into())
        );
        let raw = split_batch(b"[1]").unwrap();
        assert_eq!(
            read_message(raw[0], 128).unwrap_err(),
            FieldError::NotAnObject
        );
    }

    #[test]
    fn depth_is_not_fooled_by_brackets_in_strings() {
        // Brackets in strings, escaped quotes among them, are text, not nesting.
        let text = "[\\\"{".repeat(300);
        let in_string = format!(r#"{{"channel":"/a","data":["{text}"],"id":"x"}}"#);
        let raw = split_batch(in_string.as_bytes()).unwrap();
        assert_eq!(read_message(raw[0], 1).unwrap().too_deep, None);
        // A string ending in an escaped backslash ends there: what follows is counted.
        let after_escape = r#"{"channel":"/a","data":["a\\",[[]]]}"#;
        let raw = split_batch(after_escape.as_bytes()).unwrap();
        assert_eq!(
            read_message(raw[0], 2).unwrap().too_deep.as_deref(),
            Some("data")
        );
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let raw = split_batch(br#"{"channel":"/a\/b","\u0069d":"x"}"#).unwrap();
        let message = read_message(raw[0], 128).unwrap();
        assert_eq!(as_str(message.channel.unwrap()).unwrap(), "/a/b");
        assert_eq!(message.id.unwrap().get(), r#""x""#);
    }

    #[test]
    fn subscription_lists() {
        let raw = split_batch(br#"[{"subscription":["/a","/b"]},{"subscription":[1]}]"#).unwrap();
        let list = as_str_list(read_message(raw[0], 128).unwrap().subscription.unwrap()).unwrap();
        assert_eq!(list, vec!["/a", "/b"]);
        assert!(as_str_list(read_message(raw[1], 128).unwrap().subscription.unwrap()).is_none());
    }

    #[test]
    fn writes_objects_and_bodies() {
        let mut body = Body::new();
        body.object()
            .string("channel", "/a\"b")
            .bool("successful", true)
            .number("n", 3)
            .finish();
        body.push(br#"{"x":1}"#);
        let text = String::from_utf8(body.finish()).unwrap();
        assert_eq!(
            text,
            r#"[{"channel":"/a\"b","successful":true,"n":3},{"x":1}]"#
        );
    }

    #[test]
    fn depth_counts_arrays_and_objects_outside_strings() {
        assert!(!deeper_than("1", 0));
        assert!(!deeper_than(r#""[[[[[[""#, 0));
        assert!(deeper_than("[]", 0));
        assert!(!deeper_than("[[1]]", 2));
        assert!(deeper_than("[[1]]", 1));
        assert!(!deeper_than(r#"{"a":[{"b":"]]]]\"[[[["}]}"#, 3));
        assert!(deeper_than(r#"{"a":[{"b":"]]]]\"[[[["}]}"#, 2));
        assert!(!deeper_than(r#"[{},[],{"a":[]},[[]]]"#, 3));
        assert!(deeper_than(r#"[{},[],{"a":[]},[[[]]]]"#, 3));
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        assert!(deeper_than(&deep, 128));
        assert!(!deeper_than(&deep, 200_000));
    }

    #[test]
    fn a_field_nested_too_deep_is_named() {
        let data = format!("{}{}", "[".repeat(3), "]".repeat(3));
        let body = format!(r#"{{"channel":"/a","id":"x","data":{data},"ext":{{"a":[[]]}}}}"#);
        let raw = split_batch(body.as_bytes()).unwrap();
        assert_eq!(read_message(raw[0], 3).unwrap().too_deep, None);
        assert_eq!(
            read_message(raw[0], 2).unwrap().too_deep.as_deref(),
            Some("data")
        );
        let body = r#"{"channel":"/a","ext":{"a":[[]]},"data":[[]]}"#;
        let raw = split_batch(body.as_bytes()).unwrap();
        let message = read_message(raw[0], 2).unwrap();
        assert_eq!(message.too_deep.as_deref(), Some("ext"));
        assert_eq!(as_str(message.channel.unwrap()).unwrap(), "/a");
    }
}
