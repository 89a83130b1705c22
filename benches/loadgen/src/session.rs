//! What every client shares: the target, the scores, the stop signal, and reading replies.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::bayeux::{self, Publish};
use crate::cli::{Dialect, Transport};
use crate::net::Endpoint;
use crate::stats::Scores;

pub struct Config {
    pub endpoint: Arc<Endpoint>,
    /// Path of the CometD endpoint, such as /cometd.
    pub path: String,
    /// The same endpoint as a ws:// URL.
    pub ws_url: String,
    pub transport: Transport,
    pub dialect: Dialect,
    pub padding: String,
    /// How long a held connect may take: the server's timeout plus a margin.
    pub connect_limit: Duration,
    pub scores: Arc<Scores>,
    pub stop: watch::Receiver<bool>,
}

/// Publishes a client may have queued (and sends in one batch), at most; the pacer counts
/// what does not fit as not sent.
pub const MAX_BATCH: usize = 128;

/// Any request other than a held connect gets this long.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(15);

impl Config {
    pub fn handshake_path(&self) -> String {
        match self.dialect {
            Dialect::Standard => self.path.clone(),
            Dialect::Axum => format!("{}/handshake", self.path),
        }
    }
    /// Connects, and for axum_cometd publishes too, go to `/connect`.
    pub fn connect_path(&self) -> String {
        match self.dialect {
            Dialect::Standard => self.path.clone(),
            Dialect::Axum => format!("{}/connect", self.path),
        }
    }
    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// A session's id and browser cookie; replaced when the session handshakes again.
#[derive(Clone, Default)]
pub struct Ident {
    pub client_id: String,
    pub cookie: String,
}

pub type SharedIdent = Arc<RwLock<Ident>>;

/// A running client: publishes handed to it go out over its own transport.
pub struct Handle {
    pub publish: Option<mpsc::Sender<Publish>>,
}

/// What a batch of server messages said, after its deliveries were scored.
#[derive(Default)]
pub struct Outcome {
    pub handshake: Option<String>,
    pub subscribed: usize,
    pub connect_replies: usize,
    pub wants_handshake: bool,
    pub failed: usize,
}

/// Scores every delivery in `body` and sums up the replies.
pub fn absorb(scores: &Scores, body: &[u8]) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    // Every message in a reply arrived together: one clock read for all of them.
    let now = scores.now_us();
    for m in bayeux::parse(body)? {
        if let Some(stamp) = m.stamp() {
            scores.deliver(stamp, now);
            continue;
        }
        if m.successful == Some(false) {
            out.failed += 1;
        }
        out.wants_handshake |= m.wants_handshake();
        if m.is("/meta/handshake") && m.successful == Some(true) {
            out.handshake = m.client_id.clone();
        } else if m.is("/meta/subscribe") && m.successful == Some(true) {
            out.subscribed += 1;
        } else if m.is("/meta/connect") {
            out.connect_replies += 1;
        }
    }
    Ok(out)
}
