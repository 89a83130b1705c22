//! The engine's settings, fixed when it is built.

use std::time::Duration;

/// The engine's settings, fixed when it is built.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a `/meta/connect` is held at most (also `advice.timeout`).
    pub timeout: Duration,
    /// How long a session lives without a `/meta/connect` after its last connect reply.
    pub max_interval: Duration,
    /// `advice.interval`: how long clients wait between a connect reply and the next connect.
    pub interval: Duration,
    /// The bound on each session's queue.
    pub queue_capacity: usize,
    /// Skip the `BAYEUX_BROWSER` cookie check (for clients that cannot keep cookies).
    pub trust_client_session: bool,
    /// Advertised in handshake replies.
    pub connection_types: Vec<String>,
    /// Offer the ack extension to clients that ask for it.
    pub ack_extension: bool,
    /// Answer the timesync extension.
    pub timesync: bool,
    /// Deliver a client's publish to its own session too, when it subscribes.
    pub broadcast_to_publisher: bool,
    /// How many long-polls one browser may have held at once over HTTP/1.x; negative: no limit.
    pub max_sessions_per_browser: i64,
    /// `advice.interval` for a connect refused under that limit (`multiple-clients`).
    pub multi_session_interval: Duration,
    /// Advertise `maxInterval` in advice, so clients away longer handshake again directly.
    pub handshake_reconnect: bool,
    /// Deliver messages only in `/meta/connect` replies, never pushed on a WebSocket alone.
    pub meta_connect_deliver_only: bool,
    /// Pre-sizing hints.
    pub session_capacity: usize,
    pub channel_capacity: usize,
    pub subscriber_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(20),
            max_interval: Duration::from_secs(60),
            interval: Duration::ZERO,
            queue_capacity: 500,
            trust_client_session: false,
            connection_types: vec!["long-polling".to_owned()],
            ack_extension: false,
            timesync: false,
            broadcast_to_publisher: true,
            max_sessions_per_browser: 1,
            multi_session_interval: Duration::from_secs(2),
            handshake_reconnect: false,
            meta_connect_deliver_only: false,
            session_capacity: 0,
            channel_capacity: 0,
            subscriber_capacity: 0,
        }
    }
}

impl Config {
    /// Whether the server offers the transport `connection_type` ("long-polling", ...).
    pub fn offers(&self, connection_type: &str) -> bool {
        self.connection_types.iter().any(|t| t == connection_type)
    }
}
