//! A message as subscribers receive it: serialised once, then shared by every queue it lands
//! in, so a fan-out to many sessions copies a pointer per session, never the bytes.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::json::ObjectWriter;

/// A serialised message, shared by every queue it is delivered to.
pub type Shared = Arc<[u8]>;

/// Serialises a delivered message: `channel`, the publisher's `data` as it was sent, and its
/// `id` if it had one.
pub fn delivered_message(channel: &str, data: &[u8], id: Option<&RawValue>) -> Shared {
    let mut bytes = Vec::with_capacity(channel.len() + data.len() + 32);
    let mut message = ObjectWriter::new(&mut bytes);
    message.string("channel", channel).raw("data", data);
    if let Some(id) = id {
        message.raw("id", id.get().as_bytes());
    }
    message.finish();
    Arc::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_channel_data_and_id_in_order() {
        let id: Box<RawValue> = serde_json::from_str(r#""m1""#).unwrap();
        let message = delivered_message("/a/b", br#"{"x":[1]}"#, Some(&id));
        assert_eq!(
            &*message,
            br#"{"channel":"/a/b","data":{"x":[1]},"id":"m1"}"#
        );
        let message = delivered_message("/a", b"1", None);
        assert_eq!(&*message, br#"{"channel":"/a","data":1}"#);
    }
}
