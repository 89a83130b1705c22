//! A message's `ext` field: what it asks of the built-in extensions (ack, timesync), and what
//! a reply's `ext` carries back.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json::{object_members, Members, ObjectWriter};
use crate::timesync::{Timesync, TimesyncRequest};

/// What a message's `ext` asks of the built-in extensions.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExtRequest {
    /// `ext.ack`: `true` on a handshake, the last batch received on a connect.
    pub ack: Option<AckField>,
    pub timesync: Option<TimesyncRequest>,
    /// `ext.replay: true` on a handshake: the client speaks the replay extension.
    pub replay: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AckField {
    Enabled(bool),
    Batch(u64),
}

/// Reads `ext`; anything malformed is ignored, as extensions are optional.
pub fn read_ext(raw: Option<&RawValue>) -> ExtRequest {
    #[derive(Deserialize)]
    struct Ext {
        ack: Option<serde_json::Value>,
        timesync: Option<TimesyncRequest>,
        replay: Option<serde_json::Value>,
    }
    let Some(ext) = raw.and_then(|raw| serde_json::from_str::<Ext>(raw.get()).ok()) else {
        return ExtRequest::default();
    };
    let ack = match ext.ack {
        Some(serde_json::Value::Bool(b)) => Some(AckField::Enabled(b)),
        Some(serde_json::Value::Number(n)) => n.as_u64().map(AckField::Batch),
        _ => None,
    };
    ExtRequest {
        ack,
        timesync: ext.timesync.filter(TimesyncRequest::is_valid),
        replay: ext.replay == Some(serde_json::Value::Bool(true)),
    }
}

/// A subscribe's `ext.replay`: per channel, the id after which it asks for the messages it
/// missed, as sent (`None` without one, or when `ext` is not an object, as for any extension).
/// A `replay` that is not an object (nor null) is `Err`.
pub fn replay_map(raw: Option<&RawValue>) -> Result<Option<Members<'_>>, ()> {
    let Some(members) = raw.and_then(|raw| object_members(raw.get())) else {
        return Ok(None);
    };
    let Some((_, replay)) = members.into_iter().find(|(key, _)| key == "replay") else {
        return Ok(None);
    };
    if replay.get() == "null" {
        return Ok(None);
    }
    object_members(replay.get()).map(Some).ok_or(())
}

/// What the built-in extensions add to a reply's `ext`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplyExt {
    pub ack: Option<AckReply>,
    pub timesync: Option<Timesync>,
    /// On a handshake: the server speaks the replay extension.
    pub replay: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum AckReply {
    /// On a handshake: the server offers the ack extension.
    Enabled,
    /// On a connect: the batch the reply's messages belong to.
    Batch(u64),
}

impl ReplyExt {
    pub fn write(&self, reply: &mut ObjectWriter<'_>) {
        if self.ack.is_none() && self.timesync.is_none() && !self.replay {
            return;
        }
        let mut bytes = Vec::with_capacity(96);
        let mut ext = ObjectWriter::new(&mut bytes);
        match self.ack {
            Some(AckReply::Enabled) => {
                ext.bool("ack", true);
            }
            Some(AckReply::Batch(batch)) => {
                ext.number("ack", batch);
            }
            None => {}
        }
        if let Some(timesync) = &self.timesync {
            timesync.write(&mut ext);
        }
        if self.replay {
            ext.bool("replay", true);
        }
        ext.finish();
        reply.raw("ext", &bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ext_fields_leniently() {
        let raw: Box<RawValue> =
            serde_json::from_str(r#"{"ack":7,"timesync":{"tc":1700000000000,"l":3,"o":-2}}"#)
                .unwrap();
        let ext = read_ext(Some(&raw));
        assert_eq!(ext.ack, Some(AckField::Batch(7)));
        assert!(ext.timesync.is_some());
        let raw: Box<RawValue> = serde_json::from_str(r#"{"ack":"x","timesync":5}"#).unwrap();
        let ext = read_ext(Some(&raw));
        assert!(ext.ack.is_none() && ext.timesync.is_none());
    }
}
