//! `/meta/connect`: answered at once or held until messages arrive, and the replies that
//! carry a session's messages (with ack batch ids when the client negotiated them).

use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::ext::{AckField, AckReply, ExtRequest, ReplyExt};
use super::replies::{self, NO_RECONNECT_ADVICE};
use super::{Failure, Request, Transport};
use crate::client_id::Id;
use crate::engine::Engine;
use crate::errors::bayeux;
use crate::json::{self, Body, Message};
use crate::subscriptions::SessionKey;
use crate::timesync::Timesync;

/// A `/meta/connect` the transport must hold until messages arrive, it is released, or
/// `timeout` passes; then `complete_connect` builds its reply.
#[derive(Debug, Clone)]
pub struct Hold {
    pub client_id: Id,
    pub token: u64,
    pub timeout: Duration,
    id: Option<Box<RawValue>>,
    timesync: Option<Timesync>,
}

impl Request<'_> {
    pub(super) fn connect(
        &mut self,
        message: &Message<'_>,
        ext: &ExtRequest,
    ) -> Result<(), Failure> {
        let (key, client_id) = self.session(message)?;
        if let Some(raw) = message.connection_type {
            let kind =
                json::as_str(raw).ok_or_else(|| bayeux::field("invalid_type", "connectionType"))?;
            if !self
                .engine
                .config
                .connection_types
                .iter()
                .any(|t| *t == *kind)
            {
                return Err(bayeux::CONNECTION_TYPE_UNSUPPORTED.into());
            }
        }
        let requested = match message.advice {
            Some(raw) => {
                json::advice_timeout(raw).map_err(|_| bayeux::field("invalid_type", "advice"))?
            }
            None => None,
        };
        let server = self.engine.config.timeout;
        let wait = requested.map_or(server, |ms| Duration::from_millis(ms).min(server));
        // A connect over WebSocket binds the session to that socket; one over HTTP unbinds it
        // (the client fell back, or its socket is gone).
        let websocket = self.transport == Transport::WebSocket;
        self.engine
            .set_bound(key, websocket, &mut self.outcome.effects);
        // A connect held earlier for this session is released, whatever happens to this one.
        self.engine.release_held(key, &mut self.outcome.effects);
        let session = self.engine.session_mut(key);
        if let (Some(ack), Some(AckField::Batch(batch))) = (session.ack.as_mut(), ext.ack) {
            ack.acknowledge(batch);
        }
        // The first connect is answered at once: clients such as aiocometd wait for it.
        let first = !session.connected;
        session.connected = true;
        let browser = session.browser;
        let can_hold = !first && self.alone && !wait.is_zero() && !session.has_pending();
        // Over HTTP/1.x each held long-poll ties up one of the browser's few connections.
        let counted = !websocket && !self.multiplexed;
        let mut advice = replies::advice(self.engine);
        if can_hold && counted && self.engine.browser_at_limit(&browser) {
            advice = replies::multiple_clients_advice(self.engine);
        } else if can_hold {
            let token = self.engine.hold(key, counted, &mut self.outcome.effects);
            self.outcome.hold = Some(Hold {
                client_id,
                token,
                timeout: wait,
                id: message.id.map(|id| id.to_owned()),
                timesync: self.timesync,
            });
            return Ok(());
        }
        let batch = drain_for_connect(self.engine, key, &mut self.out);
        self.engine.touch(key, self.now);
        let ext = ReplyExt {
            ack: batch.map(AckReply::Batch),
            timesync: self.timesync,
        };
        replies::connect_reply(&mut self.out, &client_id, message.id, &advice, &ext);
        Ok(())
    }
}

/// Writes what a connect reply carries, in order; with the ack extension that is every
/// unacknowledged message and then the new ones, as one batch whose id is returned.
fn drain_for_connect(engine: &mut Engine, key: SessionKey, out: &mut Body) -> Option<u64> {
    let capacity = engine.config.queue_capacity;
    let session = engine.session_mut(key);
    let Some(mut ack) = session.ack.take() else {
        for message in session.drain() {
            out.push(&message);
        }
        return None;
    };
    let (batch, messages, dropped) = ack.next_batch(session.drain(), capacity);
    session.ack = Some(ack);
    for message in &messages {
        out.push(message);
    }
    engine.count_dropped(key, dropped);
    Some(batch)
}

/// Builds the reply to a held connect once it ends. `drain` is false when the connect was
/// released (replaced by a newer one, or the server is stopping): its messages stay queued for
/// the next connect.
pub fn complete_connect(engine: &mut Engine, hold: &Hold, drain: bool, now: Instant) -> Vec<u8> {
    let mut out = Body::new();
    let id = hold.id.as_deref();
    let mut ext = ReplyExt {
        ack: None,
        timesync: hold.timesync,
    };
    match engine.end_hold(&hold.client_id, hold.token, now) {
        // The client disconnected: a clean end, not an error it should react to.
        None if engine.take_disconnected_hold(hold.token) => {
            replies::connect_reply(&mut out, &hold.client_id, id, NO_RECONNECT_ADVICE, &ext);
        }
        None => replies::unknown_session(&mut out, "/meta/connect", id),
        Some((key, current)) => {
            ext.ack = if drain && current {
                drain_for_connect(engine, key, &mut out)
            } else {
                engine.session(key).ack.as_ref().map(|ack| ack.batch())
            }
            .map(AckReply::Batch);
            let advice = replies::advice(engine);
            replies::connect_reply(&mut out, &hold.client_id, id, &advice, &ext);
        }
    }
    out.finish()
}

/// Every message queued for a session, as one JSON array, for a transport that pushes (a
/// WebSocket); `None` when there is nothing to send.
pub fn drain_queue(engine: &mut Engine, id: &Id) -> Option<Vec<u8>> {
    let key = engine.key_of(id)?;
    let session = engine.session_mut(key);
    session.woken = false;
    if !session.has_messages() || session.connect_only {
        return None;
    }
    let mut out = Body::new();
    for message in session.drain() {
        out.push(&message);
    }
    Some(out.finish())
}

#[cfg(test)]
#[path = "connect_tests.rs"]
mod tests;
