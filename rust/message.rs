//! A message as subscribers receive it: serialised once, then shared by every queue it lands
//! in, so a fan-out to many sessions copies a pointer per session, never the bytes.

use std::sync::Arc;

use crate::json::{object_members, write_string, ObjectWriter};

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

/// A delivered message of a channel with a history: as `delivered_message`, with its id and
/// creation date in `data.event.replayId` and `data.event.createdDate`, where Salesforce's
/// clients read them (any members of those names the publisher set give way). Data that is not
/// an object, or whose `event` is not one, goes as it was sent, without them. `id` is written
/// as it is (a number, or `history::RELAYED_ID`), last of all, so the message ends with it.
pub fn delivered_with_event(channel: &str, data: &str, id: &str, created: &str) -> Shared {
    let Some(members) = object_members(data) else {
        return delivered_message(channel, data.as_bytes());
    };
    let event = members
        .iter()
        .find(|(key, _)| key == "event")
        .map(|(_, v)| *v);
    let event_members = match event {
        None => Vec::new(),
        Some(raw) => match object_members(raw.get()) {
            Some(members) => members,
            None => return delivered_message(channel, data.as_bytes()),
        },
    };
    let mut event_bytes = Vec::with_capacity(96);
    event_bytes.push(b'{');
    for (key, value) in &event_members {
        if key != "replayId" && key != "createdDate" {
            write_member(&mut event_bytes, key, value.get().as_bytes());
        }
    }
    let mut created_json = Vec::with_capacity(32);
    write_string(&mut created_json, created);
    write_member(&mut event_bytes, "createdDate", &created_json);
    write_member(&mut event_bytes, "replayId", id.as_bytes());
    event_bytes.push(b'}');
    let mut data_bytes = Vec::with_capacity(data.len() + event_bytes.len() + 16);
    data_bytes.push(b'{');
    for (key, value) in &members {
        if key != "event" {
            write_member(&mut data_bytes, key, value.get().as_bytes());
        }
    }
    write_member(&mut data_bytes, "event", &event_bytes);
    data_bytes.push(b'}');
    delivered_message(channel, &data_bytes)
}

/// Appends `"key":value` to an object being written (after a comma unless it is the first).
fn write_member(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    write_string(out, key);
    out.push(b':');
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_message_carries_its_id_and_date_in_data_event() {
        let date = "2026-11-30T10:00:00.000Z";
        let message = delivered_with_event(
            "/a",
            r#"{"x":1,"event":{"type":"t","replayId":5}}"#,
            "9",
            date,
        );
        let expected = r#"{"channel":"/a","data":{"x":1,"event":{"type":"t","createdDate":"2026-11-30T10:00:00.000Z","replayId":9}}}"#;
        assert_eq!(std::str::from_utf8(&message).unwrap(), expected);
        let bare = delivered_with_event("/a", "{}", "9", date);
        let expected = r#"{"channel":"/a","data":{"event":{"createdDate":"2026-11-30T10:00:00.000Z","replayId":9}}}"#;
        assert_eq!(std::str::from_utf8(&bare).unwrap(), expected);
        let escaped = delivered_with_event("/a", r#"{"a\"b":"c"}"#, "9", date);
        let value: serde_json::Value = serde_json::from_slice(&escaped).unwrap();
        assert_eq!(value["data"]["a\"b"], "c");
        for other in ["[1]", "\"s\"", "3", "null", r#"{"event":[1]}"#] {
            let message = delivered_with_event("/a", other, "9", date);
            assert_eq!(
                *message,
                *delivered_message("/a", other.as_bytes()),
                "{other}"
            );
        }
    }

    #[test]
    fn writes_channel_and_data_in_order() {
        let message = delivered_message("/a/b", br#"{"x":[1]}"#);
        assert_eq!(&*message, br#"{"channel":"/a/b","data":{"x":[1]}}"#);
    }
}
