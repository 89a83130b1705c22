//! One request batch in, replies and effects out, as Bayeux 1.0 and CometD's clients expect
//! them. This module reads each message and sends it to its handler: `handshake` (and
//! disconnect), `subscribe`, `publish`, `connect`; `push` drains a WebSocket's queue. The
//! handlers reach sessions only through the `Engine` trait.

mod connect;
mod ext;
mod handshake;
mod publish;
mod push;
mod replies;
mod subscribe;

pub use connect::{complete_connect, complete_connect_with, Hold};
pub use push::drain_queue;
pub(crate) use subscribe::asked_replays;

use std::time::Instant;

use serde_json::value::RawValue;

use crate::client_id::Id;
use crate::config::Config;
use crate::engine::{Address, Caller, Effects, Engine, Refusal, SocketId, MAX_REFUSALS_LOGGED};
use crate::errors::bayeux;
use crate::json::{self, Body, FieldError, Message, ObjectWriter};
use crate::timesync::Timesync;
use ext::{read_ext, ReplyExt};
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
    /// The `BAYEUX_BROWSER` cookie it carried (a WebSocket's: its upgrade's, or the one its
    /// upgrade reply set).
    pub browser: Option<Id>,
    /// The client's address, for the limit on sessions per address.
    pub address: Option<Address>,
    pub transport: Transport,
    /// The WebSocket a request came over; a WebSocket request without one is treated as HTTP
    /// is (it owns no session, and needs the cookie).
    pub socket: Option<SocketId>,
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
            address: None,
            transport,
            socket: None,
            multiplexed: false,
            alone: None,
        }
    }

    /// A request over the WebSocket `socket`, whose upgrade carried (or was given) `browser`.
    pub fn socket(browser: Option<Id>, socket: SocketId) -> Self {
        Self {
            socket: Some(socket),
            ..Self::new(browser, Transport::WebSocket)
        }
    }

    /// Who asks: the socket, or an HTTP request.
    pub fn caller(&self) -> Caller {
        match (self.transport, self.socket) {
            (Transport::WebSocket, Some(socket)) => Caller::Socket(socket),
            _ => Caller::Http,
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
pub fn process<E: Engine + ?Sized>(
    engine: &mut E,
    body: &[u8],
    info: RequestInfo,
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
        Err(e) => {
            let error = "400::json_malformed";
            count_refusal(engine, &mut outcome.effects, None, None, error);
            return bad_request(outcome, error, &e.to_string());
        }
    };
    let mut request = Request {
        engine,
        browser: info.browser,
        address: info.address,
        transport: info.transport,
        caller: info.caller(),
        multiplexed: info.multiplexed,
        now,
        alone: info.alone.unwrap_or(messages.len() == 1),
        timesync: None,
        client: None,
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

/// The meta channels the protocol handles; a message to any other channel is a publish.
const META_CHANNELS: [&str; 5] = [
    "/meta/handshake",
    "/meta/connect",
    "/meta/subscribe",
    "/meta/unsubscribe",
    "/meta/disconnect",
];

/// Whether the core refuses a message whatever the application's hooks would say, for a reason
/// the hooks must not see: not a message object, a field nested deeper than `max_data_depth`,
/// or a channel name (its own, or one it subscribes to) past the limits on names. The hooked
/// path hands such a message straight to the core, which answers it.
pub fn refused_before_hooks(config: &Config, raw: &RawValue) -> bool {
    let message = match json::read_message(raw, config.max_data_depth) {
        Ok(message) => message,
        // An unknown field goes through the hooks, which may remove it; what is not a
        // message object at all is nothing for them to read.
        Err(FieldError::Unknown(_)) => return false,
        Err(FieldError::NotAnObject | FieldError::Malformed) => return true,
    };
    if message.too_deep.is_some() {
        return true;
    }
    let limits = config.name_limits();
    let too_big = |name: &str| limits.check(name).is_err();
    // The meta channels the protocol handles are not names a client chose.
    message
        .channel
        .and_then(json::as_str)
        .is_some_and(|name| !META_CHANNELS.contains(&&*name) && too_big(&name))
        || message
            .subscription
            .and_then(json::as_str_list)
            .is_some_and(|names| names.iter().any(|name| too_big(name)))
}

/// Counts an unsuccessful reply by its kind and hands it to the log, at most
/// `MAX_REFUSALS_LOGGED` per request (the rest are counted as left out). `client` is the
/// message's `clientId` field, read only here: most messages are not refused.
fn count_refusal<E: Engine + ?Sized>(
    engine: &mut E,
    effects: &mut Effects,
    client: Option<&RawValue>,
    channel: Option<&str>,
    error: &str,
) {
    engine.count_error(error);
    if effects.refused.len() == MAX_REFUSALS_LOGGED {
        effects.refused_left_out += 1;
        return;
    }
    let client_id = client.and_then(json::as_str);
    effects.refused.push(Refusal {
        client_id: client_id.and_then(|id| Id::parse(&id)),
        channel: channel.map(Into::into),
        error: error.into(),
    });
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

/// A message the protocol cannot act on, whatever the session or the server's state: the
/// reply's `id` (when it is usable) and error.
pub struct Unreadable<'a> {
    pub id: Option<&'a RawValue>,
    pub error: Failure,
}

/// Reads a message's fields and its channel's name, or says why they cannot be read; a field
/// nested deeper than `max_depth` is named in the message's `too_deep`. The application's hooks
/// see only messages read here (`Engine.split`).
pub fn read(
    raw: &RawValue,
    max_depth: usize,
) -> Result<(Message<'_>, std::borrow::Cow<'_, str>), Unreadable<'_>> {
    let unreadable = |id, error: Failure| Unreadable { id, error };
    let message = json::read_message(raw, max_depth).map_err(|error| {
        let error = match error {
            FieldError::NotAnObject => bayeux::MESSAGE_NOT_OBJECT.into(),
            FieldError::Malformed => bayeux::MESSAGE_MALFORMED.into(),
            FieldError::Unknown(name) => bayeux::field("unknown_field", &name).into(),
        };
        unreadable(None, error)
    })?;
    let id = message.id;
    if id.is_some_and(|id| !json::valid_id(id)) {
        return Err(unreadable(None, bayeux::field("invalid_type", "id").into()));
    }
    let Some(channel) = message.channel else {
        return Err(unreadable(id, bayeux::CHANNEL_MISSING.into()));
    };
    let Some(channel) = json::as_str(channel) else {
        return Err(unreadable(
            id,
            bayeux::field("invalid_type", "channel").into(),
        ));
    };
    Ok((message, channel))
}

/// One request being handled: its handlers live in this module's children.
struct Request<'r, E: Engine + ?Sized> {
    engine: &'r mut E,
    browser: Option<Id>,
    address: Option<Address>,
    transport: Transport,
    caller: Caller,
    multiplexed: bool,
    now: Instant,
    /// A connect may be held only when it stands alone.
    alone: bool,
    /// The timesync answer for the message being handled, if it asked and it is enabled.
    timesync: Option<Timesync>,
    /// The client id the message being handled named, if any, for the log.
    client: Option<&'r RawValue>,
    out: Body,
    outcome: &'r mut Outcome,
}

/// A reply failed with this error string.
type Failure = std::borrow::Cow<'static, str>;

impl<'r, E: Engine + ?Sized> Request<'r, E> {
    fn handle(&mut self, raw: &'r RawValue) {
        let max_depth = self.engine.config().max_data_depth;
        self.client = None;
        let (message, channel) = match read(raw, max_depth) {
            Ok(read) => read,
            Err(Unreadable { id, error }) => return self.fail(None, id, &error),
        };
        self.client = message.client_id;
        let id = message.id;
        // Nothing nested deeper than `max_data_depth` is read further, let alone delivered.
        if let Some(field) = &message.too_deep {
            let error = bayeux::field("too_deep", field);
            return self.fail(Some(&channel), id, &error);
        }
        // A failed (un)subscribe names what it asked for, as CometD's replies do: the CometD
        // JavaScript client finds the subscription to drop by it, and without it would keep
        // one the server refused, and never ask again.
        let asked = match &*channel {
            "/meta/subscribe" | "/meta/unsubscribe" => message.subscription,
            _ => None,
        };
        // A transport the server does not offer: every message is refused, with the advice
        // not to retry, so that the client moves to another transport or stops.
        if !self.engine.config().offers(self.transport.name()) {
            let error = bayeux::CONNECTION_TYPE_UNSUPPORTED;
            return self.refuse(&channel, id, asked, error);
        }
        let ext = read_ext(message.ext);
        let timesync_on = self.engine.config().timesync && channel.starts_with("/meta/");
        self.timesync = ext.timesync.filter(|_| timesync_on).map(Timesync::received);
        // One arm per name in META_CHANNELS; any other channel is published to.
        let result = match &*channel {
            "/meta/handshake" => self.handshake(&message, &ext),
            "/meta/connect" => self.connect(&message, &ext),
            "/meta/subscribe" => self.subscribe(&message, true),
            "/meta/unsubscribe" => self.subscribe(&message, false),
            "/meta/disconnect" => self.disconnect(&message),
            other => self.publish(other, &message),
        };
        if let Err(error) = result {
            self.refuse(&channel, id, asked, &error);
        }
    }

    /// Appends an unsuccessful reply to a message on `channel`, echoing the `subscription` it
    /// asked for, if any; a 402 carries the advice to handshake again.
    fn refuse(
        &mut self,
        channel: &str,
        id: Option<&RawValue>,
        subscription: Option<&RawValue>,
        error: &str,
    ) {
        self.count_refusal(Some(channel), error);
        if error == bayeux::SESSION_UNKNOWN {
            return replies::unknown_session(&mut self.out, channel, id, subscription);
        }
        let mut reply = self.out.object();
        reply
            .string("channel", channel)
            .bool("successful", false)
            .string("error", error);
        if let Some(subscription) = subscription {
            reply.raw("subscription", subscription.get().as_bytes());
        }
        if error == bayeux::CONNECTION_TYPE_UNSUPPORTED {
            reply.raw("advice", NO_RECONNECT_ADVICE);
        }
        if let Some(id) = id {
            reply.raw("id", id.get().as_bytes());
        }
        reply.finish();
    }

    /// Appends an unsuccessful reply to a message whose channel may not be known.
    fn fail(&mut self, channel: Option<&str>, id: Option<&RawValue>, error: &str) {
        let Some(channel) = channel else {
            self.count_refusal(None, error);
            let mut reply = self.out.object();
            reply.bool("successful", false).string("error", error);
            if let Some(id) = id {
                reply.raw("id", id.get().as_bytes());
            }
            return reply.finish();
        };
        self.refuse(channel, id, None, error);
    }

    /// Counts an unsuccessful reply to the message being handled, and hands it to the log.
    fn count_refusal(&mut self, channel: Option<&str>, error: &str) {
        let effects = &mut self.outcome.effects;
        count_refusal(self.engine, effects, self.client, channel, error);
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

    /// The reply `ext` of a message that only timesync answers.
    fn timesync_ext(&self) -> ReplyExt {
        ReplyExt {
            ack: None,
            timesync: self.timesync,
            replay: false,
        }
    }

    /// The session a message names, if it exists and this request may act for it (see
    /// `Engine::lookup`). A session it may not use is answered as an unknown one: a client
    /// that lost its socket handshakes again, and nobody learns which ids are live.
    fn session(&self, message: &Message<'_>) -> Result<(E::Key, Id), Failure> {
        let raw = message.client_id.ok_or(bayeux::CLIENT_ID_MISSING)?;
        let text = json::as_str(raw).ok_or_else(|| bayeux::field("invalid_type", "clientId"))?;
        let id = Id::parse(&text).ok_or(bayeux::SESSION_UNKNOWN)?;
        let key = self
            .engine
            .lookup(&id, self.browser.as_ref(), self.caller)
            .map_err(|_| bayeux::SESSION_UNKNOWN)?;
        Ok((key, id))
    }
}

#[cfg(test)]
mod tests;
