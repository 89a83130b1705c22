//! `/meta/connect`: answered at once or held until messages arrive, and the replies that
//! carry a session's messages (with ack batch ids when the client negotiated them).

use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::ext::{AckField, AckReply, ExtRequest, ReplyExt};
use super::replies::{self, NO_RECONNECT_ADVICE};
use super::{Failure, Request};
use crate::client_id::Id;
use crate::engine::{Engine, HoldEnd};
use crate::errors::bayeux;
use crate::json::{self, Body, Message};
use crate::timesync::Timesync;

/// A `/meta/connect` the transport must hold until messages arrive, it is released, or
/// `timeout` passes; then `complete_connect` builds its reply.
#[derive(Debug, Clone)]
pub struct Hold {
    pub client_id: Id,
    pub token: u64,
    pub timeout: Duration,
    /// Whether it counts against its browser's limit of held long-polls (HTTP/1.x).
    pub counted: bool,
    id: Option<Box<RawValue>>,
    timesync: Option<Timesync>,
}

impl<E: Engine + ?Sized> Request<'_, E> {
    pub(super) fn connect(
        &mut self,
        message: &Message<'_>,
        ext: &ExtRequest,
    ) -> Result<(), Failure> {
        let (key, client_id) = self.session(message)?;
        let wait = self.connect_wait(message)?;
        // A connect over WebSocket binds the session to that socket (taking it from another
        // one, when its owner came back on a new socket); one over HTTP unbinds it (the client
        // fell back, or its socket is gone).
        let socket = self.caller.socket();
        let effects = &mut self.outcome.effects;
        self.engine.set_bound(key, socket, effects);
        // A connect held earlier for this session is released, whatever happens to this one.
        self.engine.release_held(key, effects);
        if let Some(AckField::Batch(batch)) = ext.ack {
            self.engine.acknowledge(key, batch);
        }
        // The first connect is answered at once: clients such as aiocometd wait for it.
        let first = self.engine.first_connect(key);
        let can_hold = !first && self.alone && !wait.is_zero() && !self.engine.has_pending(key);
        // Over HTTP/1.x each held long-poll ties up one of the browser's few connections.
        let counted = socket.is_none() && !self.multiplexed;
        let config = self.engine.config();
        let mut advice = replies::advice(config);
        if can_hold && counted && self.engine.browser_at_limit(key) {
            advice = replies::multiple_clients_advice(self.engine.config());
        } else if can_hold {
            let token = self.engine.hold(key, counted, &mut self.outcome.effects);
            self.outcome.hold = Some(Hold {
                client_id,
                token,
                timeout: wait,
                counted,
                id: message.id.map(|id| id.to_owned()),
                timesync: self.timesync,
            });
            return Ok(());
        }
        let batch = self.engine.drain_for_connect(key, &mut self.out);
        self.engine.touch(key, self.now);
        let ext = ReplyExt {
            ack: batch.map(AckReply::Batch),
            timesync: self.timesync,
            replay: false,
        };
        replies::connect_reply(&mut self.out, &client_id, message.id, &advice, &ext);
        Ok(())
    }

    /// How long the connect may be held: the client's `advice.timeout`, at most the server's.
    /// Also refuses a `connectionType` the server does not offer.
    fn connect_wait(&self, message: &Message<'_>) -> Result<Duration, Failure> {
        let config = self.engine.config();
        if let Some(raw) = message.connection_type {
            let kind =
                json::as_str(raw).ok_or_else(|| bayeux::field("invalid_type", "connectionType"))?;
            if !config.offers(&kind) {
                return Err(bayeux::CONNECTION_TYPE_UNSUPPORTED.into());
            }
        }
        let requested = match message.advice {
            Some(raw) => {
                json::advice_timeout(raw).map_err(|_| bayeux::field("invalid_type", "advice"))?
            }
            None => None,
        };
        let server = config.timeout;
        Ok(requested.map_or(server, |ms| Duration::from_millis(ms).min(server)))
    }
}

/// Builds the reply to a held connect once it ends. `drain` is false when the connect was
/// released (replaced by a newer one, or the server is stopping): its messages stay queued for
/// the next connect.
pub fn complete_connect<E: Engine + ?Sized>(
    engine: &mut E,
    hold: &Hold,
    drain: bool,
    now: Instant,
) -> Vec<u8> {
    complete_connect_with(engine, hold, drain, false, now)
}

/// As `complete_connect`; with `multiple_clients`, the reply tells the client that its browser
/// has a long-poll held elsewhere (on another process of a cluster), as a connect refused
/// under the limit is told at once.
pub fn complete_connect_with<E: Engine + ?Sized>(
    engine: &mut E,
    hold: &Hold,
    drain: bool,
    multiple_clients: bool,
    now: Instant,
) -> Vec<u8> {
    let mut out = Body::new();
    let id = hold.id.as_deref();
    let mut ext = ReplyExt {
        ack: None,
        timesync: hold.timesync,
        replay: false,
    };
    match engine.end_hold(&hold.client_id, hold.token, now) {
        None => match engine.take_ended_hold(hold.token) {
            // The client disconnected: a clean end, not an error it should react to.
            Some(HoldEnd::Disconnected) => {
                replies::connect_reply(&mut out, &hold.client_id, id, NO_RECONNECT_ADVICE, &ext);
            }
            // Another process serves the session now: the next connect finds it there.
            Some(HoldEnd::Moved) => {
                let advice = replies::advice(engine.config());
                replies::connect_reply(&mut out, &hold.client_id, id, &advice, &ext);
            }
            None => replies::unknown_session(&mut out, "/meta/connect", id, None),
        },
        Some((key, current)) => {
            ext.ack = if drain && current {
                engine.drain_for_connect(key, &mut out)
            } else {
                engine.ack_batch(key)
            }
            .map(AckReply::Batch);
            let advice = if multiple_clients {
                replies::multiple_clients_advice(engine.config())
            } else {
                replies::advice(engine.config())
            };
            replies::connect_reply(&mut out, &hold.client_id, id, &advice, &ext);
        }
    }
    out.finish()
}

#[cfg(test)]
#[path = "connect_tests.rs"]
mod tests;
