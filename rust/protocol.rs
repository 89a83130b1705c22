//! One request batch in, replies and effects out: handshake, connect, subscribe, unsubscribe,
//! disconnect and publish, as Bayeux 1.0 and CometD's clients expect them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use crate::channel::{self, ChannelKind};
use crate::client_id::Id;
use crate::engine::{Effects, Engine, Event, RemoveReason};
use crate::errors::bayeux;
use crate::json::{self, Body, FieldError, Message, ObjectWriter};
use crate::session::Shared;
use crate::subscriptions::SessionKey;

/// A `/meta/connect` the transport must hold until messages arrive, it is released, or
/// `timeout` passes; then `complete_connect` builds its reply.
#[derive(Debug, Clone)]
pub struct Hold {
    pub client_id: Id,
    pub token: u64,
    pub timeout: Duration,
    id: Option<Box<RawValue>>,
}

/// The result of one request.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The HTTP status: 200, or 400 when the body is not a Bayeux batch at all.
    pub status: u16,
    /// The reply body; empty when `hold` is set.
    pub body: Vec<u8>,
    pub hold: Option<Hold>,
    pub effects: Effects,
    /// A new `BAYEUX_BROWSER` cookie value to set.
    pub new_browser: Option<Id>,
}

const HANDSHAKE_ADVICE: &[u8] = br#"{"reconnect":"handshake","interval":0}"#;
const NO_RECONNECT_ADVICE: &[u8] = br#"{"reconnect":"none","interval":0}"#;

/// How a request arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    LongPolling,
    CallbackPolling,
    WebSocket,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::LongPolling => "long-polling",
            Transport::CallbackPolling => "callback-polling",
            Transport::WebSocket => "websocket",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "long-polling" => Some(Transport::LongPolling),
            "callback-polling" => Some(Transport::CallbackPolling),
            "websocket" => Some(Transport::WebSocket),
            _ => None,
        }
    }
}

/// Processes one request body that arrived over `transport` from a client whose cookie
/// carried `browser`.
pub fn process(
    engine: &mut Engine,
    body: &[u8],
    browser: Option<Id>,
    transport: Transport,
    now: Instant,
) -> Outcome {
    let mut outcome = Outcome {
        status: 200,
        ..Outcome::default()
    };
    let messages = match json::split_batch(body) {
        Ok(messages) if !messages.is_empty() => messages,
        // Nothing asked, nothing answered (Faye sends `[]` before a large publish).
        Ok(_) => {
            outcome.body = b"[]".to_vec();
            return outcome;
        }
        Err(e) => return bad_request(outcome, "400::json_malformed", &e.to_string()),
    };
    let mut request = Request {
        engine,
        browser,
        transport,
        now,
        alone: messages.len() == 1,
        out: Body::new(),
        outcome: &mut outcome,
    };
    for raw in messages {
        request.handle(raw);
    }
    let Request { out, .. } = request;
    if outcome.hold.is_none() {
        outcome.body = out.finish();
    }
    outcome
}

/// The whole body is unusable: answer 400 with one unsuccessful message naming the problem.
fn bad_request(mut outcome: Outcome, error: &str, detail: &str) -> Outcome {
    let mut out = Body::new();
    out.object()
        .bool("successful", false)
        .string("error", error)
        .string("detail", detail)
        .finish();
    outcome.status = 400;
    outcome.body = out.finish();
    outcome
}

/// Builds the reply to a held connect once it ends. `drain` is false when the connect was
/// released (replaced by a newer one, or the server is stopping): its messages stay queued for
/// the next connect.
pub fn complete_connect(engine: &mut Engine, hold: &Hold, drain: bool, now: Instant) -> Vec<u8> {
    let mut out = Body::new();
    let id = hold.id.as_deref();
    match engine.end_hold(&hold.client_id, hold.token, now) {
        // The client disconnected: a clean end, not an error it should react to.
        None if engine.take_disconnected_hold(hold.token) => {
            let mut reply = out.object();
            reply
                .string("channel", "/meta/connect")
                .bool("successful", true)
                .raw("clientId", &quoted(&hold.client_id))
                .raw("advice", NO_RECONNECT_ADVICE);
            if let Some(id) = id {
                reply.raw("id", id.get().as_bytes());
            }
            reply.finish();
        }
        None => unknown_session(&mut out, "/meta/connect", id),
        Some((key, current)) => {
            if drain && current {
                for message in engine.session_mut(key).drain() {
                    out.push(&message);
                }
            }
            connect_reply(engine, &mut out, &hold.client_id, id);
        }
    }
    out.finish()
}

struct Request<'r> {
    engine: &'r mut Engine,
    browser: Option<Id>,
    transport: Transport,
    now: Instant,
    /// A connect may be held only when it is the request's only message.
    alone: bool,
    out: Body,
    outcome: &'r mut Outcome,
}

/// A reply failed with this error string.
type Failure = std::borrow::Cow<'static, str>;

impl Request<'_> {
    fn handle(&mut self, raw: &RawValue) {
        let message = match json::read_message(raw) {
            Ok(message) => message,
            Err(FieldError::NotAnObject) => {
                return self.fail(None, None, bayeux::MESSAGE_NOT_OBJECT)
            }
            Err(FieldError::Malformed) => return self.fail(None, None, bayeux::MESSAGE_MALFORMED),
            Err(FieldError::Unknown(name)) => {
                return self.fail(None, None, &bayeux::field("unknown_field", &name))
            }
        };
        let id = message.id;
        if id.is_some_and(|id| !json::valid_id(id)) {
            return self.fail(None, None, &bayeux::field("invalid_type", "id"));
        }
        let Some(channel) = message.channel else {
            return self.fail(None, id, bayeux::CHANNEL_MISSING);
        };
        let Some(channel) = json::as_str(channel) else {
            return self.fail(None, id, &bayeux::field("invalid_type", "channel"));
        };
        // A transport the server does not offer: every message is refused, with the advice
        // not to retry, so that the client moves to another transport or stops.
        let offered = &self.engine.config.connection_types;
        if !offered.iter().any(|t| t == self.transport.name()) {
            return self.fail(Some(&channel), id, bayeux::CONNECTION_TYPE_UNSUPPORTED);
        }
        let result = match &*channel {
            "/meta/handshake" => self.handshake(&message),
            "/meta/connect" => self.connect(&message),
            "/meta/subscribe" => self.subscribe(&message, true),
            "/meta/unsubscribe" => self.subscribe(&message, false),
            "/meta/disconnect" => self.disconnect(&message),
            other => self.publish(other, &message),
        };
        if let Err(error) = result {
            self.fail(Some(&channel), id, &error);
        }
    }

    /// Appends an unsuccessful reply; a 402 carries the advice to handshake again.
    fn fail(&mut self, channel: Option<&str>, id: Option<&RawValue>, error: &str) {
        if error == bayeux::SESSION_UNKNOWN {
            return unknown_session(&mut self.out, channel.unwrap_or_default(), id);
        }
        let mut reply = self.out.object();
        if let Some(channel) = channel {
            reply.string("channel", channel);
        }
        reply.bool("successful", false).string("error", error);
        if error == bayeux::CONNECTION_TYPE_UNSUPPORTED {
            reply.raw("advice", NO_RECONNECT_ADVICE);
        }
        if let Some(id) = id {
            reply.raw("id", id.get().as_bytes());
        }
        reply.finish();
    }

    /// The session a message names, if it exists and the request carries its cookie.
    fn session(&self, message: &Message<'_>) -> Result<(SessionKey, Id), Failure> {
        let raw = message.client_id.ok_or(bayeux::CLIENT_ID_MISSING)?;
        let text = json::as_str(raw).ok_or_else(|| bayeux::field("invalid_type", "clientId"))?;
        let id = Id::parse(&text).ok_or(bayeux::SESSION_UNKNOWN)?;
        // The cookie guards HTTP requests only: a WebSocket session is bound to its socket,
        // and not every WebSocket client sends cookies with its upgrade.
        let check_browser = self.transport != Transport::WebSocket;
        let key = self
            .engine
            .lookup(&id, self.browser.as_ref(), check_browser)
            .map_err(|_| bayeux::SESSION_UNKNOWN)?;
        Ok((key, id))
    }

    fn handshake(&mut self, message: &Message<'_>) -> Result<(), Failure> {
        if let Some(raw) = message.supported_connection_types {
            let offered = json::as_str_list(raw)
                .ok_or_else(|| bayeux::field("invalid_type", "supportedConnectionTypes"))?;
            let supported = &self.engine.config.connection_types;
            if !offered.iter().any(|t| supported.iter().any(|s| s == t)) {
                return Err(bayeux::CONNECTION_TYPE_UNSUPPORTED.into());
            }
        }
        let browser = match self.browser {
            Some(browser) => browser,
            None => {
                let fresh = Id::generate();
                self.browser = Some(fresh);
                // A WebSocket frame cannot set a cookie.
                if self.transport != Transport::WebSocket {
                    self.outcome.new_browser = Some(fresh);
                }
                fresh
            }
        };
        let client_id = self.engine.create_session(browser, self.now);
        if self.transport == Transport::WebSocket {
            let key = self
                .engine
                .key_of(&client_id)
                .expect("the session just made");
            self.engine.set_bound(key, true, &mut self.outcome.effects);
        }
        self.outcome
            .effects
            .events
            .push(Event::SessionAdded(client_id));
        let advice = advice(self.engine);
        let mut reply = self.out.object();
        reply
            .string("channel", "/meta/handshake")
            .bool("successful", true)
            .raw("clientId", &quoted(&client_id))
            .string("version", "1.0")
            .string("minimumVersion", "1.0")
            .raw("supportedConnectionTypes", &connection_types(self.engine))
            .raw("advice", &advice);
        if let Some(id) = message.id {
            reply.raw("id", id.get().as_bytes());
        }
        reply.finish();
        Ok(())
    }

    fn connect(&mut self, message: &Message<'_>) -> Result<(), Failure> {
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
        let session = self.engine.session_mut(key);
        // The first connect is answered at once: clients such as aiocometd wait for it.
        let first = !session.connected;
        session.connected = true;
        let can_hold = !first && self.alone && !wait.is_zero() && !session.has_messages();
        if can_hold {
            let token = self.engine.hold(key, &mut self.outcome.effects);
            self.outcome.hold = Some(Hold {
                client_id,
                token,
                timeout: wait,
                id: message.id.map(|id| id.to_owned()),
            });
            return Ok(());
        }
        // Answered now: a connect held earlier for this session is released.
        self.engine.release_held(key, &mut self.outcome.effects);
        for queued in self.engine.session_mut(key).drain() {
            self.out.push(&queued);
        }
        self.engine.touch(key, self.now);
        connect_reply(self.engine, &mut self.out, &client_id, message.id);
        Ok(())
    }

    fn subscribe(&mut self, message: &Message<'_>, subscribe: bool) -> Result<(), Failure> {
        let (key, client_id) = self.session(message)?;
        let raw = message.subscription.ok_or(bayeux::SUBSCRIPTION_MISSING)?;
        let names = json::as_str_list(raw)
            .filter(|names| !names.is_empty())
            .ok_or(bayeux::SUBSCRIPTION_INVALID)?;
        // All or nothing: every name is checked before any is applied.
        for name in &names {
            match channel::classify(name) {
                None => return Err(bayeux::SUBSCRIPTION_INVALID.into()),
                Some(ChannelKind::Meta) => return Err(bayeux::SUBSCRIBE_DENIED.into()),
                Some(_) => {}
            }
        }
        for name in &names {
            // Service channels are never broadcast: subscribing is a successful no-op.
            if channel::classify(name) == Some(ChannelKind::Service) {
                continue;
            }
            if subscribe {
                self.engine.subscribe(key, name);
            } else {
                self.engine.unsubscribe(key, name);
            }
        }
        let channels = names.iter().map(|n| n.to_string()).collect();
        self.outcome.effects.events.push(if subscribe {
            Event::Subscribed(client_id, channels)
        } else {
            Event::Unsubscribed(client_id, channels)
        });
        let meta = if subscribe {
            "/meta/subscribe"
        } else {
            "/meta/unsubscribe"
        };
        let mut reply = self.out.object();
        reply
            .string("channel", meta)
            .bool("successful", true)
            .raw("clientId", &quoted(&client_id))
            .raw("subscription", raw.get().as_bytes());
        if let Some(id) = message.id {
            reply.raw("id", id.get().as_bytes());
        }
        reply.finish();
        Ok(())
    }

    fn disconnect(&mut self, message: &Message<'_>) -> Result<(), Failure> {
        let (key, client_id) = self.session(message)?;
        self.engine
            .remove(key, RemoveReason::Disconnected, &mut self.outcome.effects);
        let mut reply = self.out.object();
        reply
            .string("channel", "/meta/disconnect")
            .bool("successful", true)
            .raw("clientId", &quoted(&client_id));
        if let Some(id) = message.id {
            reply.raw("id", id.get().as_bytes());
        }
        reply.finish();
        Ok(())
    }

    fn publish(&mut self, name: &str, message: &Message<'_>) -> Result<(), Failure> {
        let kind = match channel::classify(name) {
            None | Some(ChannelKind::Wildcard) => return Err(bayeux::CHANNEL_INVALID.into()),
            Some(ChannelKind::Meta) => return Err(bayeux::CHANNEL_UNKNOWN.into()),
            Some(kind) => kind,
        };
        self.session(message)?;
        let data = message.data.ok_or(bayeux::DATA_MISSING)?;
        if kind == ChannelKind::Broadcast {
            let delivered = delivered_message(name, data.get().as_bytes(), message.id);
            self.engine
                .publish(name, delivered, &mut self.outcome.effects);
        }
        let mut reply = self.out.object();
        reply.string("channel", name).bool("successful", true);
        if let Some(id) = message.id {
            reply.raw("id", id.get().as_bytes());
        }
        reply.finish();
        Ok(())
    }
}

/// Every message queued for a session, as one JSON array, for a transport that pushes (a
/// WebSocket); `None` when there is nothing to send.
pub fn drain_queue(engine: &mut Engine, id: &Id) -> Option<Vec<u8>> {
    let key = engine.key_of(id)?;
    let session = engine.session_mut(key);
    session.woken = false;
    if !session.has_messages() {
        return None;
    }
    let mut out = Body::new();
    for message in session.drain() {
        out.push(&message);
    }
    Some(out.finish())
}

/// A message as subscribers receive it, serialised once and shared by every queue.
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

fn connect_reply(engine: &Engine, out: &mut Body, client_id: &Id, id: Option<&RawValue>) {
    let advice = advice(engine);
    let mut reply = out.object();
    reply
        .string("channel", "/meta/connect")
        .bool("successful", true)
        .raw("clientId", &quoted(client_id))
        .raw("advice", &advice);
    if let Some(id) = id {
        reply.raw("id", id.get().as_bytes());
    }
    reply.finish();
}

fn unknown_session(out: &mut Body, channel: &str, id: Option<&RawValue>) {
    let mut reply = out.object();
    if !channel.is_empty() {
        reply.string("channel", channel);
    }
    reply
        .bool("successful", false)
        .string("error", bayeux::SESSION_UNKNOWN)
        .raw("advice", HANDSHAKE_ADVICE);
    if let Some(id) = id {
        reply.raw("id", id.get().as_bytes());
    }
    reply.finish();
}

fn advice(engine: &Engine) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    ObjectWriter::new(&mut bytes)
        .string("reconnect", "retry")
        .number("interval", engine.config.interval.as_millis() as u64)
        .number("timeout", engine.config.timeout.as_millis() as u64)
        .finish();
    bytes
}

fn connection_types(engine: &Engine) -> Vec<u8> {
    serde_json::to_vec(&engine.config.connection_types).unwrap_or_else(|_| b"[]".to_vec())
}

fn quoted(id: &Id) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(42);
    bytes.push(b'"');
    id.write_hex(&mut bytes);
    bytes.push(b'"');
    bytes
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
