//! Bayeux messages the load generator sends, and the replies and deliveries it reads.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::cli::Transport;

pub fn connection_type(t: Transport) -> &'static str {
    match t {
        Transport::LongPolling => "long-polling",
        Transport::Websocket => "websocket",
    }
}

pub fn handshake(t: Transport) -> String {
    format!(
        r#"[{{"channel":"/meta/handshake","version":"1.0","minimumVersion":"1.0","supportedConnectionTypes":["{}"]}}]"#,
        connection_type(t)
    )
}

pub fn subscribe(client_id: &str, channel: &str) -> String {
    format!(
        r#"{{"channel":"/meta/subscribe","clientId":"{client_id}","subscription":"{channel}"}}"#
    )
}

/// `timeout_zero` asks for an immediate answer, as CometD clients do with their first connect.
pub fn connect(client_id: &str, t: Transport, timeout_zero: bool) -> String {
    let advice = if timeout_zero {
        r#","advice":{"timeout":0}"#
    } else {
        ""
    };
    format!(
        r#"{{"channel":"/meta/connect","clientId":"{client_id}","connectionType":"{}"{advice}}}"#,
        connection_type(t)
    )
}

/// One published message; its data carries what the receiver needs to score it.
pub struct Publish {
    /// Phase (run, sweep step or burst) the message belongs to.
    pub phase: u32,
    /// Sequence within the phase.
    pub seq: u32,
    /// Intended send time, microseconds since the generator started.
    pub t_us: u64,
}

pub fn publish(client_id: &str, channel: &str, p: &Publish, padding: &str) -> String {
    format!(
        r#"{{"channel":"{channel}","clientId":"{client_id}","data":{{"p":{},"s":{},"t":{},"x":"{padding}"}}}}"#,
        p.phase, p.seq, p.t_us
    )
}

/// Joins message objects into one batch.
pub fn batch<I: IntoIterator<Item = String>>(messages: I) -> String {
    let mut out = String::from("[");
    for (i, m) in messages.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&m);
    }
    out.push(']');
    out
}

/// Any message a server sends: replies (with `successful`) and deliveries (with `data`).
#[derive(Deserialize)]
pub struct Message<'a> {
    #[serde(default, borrow)]
    pub channel: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
    #[serde(default)]
    pub successful: Option<bool>,
    #[serde(default, rename = "clientId")]
    pub client_id: Option<String>,
    #[serde(default)]
    pub advice: Option<Advice>,
}

#[derive(Deserialize)]
pub struct Advice {
    #[serde(default)]
    pub reconnect: Option<String>,
}

/// The fields of our own published data that scoring needs.
#[derive(Deserialize)]
pub struct Stamp {
    pub p: u32,
    pub s: u32,
    pub t: u64,
}

/// Parses a reply body: a JSON array of messages, or one message.
pub fn parse(body: &[u8]) -> Result<Vec<Message<'_>>, String> {
    match serde_json::from_slice::<Vec<Message>>(body) {
        Ok(v) => Ok(v),
        Err(e) => serde_json::from_slice::<Message>(body)
            .map(|m| vec![m])
            .map_err(|_| {
                format!(
                    "bad reply ({e}): {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )
            }),
    }
}

impl Message<'_> {
    pub fn is(&self, channel: &str) -> bool {
        self.channel.as_deref() == Some(channel)
    }
    /// A delivery of one of our messages (replies carry no data).
    pub fn stamp(&self) -> Option<Stamp> {
        let data = self.data?;
        if self
            .channel
            .as_deref()
            .is_some_and(|c| c.starts_with("/meta/"))
        {
            return None;
        }
        serde_json::from_str(data.get()).ok()
    }
    pub fn wants_handshake(&self) -> bool {
        self.advice.as_ref().and_then(|a| a.reconnect.as_deref()) == Some("handshake")
    }
}
