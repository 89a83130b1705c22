//! The server sides of the clients' ack and timesync extensions, built into the core so that
//! they cost nothing per message when unused.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json::ObjectWriter;
use crate::session::Shared;

/// What a message's `ext` asks of the built-in extensions.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExtRequest {
    /// `ext.ack`: `true` on a handshake, the last batch received on a connect.
    pub ack: Option<AckField>,
    pub timesync: Option<TimesyncRequest>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AckField {
    Enabled(bool),
    Batch(u64),
}

/// `ext.timesync` from a client: its clock (`tc`), lag (`l`) and offset (`o`), in ms.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct TimesyncRequest {
    tc: f64,
    #[serde(default)]
    l: f64,
    #[serde(default)]
    o: f64,
}

/// Reads `ext`; anything malformed is ignored, as extensions are optional.
pub fn read_ext(raw: Option<&RawValue>) -> ExtRequest {
    #[derive(Deserialize)]
    struct Ext {
        ack: Option<serde_json::Value>,
        timesync: Option<TimesyncRequest>,
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
        timesync: ext.timesync.filter(|t| t.tc.is_finite()),
    }
}

/// The timesync answer: the client's `tc`, the server's time on receipt (`ts`), the time the
/// server kept the message (`p`), and how far the client's estimate was off (`a`).
#[derive(Debug, Clone, Copy)]
pub struct Timesync {
    request: TimesyncRequest,
    received_ms: f64,
}

impl Timesync {
    pub fn received(request: TimesyncRequest) -> Self {
        Self {
            request,
            received_ms: unix_millis(),
        }
    }

    pub fn write(&self, ext: &mut ObjectWriter<'_>) {
        let ts = self.received_ms.round();
        let p = (unix_millis() - self.received_ms).max(0.0).round();
        let a = (self.request.tc + self.request.o + self.request.l - ts).round();
        let mut bytes = Vec::with_capacity(64);
        ObjectWriter::new(&mut bytes)
            .float("tc", self.request.tc)
            .float("ts", ts)
            .float("p", p)
            .float("a", a)
            .finish();
        ext.raw("timesync", &bytes);
    }
}

fn unix_millis() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// A session's unacknowledged messages: every connect reply carries a batch id; the client
/// acknowledges the last batch it received on its next connect, and whatever it has not
/// acknowledged is sent again, so a dropped reply loses nothing and nothing arrives twice.
#[derive(Debug, Default)]
pub struct AckState {
    batch: u64,
    unacked: VecDeque<Shared>,
    /// The batch the unacknowledged messages were last sent in.
    sent_in: u64,
}

impl AckState {
    /// The client received every batch up to `batch`.
    pub fn acknowledge(&mut self, batch: u64) {
        if batch >= self.sent_in {
            self.unacked.clear();
        }
    }

    pub fn has_unacked(&self) -> bool {
        !self.unacked.is_empty()
    }

    /// Starts the next batch: the unacknowledged messages (sent again) and then `fresh`, in
    /// order. Returns the batch id and the messages to send. `capacity` bounds what is kept.
    pub fn next_batch(
        &mut self,
        fresh: impl Iterator<Item = Shared>,
        capacity: usize,
    ) -> (u64, Vec<Shared>, u64) {
        self.unacked.extend(fresh);
        let mut dropped = 0;
        while self.unacked.len() > capacity.max(1) {
            self.unacked.pop_front();
            dropped += 1;
        }
        if !self.unacked.is_empty() {
            self.batch += 1;
            self.sent_in = self.batch;
        }
        (self.batch, self.unacked.iter().cloned().collect(), dropped)
    }

    pub fn batch(&self) -> u64 {
        self.batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn msg(n: u8) -> Shared {
        Arc::from(vec![n])
    }

    #[test]
    fn unacknowledged_messages_are_sent_again_once_then_dropped_when_acknowledged() {
        let mut ack = AckState::default();
        let (b1, sent, _) = ack.next_batch([msg(1), msg(2)].into_iter(), 10);
        assert_eq!((b1, sent.len()), (1, 2));
        // The reply was lost: the client acknowledges only batch 0.
        ack.acknowledge(0);
        let (b2, sent, _) = ack.next_batch([msg(3)].into_iter(), 10);
        assert_eq!(b2, 2);
        assert_eq!(sent.iter().map(|m| m[0]).collect::<Vec<_>>(), vec![1, 2, 3]);
        ack.acknowledge(2);
        assert!(!ack.has_unacked());
        let (b3, sent, _) = ack.next_batch(std::iter::empty(), 10);
        assert_eq!(
            (b3, sent.len()),
            (2, 0),
            "an empty reply keeps the batch id"
        );
    }

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
