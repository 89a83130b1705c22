//! A message as subscribers receive it: serialised once, then shared by every queue it lands
//! in, so a fan-out to many sessions copies a pointer per session, never the bytes.

use std::sync::Arc;

use crate::json::ObjectWriter;

/// A serialised message, shared by every queue it is delivered to.
pub type Shared = Arc<[u8]>;

/// Serialises a delivered message: `channel` and the publisher's `data` as it was sent.
pub fn delivered_message(channel: &str, data: &[u8]) -> Shared {
    let mut bytes = Vec::with_capacity(channel.len() + data.len() + 32);
    let mut message = ObjectWriter::new(&mut bytes);
    message.string("channel", channel).raw("data", data);
    message.finish();
    Arc::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_channel_and_data_in_order() {
        let message = delivered_message("/a/b", br#"{"x":[1]}"#);
        assert_eq!(&*message, br#"{"channel":"/a/b","data":{"x":[1]}}"#);
    }
}
