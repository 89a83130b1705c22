//! The in-memory engine: the session table behind the engine boundary. Everything above this
//! module talks about sessions by client id only, so another engine (Redis) can replace it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::channel::{self, ChannelKind};
use crate::client_id::Id;
use crate::message::Shared;
use crate::session::{Enqueued, Session};
use crate::subscriptions::{SessionKey, SubscriptionIndex};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveReason {
    Disconnected,
    Expired,
    Removed,
}

impl RemoveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoveReason::Disconnected => "disconnected",
            RemoveReason::Expired => "expired",
            RemoveReason::Removed => "removed",
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
}

/// Why a session could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Unknown,
    WrongBrowser,
}

/// Counters visible through the API.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub sessions: usize,
    pub channels: usize,
    pub published: u64,
    pub delivered: u64,
    pub dropped: u64,
}

pub struct Engine {
    pub config: Config,
    slots: Vec<Option<Session>>,
    free: Vec<SessionKey>,
    ids: FxHashMap<Id, SessionKey>,
    index: SubscriptionIndex,
    publish_seq: u64,
    hold_seq: u64,
    /// Held connects whose session the client itself disconnected: answered with
    /// `reconnect: "none"` rather than a 402. Each entry lives until its connect completes.
    disconnected_holds: FxHashSet<u64>,
    /// Held long-polls per browser cookie, for `max_sessions_per_browser`.
    held_per_browser: FxHashMap<Id, u32>,
    published: u64,
    delivered: u64,
    dropped: u64,
}

impl Engine {
    pub fn new(config: Config) -> Self {
        Self {
            slots: Vec::with_capacity(config.session_capacity),
            free: Vec::new(),
            ids: FxHashMap::with_capacity_and_hasher(config.session_capacity, Default::default()),
            index: SubscriptionIndex::new(config.channel_capacity, config.subscriber_capacity),
            publish_seq: 0,
            hold_seq: 0,
            disconnected_holds: FxHashSet::default(),
            held_per_browser: FxHashMap::default(),
            published: 0,
            delivered: 0,
            dropped: 0,
            config,
        }
    }

    pub fn create_session(&mut self, browser: Id, now: Instant) -> Id {
        let mut id = Id::generate();
        while self.ids.contains_key(&id) {
            id = Id::generate();
        }
        let mut session = Session::new(id, browser, now + self.config.max_interval);
        session.connect_only = self.config.meta_connect_deliver_only;
        let key = match self.free.pop() {
            Some(key) => {
                self.slots[key as usize] = Some(session);
                key
            }
            None => {
                self.slots.push(Some(session));
                (self.slots.len() - 1) as SessionKey
            }
        };
        self.ids.insert(id, key);
        id
    }

    /// Finds a session, checking the browser cookie when `check_browser` is set and sessions
    /// are not trusted.
    pub fn lookup(
        &self,
        id: &Id,
        browser: Option<&Id>,
        check_browser: bool,
    ) -> Result<SessionKey, Lookup> {
        let key = *self.ids.get(id).ok_or(Lookup::Unknown)?;
        let check = check_browser && !self.config.trust_client_session;
        if check && browser != Some(&self.session(key).browser) {
            return Err(Lookup::WrongBrowser);
        }
        Ok(key)
    }

    pub fn key_of(&self, id: &Id) -> Option<SessionKey> {
        self.ids.get(id).copied()
    }

    pub fn session(&self, key: SessionKey) -> &Session {
        self.slots[key as usize]
            .as_ref()
            .expect("a live session key")
    }

    pub fn session_mut(&mut self, key: SessionKey) -> &mut Session {
        self.slots[key as usize]
            .as_mut()
            .expect("a live session key")
    }

    /// Subscribes to a valid channel or pattern; true if new.
    pub fn subscribe(&mut self, key: SessionKey, name: &str) -> bool {
        let added = self.index.subscribe(name, key);
        if added {
            self.session_mut(key).subscriptions.push(name.into());
        }
        added
    }

    pub fn unsubscribe(&mut self, key: SessionKey, name: &str) -> bool {
        let removed = self.index.unsubscribe(name, key);
        if removed {
            let subscriptions = &mut self.session_mut(key).subscriptions;
            subscriptions.retain(|s| &**s != name);
        }
        removed
    }

    /// Queues `message` for every subscriber of a broadcast `channel`, once per session however
    /// many of its patterns match. Returns the number of sessions reached.
    pub fn publish(&mut self, channel: &str, message: Shared, effects: &mut Effects) -> usize {
        self.publish_from(channel, message, None, effects)
    }

    /// Like `publish`, leaving out `publisher` when it must not receive its own messages.
    pub fn publish_from(
        &mut self,
        channel: &str,
        message: Shared,
        publisher: Option<SessionKey>,
        effects: &mut Effects,
    ) -> usize {
        debug_assert_eq!(channel::classify(channel), Some(ChannelKind::Broadcast));
        self.publish_seq += 1;
        self.published += 1;
        let seq = self.publish_seq;
        let excluded = publisher.filter(|_| !self.config.broadcast_to_publisher);
        let mut targets = Vec::new();
        let slots = &mut self.slots;
        self.index.for_each_match(channel, |key| {
            if Some(key) == excluded {
                return;
            }
            if let Some(session) = slots[key as usize].as_mut() {
                if session.last_publish != seq {
                    session.last_publish = seq;
                    targets.push(key);
                }
            }
        });
        for &key in &targets {
            self.deliver(key, Arc::clone(&message), effects);
        }
        targets.len()
    }

    /// Queues `message` for one session, and tells its transport once per drain: a bound
    /// session's socket pushes, a held connect returns.
    pub fn deliver(&mut self, key: SessionKey, message: Shared, effects: &mut Effects) {
        let capacity = self.config.queue_capacity;
        let session = self.slots[key as usize]
            .as_mut()
            .expect("a live session key");
        if let Enqueued::DroppedOldest = session.enqueue(message, capacity) {
            self.dropped += 1;
        }
        self.delivered += 1;
        if session.woken {
            return;
        }
        if session.bound && !session.connect_only {
            session.woken = true;
            effects.push.push(session.client_id);
        } else if session.held.is_some() {
            session.woken = true;
            effects.wake.push(session.client_id);
        }
    }

    /// Marks a connect as held for the session, releasing any earlier one. Returns its token.
    /// A `counted` hold counts against its browser's limit of held long-polls.
    pub fn hold(&mut self, key: SessionKey, counted: bool, effects: &mut Effects) -> u64 {
        self.release_held(key, effects);
        self.hold_seq += 1;
        let token = self.hold_seq;
        let session = self.session_mut(key);
        session.held = Some(token);
        session.held_counted = counted;
        session.woken = false;
        session.deadline = None;
        if counted {
            let browser = session.browser;
            *self.held_per_browser.entry(browser).or_default() += 1;
        }
        token
    }

    /// Whether a browser already has as many held long-polls as it may.
    pub fn browser_at_limit(&self, browser: &Id) -> bool {
        let limit = self.config.max_sessions_per_browser;
        let held = self.held_per_browser.get(browser).copied().unwrap_or(0);
        limit >= 0 && i64::from(held) >= limit
    }

    /// Clears a session's held connect and its count against the browser's limit.
    fn clear_held(&mut self, key: SessionKey) -> bool {
        let session = self.slots[key as usize]
            .as_mut()
            .expect("a live session key");
        let was_held = session.held.take().is_some();
        if std::mem::take(&mut session.held_counted) {
            let browser = session.browser;
            if let Some(count) = self.held_per_browser.get_mut(&browser) {
                *count -= 1;
                if *count == 0 {
                    self.held_per_browser.remove(&browser);
                }
            }
        }
        was_held
    }

    /// Releases the session's held connect, if any.
    pub fn release_held(&mut self, key: SessionKey, effects: &mut Effects) {
        if self.clear_held(key) {
            effects.release.push(self.session(key).client_id);
        }
    }

    /// Ends the held connect `token`, if it is still the session's current one, and starts the
    /// session's expiry clock. Returns the session's key if the session is alive.
    pub fn end_hold(&mut self, id: &Id, token: u64, now: Instant) -> Option<(SessionKey, bool)> {
        let key = self.key_of(id)?;
        let current = self.session(key).held == Some(token);
        if current {
            self.clear_held(key);
            self.session_mut(key).woken = false;
            self.touch(key, now);
        }
        Some((key, current))
    }

    /// Whether the held connect `token` ended because its client disconnected (once per token).
    pub fn take_disconnected_hold(&mut self, token: u64) -> bool {
        self.disconnected_holds.remove(&token)
    }

    /// Binds a session to a WebSocket (or unbinds it): bound sessions are woken for every
    /// message, so the socket can push it at once.
    pub fn set_bound(&mut self, key: SessionKey, bound: bool, effects: &mut Effects) {
        let session = self.session_mut(key);
        session.bound = bound;
        if bound {
            effects.bound.push(session.client_id);
        }
    }

    /// The socket of a bound session closed: its held connect is released and its expiry
    /// clock starts.
    pub fn unbind(&mut self, id: &Id, now: Instant, effects: &mut Effects) {
        let Some(key) = self.key_of(id) else {
            return;
        };
        self.release_held(key, effects);
        let session = self.session_mut(key);
        session.bound = false;
        session.woken = false;
        self.touch(key, now);
    }

    /// Starts the expiry clock after a connect reply.
    pub fn touch(&mut self, key: SessionKey, now: Instant) {
        let expires = now + self.config.interval + self.config.max_interval;
        self.session_mut(key).deadline = Some(expires);
    }

    pub fn remove(&mut self, key: SessionKey, reason: RemoveReason, effects: &mut Effects) {
        if let (RemoveReason::Disconnected, Some(token)) = (reason, self.session(key).held) {
            self.disconnected_holds.insert(token);
        }
        self.release_held(key, effects);
        let Some(session) = self.slots[key as usize].take() else {
            return;
        };
        for name in &session.subscriptions {
            self.index.unsubscribe(name, key);
        }
        self.ids.remove(&session.client_id);
        self.free.push(key);
        effects
            .events
            .push(Event::SessionRemoved(session.client_id, reason));
    }

    /// Removes every session whose deadline has passed.
    pub fn sweep(&mut self, now: Instant, effects: &mut Effects) {
        let expired: Vec<SessionKey> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(key, slot)| {
                let deadline = slot.as_ref()?.deadline?;
                (deadline <= now).then_some(key as SessionKey)
            })
            .collect();
        for key in expired {
            self.remove(key, RemoveReason::Expired, effects);
        }
    }

    /// Releases every held connect (shutdown).
    pub fn release_all(&mut self, effects: &mut Effects) {
        for key in 0..self.slots.len() as SessionKey {
            if self.slots[key as usize].is_some() {
                self.release_held(key, effects);
            }
        }
    }

    /// Counts messages dropped outside `deliver` (the ack extension's bound).
    pub fn count_dropped(&mut self, key: SessionKey, dropped: u64) {
        self.session_mut(key).dropped += dropped;
        self.dropped += dropped;
    }

    pub fn stats(&self) -> Stats {
        Stats {
            sessions: self.ids.len(),
            channels: self.index.channel_count(),
            published: self.published,
            delivered: self.delivered,
            dropped: self.dropped,
        }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
