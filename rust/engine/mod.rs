//! The engine boundary: where sessions, subscriptions and queues live. The protocol above it
//! speaks to an engine only through the `Engine` trait, naming sessions by client id or by the
//! handle a lookup returned, so another engine (Redis: several processes sharing sessions) can
//! stand behind it without touching the protocol. `MemoryEngine` is the embedded default.

pub mod durations;
mod holds;
mod marks;
mod memory;
mod quotas;
mod session;
mod table;

pub use holds::HoldEnd;
pub use memory::MemoryEngine;
pub use quotas::{address_key, Address, Exceeded};

use std::time::Instant;

use crate::client_id::Id;
use crate::config::Config;
use crate::history::{ReplayFrom, ReplayRefused};
use crate::json::Body;
use crate::message::Shared;

/// Everything the protocol and the Python API ask of a session store. One request runs under
/// one exclusive borrow, so a `Key` from `lookup` stays valid until the request ends.
pub trait Engine {
    /// A handle on a live session, cheaper to use than its client id (the in-memory engine's
    /// slot number).
    type Key: Copy + Eq;

    /// The settings the engine was built with.
    fn config(&self) -> &Config;

    // Sessions.

    /// Creates a session for a browser at an address (`None`: not an IP address); its expiry
    /// clock starts now. Refused when the browser or the address has as many sessions as the
    /// settings allow.
    fn create_session(
        &mut self,
        browser: Id,
        address: Option<Address>,
        now: Instant,
    ) -> Result<(Id, Self::Key), Exceeded>;
    /// Takes in a session that another process of a cluster served until now, under its own
    /// id: its subscriptions are added with `subscribe`, and its expiry clock starts now; its
    /// next connect is held unless its first connect is still to come (`connected`). It
    /// counts against the limits on sessions per cookie and per address without being refused
    /// by them (the session exists already), and no event is emitted. `None` if a session
    /// with that id is already here.
    fn adopt(
        &mut self,
        id: Id,
        browser: Id,
        address: Option<Address>,
        connected: bool,
        now: Instant,
    ) -> Option<Self::Key>;
    /// Finds a session that `caller`, whose request carried the cookie `browser`, may act for:
    /// the socket it is bound to, or a request that proves it comes from the session's browser
    /// (its cookie). Without that proof, only a session bound to no socket may be used, and
    /// only when sessions are trusted or, by a socket, while it is fresh from a handshake over
    /// HTTP (Faye opens its socket before that handshake, so the upgrade had no cookie).
    fn lookup(&self, id: &Id, browser: Option<&Id>, caller: Caller) -> Result<Self::Key, Lookup>;
    /// Finds a session without checking its cookie.
    fn key_of(&self, id: &Id) -> Option<Self::Key>;
    /// Ends a session: its subscriptions go, its held connect is released. A session that
    /// `Moved` leaves without an event and without counting as removed.
    fn remove(&mut self, key: Self::Key, reason: RemoveReason, effects: &mut Effects);
    /// Removes sessions whose deadline has passed, a slice of the table at a time so that no
    /// call holds the server for long: returns true once a whole pass over the sessions is
    /// done, false when the caller should call again (soon, after letting others run).
    fn sweep(&mut self, now: Instant, effects: &mut Effects) -> bool;
    /// The session's queue length, dropped count and subscriptions (sorted).
    fn session_info(&self, key: Self::Key) -> SessionInfo;
    fn stats(&self) -> Stats;
    /// Counts an unsuccessful reply by its kind (see `errors::kind_of`).
    fn count_error(&mut self, error: &str);

    // Subscriptions and messages.

    /// Which limit, if any, subscribing the session to every one of `names` (valid broadcast
    /// channels and patterns, repeats allowed) would go past: its subscriptions
    /// (`max_subscriptions_per_session`) or the channels and patterns of the whole index
    /// (`max_channels`). A channel that already has subscribers adds none to the latter.
    fn subscribe_limit(&self, key: Self::Key, names: &[&str]) -> Option<SubscribeLimit>;
    /// Subscribes to a valid channel or pattern; true if new. Limits are checked before, with
    /// `subscribe_limit`.
    fn subscribe(&mut self, key: Self::Key, name: &str) -> bool;
    /// Unsubscribes; true if the subscription existed.
    fn unsubscribe(&mut self, key: Self::Key, name: &str) -> bool;
    /// Publishes `message` on a broadcast `channel`: fans it out here (`fan_out`, leaving out
    /// `publisher` when it must not receive its own messages), or, with `relay_publishes`,
    /// hands it back in `effects.relayed`. Returns the number of sessions reached here.
    fn publish_from(
        &mut self,
        channel: &str,
        message: Shared,
        publisher: Option<Self::Key>,
        effects: &mut Effects,
    ) -> usize;
    /// Queues `message` for every subscriber of a broadcast `channel` here, once per session
    /// however many of its patterns match, except `excluded`. Returns the number reached.
    fn fan_out(
        &mut self,
        channel: &str,
        message: Shared,
        excluded: Option<Self::Key>,
        effects: &mut Effects,
    ) -> usize;
    /// `publish_from` for a message the server itself sends.
    fn publish(&mut self, channel: &str, message: Shared, effects: &mut Effects) -> usize {
        self.publish_from(channel, message, None, effects)
    }
    /// Queues `message` for one session, and tells its transport once per drain: a bound
    /// session's socket pushes, a held connect returns.
    fn deliver(&mut self, key: Self::Key, message: Shared, effects: &mut Effects);

    // History (see history.rs).

    /// The message subscribers of a broadcast `channel` receive for a publish of `data` (raw
    /// JSON): on a channel with a history, numbered and retained.
    fn broadcast_message(&mut self, channel: &str, data: &str, now: Instant) -> Shared;
    /// The messages retained on `channel` after `from`, in order, or why not.
    fn replay(
        &mut self,
        channel: &str,
        from: ReplayFrom,
        now: Instant,
    ) -> Result<Vec<Shared>, ReplayRefused>;
    /// How many replayed messages the session has not taken yet (see `Config::max_replayed`).
    fn replayed_undelivered(&self, key: Self::Key) -> usize;
    /// Queues replayed messages for one session, before anything published after them. Its
    /// queue's bound grows by as many until its next drain, so that a replay is never cut.
    fn deliver_replay(&mut self, key: Self::Key, messages: Vec<Shared>, effects: &mut Effects);

    // Connects.

    /// The client negotiated the ack extension: its messages travel only in connect replies,
    /// which carry batch ids, and are sent again until acknowledged.
    fn enable_ack(&mut self, key: Self::Key);
    /// The client received every ack batch up to `batch` (ignored without the extension).
    fn acknowledge(&mut self, key: Self::Key, batch: u64);
    /// Records that a connect arrived; true for the session's first one.
    fn first_connect(&mut self, key: Self::Key) -> bool;
    /// Whether a connect now would carry anything: queued messages, or unacknowledged ones.
    fn has_pending(&self, key: Self::Key) -> bool;
    /// Whether the session's browser already has as many held long-polls as it may.
    fn browser_at_limit(&self, key: Self::Key) -> bool;
    /// Marks a connect as held for the session, releasing any earlier one. Returns its token.
    /// A `counted` hold counts against its browser's limit of held long-polls.
    fn hold(&mut self, key: Self::Key, counted: bool, effects: &mut Effects) -> u64;
    /// Releases the session's held connect, if any.
    fn release_held(&mut self, key: Self::Key, effects: &mut Effects);
    /// Ends the held connect `token`, if it is still the session's current one, and starts
    /// the session's expiry clock. Returns the session (if alive) and whether it was current.
    fn end_hold(&mut self, id: &Id, token: u64, now: Instant) -> Option<(Self::Key, bool)>;
    /// How the session of the held connect `token` ended, when that is no error for its client
    /// (once per token).
    fn take_ended_hold(&mut self, token: u64) -> Option<HoldEnd>;
    /// Starts the expiry clock after a connect reply.
    fn touch(&mut self, key: Self::Key, now: Instant);
    /// Writes what a connect reply carries, in order; with the ack extension that is every
    /// unacknowledged message and then the new ones, as one batch whose id is returned.
    fn drain_for_connect(&mut self, key: Self::Key, out: &mut Body) -> Option<u64>;
    /// The ack batch the session's last connect reply carried, if it uses the extension.
    fn ack_batch(&self, key: Self::Key) -> Option<u64>;
    /// With the ack extension: the batch the client acknowledged last, and the batch of the
    /// connect reply built since the last call, if one was (see `AckState::report`).
    fn ack_report(&mut self, key: Self::Key) -> Option<(Option<u64>, Option<u64>)>;
    /// With the ack extension: numbers the session's next batches after `batch`.
    fn continue_ack_after(&mut self, key: Self::Key, batch: u64);

    // WebSockets.

    /// Binds a session to a WebSocket, taking it from any other, or unbinds it (`None`):
    /// bound sessions are woken for every message, so the socket can push it at once, and
    /// only their socket may use them without the cookie.
    fn set_bound(&mut self, key: Self::Key, socket: Option<SocketId>, effects: &mut Effects);
    /// Writes a session's queued messages for its socket to push; false, writing nothing, when
    /// none wait, the session takes messages only in connect replies, or `socket` (if named) is
    /// not the one it is bound to (it moved). Either way the session may be woken again.
    fn drain_to_push(&mut self, key: Self::Key, socket: Option<SocketId>, out: &mut Body) -> bool;
    /// A socket closed: if the session is still bound to it, its held connect is released
    /// and its expiry clock starts.
    fn unbind(&mut self, id: &Id, socket: SocketId, now: Instant, effects: &mut Effects);
    /// Releases every held connect (shutdown).
    fn release_all(&mut self, effects: &mut Effects);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveReason {
    Disconnected,
    Expired,
    Removed,
    /// Another process of a cluster serves the session from now on.
    Moved,
}

impl RemoveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoveReason::Disconnected => "disconnected",
            RemoveReason::Expired => "expired",
            RemoveReason::Removed => "removed",
            RemoveReason::Moved => "moved",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    SessionAdded(Id),
    Subscribed(Id, Vec<String>),
    Unsubscribed(Id, Vec<String>),
    SessionRemoved(Id, RemoveReason),
}

/// What an operation changed that the transport layer must act on.
#[derive(Default, Debug)]
pub struct Effects {
    pub events: Vec<Event>,
    /// Sessions whose held connect should now return with the messages waiting.
    pub wake: Vec<Id>,
    /// Sessions bound to a WebSocket that should now push the messages waiting.
    pub push: Vec<Id>,
    /// Sessions that this request bound to its WebSocket.
    pub bound: Vec<Id>,
    /// Sessions whose held connect must return at once without messages: it was replaced by a
    /// newer connect, or the session ended.
    pub release: Vec<Id>,
    /// Publishes handed back instead of fanned out (`relay_publishes`).
    pub relayed: Vec<Relayed>,
    /// Unsuccessful replies, for the log (at most `MAX_REFUSALS_LOGGED` per request)...
    pub refused: Vec<Refusal>,
    /// ...and how many more there were.
    pub refused_left_out: usize,
}

/// The most unsuccessful replies one request hands to the log; the counts have them all.
pub const MAX_REFUSALS_LOGGED: usize = 16;

/// An unsuccessful reply: the session that asked (when the message named a well-formed client
/// id), the channel (when the message had one) and the error.
#[derive(Debug)]
pub struct Refusal {
    pub client_id: Option<Id>,
    pub channel: Option<Box<str>>,
    pub error: Box<str>,
}

/// A publish for the cluster to carry to every process.
#[derive(Debug)]
pub struct Relayed {
    pub channel: Box<str>,
    pub message: Shared,
    /// The publishing session, when it must not receive its own message.
    pub excluded: Option<Id>,
}

/// A WebSocket, as the transport layer numbers them.
pub type SocketId = u64;

/// Who asks to act for a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Http,
    Socket(SocketId),
}

impl Caller {
    /// The socket, for a WebSocket caller.
    pub fn socket(self) -> Option<SocketId> {
        match self {
            Caller::Http => None,
            Caller::Socket(socket) => Some(socket),
        }
    }
}

/// A limit a subscribe would go past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeLimit {
    /// The session's own subscriptions.
    Subscriptions,
    /// The channels and patterns the server holds, for every session.
    Channels,
}

/// Why a session could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Unknown,
    /// The request does not carry the session's cookie, and nothing else lets it in.
    WrongBrowser,
    /// The session is bound to another socket, and the request does not carry its cookie.
    OtherSocket,
}

/// Counters visible through the API.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub sessions: usize,
    /// Sessions created and removed since the engine started: exact, whatever the event
    /// receivers kept.
    pub sessions_created: u64,
    pub sessions_removed: u64,
    /// Of those removed: by a disconnect, by expiry, by the application.
    pub sessions_disconnected: u64,
    pub sessions_expired: u64,
    pub sessions_ended_by_server: u64,
    /// Sessions bound to a WebSocket now (the others poll over HTTP).
    pub sessions_websocket: usize,
    /// Subscriptions of every session, patterns included.
    pub subscriptions: usize,
    pub channels: usize,
    pub published: u64,
    pub delivered: u64,
    pub dropped: u64,
    /// Channels keeping a history, and the messages they retain.
    pub history_channels: usize,
    pub history_messages: usize,
    /// The oldest id retained (0: none).
    pub history_oldest_id: u64,
}

/// One session as the API shows it (and as a cluster records it).
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub queued: usize,
    pub dropped: u64,
    pub subscriptions: Vec<String>,
    pub browser: Id,
    /// Whether it negotiated the ack extension.
    pub ack: bool,
    /// Whether its first connect was answered.
    pub connected: bool,
}
