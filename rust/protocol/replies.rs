//! Writing replies: advice, the extension fields, and the replies several handlers share.

use serde_json::value::RawValue;

use super::ext::ReplyExt;
use crate::client_id::Id;
use crate::config::Config;
use crate::errors::bayeux;
use crate::json::{Body, ObjectWriter};

pub const HANDSHAKE_ADVICE: &[u8] = br#"{"reconnect":"handshake","interval":0}"#;
pub const NO_RECONNECT_ADVICE: &[u8] = br#"{"reconnect":"none","interval":0}"#;

/// The advice every successful handshake and connect reply carries.
pub fn advice(config: &Config) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(80);
    let mut advice = ObjectWriter::new(&mut bytes);
    advice
        .string("reconnect", "retry")
        .number("interval", config.interval.as_millis() as u64)
        .number("timeout", config.timeout.as_millis() as u64);
    if config.handshake_reconnect {
        advice.number("maxInterval", config.max_interval.as_millis() as u64);
    }
    advice.finish();
    bytes
}

/// The advice for a connect answered at once because its browser already holds as many
/// long-polls as it may: poll again after `multi_session_interval`.
pub fn multiple_clients_advice(config: &Config) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(96);
    ObjectWriter::new(&mut bytes)
        .string("reconnect", "retry")
        .number("interval", config.multi_session_interval.as_millis() as u64)
        .number("timeout", config.timeout.as_millis() as u64)
        .bool("multiple-clients", true)
        .finish();
    bytes
}

pub fn connect_reply(
    out: &mut Body,
    client_id: &Id,
    id: Option<&RawValue>,
    advice: &[u8],
    ext: &ReplyExt,
) {
    let mut reply = out.object();
    reply
        .string("channel", "/meta/connect")
        .bool("successful", true)
        .raw("clientId", &quoted(client_id))
        .raw("advice", advice);
    ext.write(&mut reply);
    if let Some(id) = id {
        reply.raw("id", id.get().as_bytes());
    }
    reply.finish();
}

/// `402::session_unknown` with the advice to handshake again (and the `subscription` a
/// refused (un)subscribe asked for).
pub fn unknown_session(
    out: &mut Body,
    channel: &str,
    id: Option<&RawValue>,
    subscription: Option<&RawValue>,
) {
    let mut reply = out.object();
    if !channel.is_empty() {
        reply.string("channel", channel);
    }
    reply
        .bool("successful", false)
        .string("error", bayeux::SESSION_UNKNOWN);
    if let Some(subscription) = subscription {
        reply.raw("subscription", subscription.get().as_bytes());
    }
    reply.raw("advice", HANDSHAKE_ADVICE);
    if let Some(id) = id {
        reply.raw("id", id.get().as_bytes());
    }
    reply.finish();
}

pub fn connection_types(config: &Config) -> Vec<u8> {
    serde_json::to_vec(&config.connection_types).unwrap_or_else(|_| b"[]".to_vec())
}

pub fn quoted(id: &Id) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(42);
    bytes.push(b'"');
    id.write_hex(&mut bytes);
    bytes.push(b'"');
    bytes
}
