//! One request batch in, replies and effects out: handshake, subscribe, unsubscribe,
//! disconnect and publish, as Bayeux 1.0 and CometD's clients expect them. `/meta/connect`
//! lives in `connect.rs`.

mod connect;
mod ext;
mod replies;

pub use connect::{complete_connect, drain_queue, Hold};

use std::time::Instant;

use serde_json::value::RawValue;

use crate::ack::AckState;
use crate::channel::{self, ChannelKind};
use crate::client_id::Id;
use crate::engine::{Effects, Engine, Event, RemoveReason};
use crate::errors::bayeux;
use crate::json::{self, Body, FieldError, Message, ObjectWriter};
use crate::message::delivered_message;
use crate::subscriptions::SessionKey;
use crate::timesync::Timesync;
use ext::{read_ext, AckField, AckReply, ExtRequest, ReplyExt};
use replies::NO_RECONNECT_ADVICE;

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

/// Where a request came from.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo {
    /// The `BAYEUX_BROWSER` cookie it carried.
    pub browser: Option<Id>,
    pub transport: Transport,
    /// HTTP/2 or later: held long-polls do not tie up one of the browser's connections.
    pub multiplexed: bool,
    /// Whether the request's messages stand alone (a connect may then be held); by default,
    /// whether the batch holds one message.
    pub alone: Option<bool>,
}

impl RequestInfo {
    pub fn new(browser: Option<Id>, transport: Transport) -> Self {
        Self {
            browser,
            transport,
            multiplexed: false,
            alone: None,
        }
    }
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

/// Processes one request body.
pub fn process(engine: &mut Engine, body: &[u8], info: RequestInfo, now: Instant) -> Outcome {
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
        browser: info.browser,
        transport: info.transport,
        multiplexed: info.multiplexed,
        now,
        alone: info.alone.unwrap_or(messages.len() == 1),
        timesync: None,
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

struct Request<'r> {
    engine: &'r mut Engine,
    browser: Option<Id>,
    transport: Transport,
    multiplexed: bool,
    now: Instant,
    /// A connect may be held only when it stands alone.
    alone: bool,
    /// The timesync answer for the message being handled, if it asked and it is enabled.
    timesync: Option<Timesync>,
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
        let ext = read_ext(message.ext);
        self.timesync = ext
            .timesync
            .filter(|_| self.engine.config.timesync && channel.starts_with("/meta/"))
            .map(Timesync::received);
        let result = match &*channel {
            "/meta/handshake" => self.handshake(&message, &ext),
            "/meta/connect" => self.connect(&message, &ext),
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
            return replies::unknown_session(&mut self.out, channel.unwrap_or_default(), id);
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

    /// Appends a successful reply to a meta message: channel, clientId, then `extra` fields.
    fn succeed(
        &mut self,
        channel: &str,
        client_id: &Id,
        id: Option<&RawValue>,
        ext: ReplyExt,
        extra: impl FnOnce(&mut ObjectWriter<'_>),
    ) {
        let mut reply = self.out.object();
        reply
            .string("channel", channel)
            .bool("successful", true)
            .raw("clientId", &replies::quoted(client_id));
        extra(&mut reply);
        ext.write(&mut reply);
        if let Some(id) = id {
            reply.raw("id", id.get().as_bytes());
        }
        reply.finish();
    }

    fn timesync_ext(&self) -> ReplyExt {
        ReplyExt {
            ack: None,
            timesync: self.timesync,
        }
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

    fn handshake(&mut self, message: &Message<'_>, ext: &ExtRequest) -> Result<(), Failure> {
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
        let key = self
            .engine
            .key_of(&client_id)
            .expect("the session just made");
        if self.transport == Transport::WebSocket {
            self.engine.set_bound(key, true, &mut self.outcome.effects);
        }
        let mut reply_ext = self.timesync_ext();
        if self.engine.config.ack_extension && ext.ack == Some(AckField::Enabled(true)) {
            // Acknowledged messages travel only in connect replies, which carry batch ids.
            let session = self.engine.session_mut(key);
            session.ack = Some(AckState::default());
            session.connect_only = true;
            reply_ext.ack = Some(AckReply::Enabled);
        }
        self.outcome
            .effects
            .events
            .push(Event::SessionAdded(client_id));
        let advice = replies::advice(self.engine);
        let types = replies::connection_types(self.engine);
        self.succeed(
            "/meta/handshake",
            &client_id,
            message.id,
            reply_ext,
            |reply| {
                reply
                    .string("version", "1.0")
                    .string("minimumVersion", "1.0")
                    .raw("supportedConnectionTypes", &types)
                    .raw("advice", &advice);
            },
        );
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
        let ext = self.timesync_ext();
        self.succeed(meta, &client_id, message.id, ext, |reply| {
            reply.raw("subscription", raw.get().as_bytes());
        });
        Ok(())
    }

    fn disconnect(&mut self, message: &Message<'_>) -> Result<(), Failure> {
        let (key, client_id) = self.session(message)?;
        self.engine
            .remove(key, RemoveReason::Disconnected, &mut self.outcome.effects);
        let ext = self.timesync_ext();
        self.succeed("/meta/disconnect", &client_id, message.id, ext, |_| {});
        Ok(())
    }

    fn publish(&mut self, name: &str, message: &Message<'_>) -> Result<(), Failure> {
        let kind = match channel::classify(name) {
            None | Some(ChannelKind::Wildcard) => return Err(bayeux::CHANNEL_INVALID.into()),
            Some(ChannelKind::Meta) => return Err(bayeux::CHANNEL_UNKNOWN.into()),
            Some(kind) => kind,
        };
        let (key, _) = self.session(message)?;
        let data = message.data.ok_or(bayeux::DATA_MISSING)?;
        if kind == ChannelKind::Broadcast {
            let delivered = delivered_message(name, data.get().as_bytes(), message.id);
            self.engine
                .publish_from(name, delivered, Some(key), &mut self.outcome.effects);
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

#[cfg(test)]
mod tests;
