//! The in-memory engine: a table of sessions in this process, behind the `Engine` trait.

use std::sync::Arc;
use std::time::Instant;

use super::durations::Durations;
use super::holds::{HoldEnd, Holds};
use super::marks::Marks;
use super::quotas::{Address, Exceeded, Quotas};
use super::session::{Enqueued, Session};
use super::table::SessionTable;
use super::{
    Caller, Effects, Engine, Event, Lookup, Relayed, RemoveReason, SessionInfo, SocketId, Stats,
    SubscribeLimit,
};
use crate::ack::AckState;
use crate::channel::{self, ChannelKind};
use crate::client_id::Id;
use crate::config::Config;
use crate::errors::kind_of;
use crate::history::{History, ReplayFrom, ReplayRefused};
use crate::json::Body;
use crate::message::Shared;
use crate::shrink::ShrinkIfSparse;
use crate::subscriptions::{SessionKey, SubscriptionIndex};
use rustc_hash::FxHashMap;
use rustc_hash::FxHashSet;

/// A sweep looks at this many slots at most per call...
const SWEEP_LOOKS: usize = 50_000;
/// ...and removes this many sessions at most (each removal is an event for the application).
const SWEEP_REMOVALS: usize = 1_000;

pub struct MemoryEngine {
    config: Config,
    sessions: SessionTable,
    index: SubscriptionIndex,
    publish_seq: u64,
    holds: Holds,
    quotas: Quotas,
    /// Where the sweep in progress goes on from: a slot number.
    sweep_cursor: usize,
    sessions_created: u64,
    sessions_removed: u64,
    published: u64,
    delivered: u64,
    dropped: u64,
    /// Tracked for a cluster node only (see `marks.rs`).
    marks: Option<Marks>,
    history: History,
    /// Sessions removed, by reason (disconnected, expired, by the application).
    removed_by: [u64; 3],
    /// Sessions bound to a WebSocket, kept as bindings change so that stats cost nothing.
    on_sockets: usize,
    /// Unsuccessful replies by kind: a bounded set of static names (see `errors::kind_of`).
    errors: FxHashMap<String, u64>,
    /// How long batches and fan-outs took (see durations.rs).
    pub batches: Durations,
    pub fan_outs: Durations,
}

impl MemoryEngine {
    /// A session as this engine's settings make it, its expiry clock started `now`.
    fn new_session(&self, id: Id, browser: Id, address: Option<Address>, now: Instant) -> Session {
        let mut session = Session::new(id, browser, now + self.config.max_interval);
        session.address = address;
        session.connect_only = self.config.meta_connect_deliver_only;
        session
    }

    /// What channels keep a history, and, on a cluster's node, what replays read.
    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn history_mut(&mut self) -> &mut History {
        &mut self.history
    }

    /// The sessions on a socket and the subscriptions, counted one session at a time: what
    /// `stats` keeps as they change.
    #[cfg(test)]
    pub fn recounted(&self) -> (usize, usize) {
        let sessions = self.sessions.iter().map(|(_, session)| session);
        sessions.fold((0, 0), |(sockets, subscriptions), session| {
            let bound = usize::from(session.socket.is_some());
            (sockets + bound, subscriptions + session.subscriptions.len())
        })
    }

    /// Unsuccessful replies so far, by kind (see `errors::kind_of`).
    pub fn error_counts(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.errors
            .iter()
            .map(|(kind, count)| (kind.as_str(), *count))
    }

    /// The client ids of every session here.
    pub fn session_ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.sessions.iter().map(|(_, session)| session.client_id)
    }

    pub fn new(config: Config) -> Self {
        Self {
            sessions: SessionTable::with_capacity(config.session_capacity),
            index: SubscriptionIndex::new(config.channel_capacity, config.subscriber_capacity),
            publish_seq: 0,
            holds: Holds::default(),
            quotas: Quotas::default(),
            sweep_cursor: 0,
            sessions_created: 0,
            sessions_removed: 0,
            published: 0,
            delivered: 0,
            dropped: 0,
            marks: None,
            removed_by: [0; 3],
            on_sockets: 0,
            errors: FxHashMap::default(),
            batches: Durations::default(),
            fan_outs: Durations::default(),
            history: History::new(
                config.history.clone(),
                config.max_history_channels,
                config.relay_publishes,
            ),
            config,
        }
    }

    /// Starts tracking where each session's undelivered messages begin (a cluster node).
    pub fn track_marks(&mut self) {
        self.marks.get_or_insert_with(Marks::default);
    }

    /// The stamp of the messages queued from now on (see `marks.rs`).
    pub fn set_stamp(&mut self, stamp: u64) {
        if let Some(marks) = &mut self.marks {
            marks.stamp = stamp;
        }
    }

    /// Each session whose first undelivered stamp changed since the last call, with that
    /// stamp (0: all delivered); nothing unless `track_marks` was called.
    pub fn take_marks(&mut self) -> Vec<(Id, u64)> {
        match &mut self.marks {
            Some(marks) => marks.report(&mut self.sessions),
            None => Vec::new(),
        }
    }

    fn session(&self, key: SessionKey) -> &Session {
        self.sessions.get(key)
    }

    fn session_mut(&mut self, key: SessionKey) -> &mut Session {
        self.sessions.get_mut(key)
    }

    /// Clears a session's held connect and its count against the browser's limit.
    fn clear_held(&mut self, key: SessionKey) -> bool {
        let session = self.sessions.get_mut(key);
        let was_held = session.held.take().is_some();
        if std::mem::take(&mut session.held_counted) {
            self.holds.uncount(&session.browser);
        }
        was_held
    }
}

impl Engine for MemoryEngine {
    type Key = SessionKey;

    fn config(&self) -> &Config {
        &self.config
    }

    fn create_session(
        &mut self,
        browser: Id,
        address: Option<Address>,
        now: Instant,
    ) -> Result<(Id, SessionKey), Exceeded> {
        self.quotas.admit(browser, address, &self.config)?;
        let id = self.sessions.fresh_id();
        let session = self.new_session(id, browser, address, now);
        self.sessions_created += 1;
        Ok((id, self.sessions.insert(session)))
    }

    fn adopt(
        &mut self,
        id: Id,
        browser: Id,
        address: Option<Address>,
        connected: bool,
        now: Instant,
    ) -> Option<SessionKey> {
        if self.sessions.key_of(&id).is_some() {
            return None;
        }
        self.quotas.count(browser, address);
        let mut session = self.new_session(id, browser, address, now);
        session.connected = connected;
        // As CLAIM lets it: a session never connected stays free for a socket without the
        // cookie (Faye opens its WebSocket before the handshake), on this process as on the one
        // that made it.
        session.claimed = connected;
        Some(self.sessions.insert(session))
    }

    fn lookup(&self, id: &Id, browser: Option<&Id>, caller: Caller) -> Result<SessionKey, Lookup> {
        let key = self.sessions.key_of(id).ok_or(Lookup::Unknown)?;
        let session = self.session(key);
        if session.socket.is_some() && session.socket == caller.socket() {
            return Ok(key);
        }
        if browser == Some(&session.browser) {
            return Ok(key);
        }
        // Trust waives the cookie, never another socket's hold on a session.
        if session.socket.is_some() {
            return Err(Lookup::OtherSocket);
        }
        let fresh = !session.claimed && caller != Caller::Http;
        if self.config.trust_client_session || fresh {
            return Ok(key);
        }
        Err(Lookup::WrongBrowser)
    }

    fn key_of(&self, id: &Id) -> Option<SessionKey> {
        self.sessions.key_of(id)
    }

    fn remove(&mut self, key: SessionKey, reason: RemoveReason, effects: &mut Effects) {
        let ended = match reason {
            RemoveReason::Disconnected => Some(HoldEnd::Disconnected),
            RemoveReason::Moved => Some(HoldEnd::Moved),
            RemoveReason::Expired | RemoveReason::Removed => None,
        };
        if let (Some(how), Some(token)) = (ended, self.session(key).held) {
            self.holds.ended(token, how);
        }
        self.release_held(key, effects);
        let Some(session) = self.sessions.remove(key) else {
            return;
        };
        self.quotas.release(&session.browser, session.address);
        self.on_sockets -= usize::from(session.socket.is_some());
        for name in &session.subscriptions {
            self.index.unsubscribe(name, key);
        }
        if reason != RemoveReason::Moved {
            self.sessions_removed += 1;
            let by = match reason {
                RemoveReason::Disconnected => 0,
                RemoveReason::Expired => 1,
                _ => 2,
            };
            self.removed_by[by] += 1;
            effects
                .events
                .push(Event::SessionRemoved(session.client_id, reason));
        }
    }

    fn sweep(&mut self, now: Instant, effects: &mut Effects) -> bool {
        let mut looked = 0;
        let mut removed = 0;
        while self.sweep_cursor < self.sessions.slot_count() {
            if looked == SWEEP_LOOKS || removed == SWEEP_REMOVALS {
                return false;
            }
            let key = self.sweep_cursor as SessionKey;
            self.sweep_cursor += 1;
            looked += 1;
            let expired = self
                .sessions
                .slot(key)
                .and_then(|session| session.deadline)
                .is_some_and(|deadline| deadline <= now);
            if expired {
                self.remove(key, RemoveReason::Expired, effects);
                removed += 1;
            }
        }
        self.sweep_cursor = 0;
        self.history.sweep(now);
        true
    }

    fn session_info(&self, key: SessionKey) -> SessionInfo {
        let session = self.session(key);
        let mut subscriptions: Vec<String> = session
            .subscriptions
            .iter()
            .map(|s| s.to_string())
            .collect();
        subscriptions.sort_unstable();
        SessionInfo {
            queued: session.queued(),
            dropped: session.dropped,
            subscriptions,
            browser: session.browser,
            ack: session.ack.is_some(),
            connected: session.connected,
        }
    }

    fn stats(&self) -> Stats {
        // Counts kept as they change: no pass over the sessions, however many there are.
        Stats {
            sessions_websocket: self.on_sockets,
            subscriptions: self.index.subscription_count(),
            sessions: self.sessions.len(),
            sessions_created: self.sessions_created,
            sessions_removed: self.sessions_removed,
            sessions_disconnected: self.removed_by[0],
            sessions_expired: self.removed_by[1],
            sessions_ended_by_server: self.removed_by[2],
            channels: self.index.channel_count(),
            published: self.published,
            delivered: self.delivered,
            dropped: self.dropped,
            history_channels: self.history.stats().0,
            history_messages: self.history.stats().1,
            history_oldest_id: self.history.oldest(),
        }
    }

    fn count_error(&mut self, error: &str) {
        *self.errors.entry(kind_of(error)).or_insert(0) += 1;
    }

    fn subscribe_limit(&self, key: SessionKey, names: &[&str]) -> Option<SubscribeLimit> {
        let subscribed = &self.session(key).subscriptions;
        let room = self
            .config
            .max_subscriptions_per_session
            .saturating_sub(subscribed.len());
        let mut fresh = FxHashSet::default();
        let mut new_channels = 0;
        for &name in names {
            if subscribed.contains(name) || !fresh.insert(name) {
                continue;
            }
            if fresh.len() > room {
                return Some(SubscribeLimit::Subscriptions);
            }
            if !self.index.contains(name) {
                new_channels += 1;
            }
        }
        let channels = self.index.channel_count() + new_channels;
        (channels > self.config.max_channels).then_some(SubscribeLimit::Channels)
    }

    fn subscribe(&mut self, key: SessionKey, name: &str) -> bool {
        let added = self.index.subscribe(name, key);
        if added {
            self.session_mut(key).subscriptions.insert(name.into());
        }
        added
    }

    fn unsubscribe(&mut self, key: SessionKey, name: &str) -> bool {
        let removed = self.index.unsubscribe(name, key);
        if removed {
            let subscriptions = &mut self.session_mut(key).subscriptions;
            subscriptions.remove(name);
            subscriptions.shrink_if_sparse();
        }
        removed
    }

    fn publish_from(
        &mut self,
        channel: &str,
        message: Shared,
        publisher: Option<SessionKey>,
        effects: &mut Effects,
    ) -> usize {
        let excluded = publisher.filter(|_| !self.config.broadcast_to_publisher);
        if self.config.relay_publishes {
            let excluded = excluded.map(|key| self.session(key).client_id);
            effects.relayed.push(Relayed {
                channel: channel.into(),
                message,
                excluded,
            });
            return 0;
        }
        self.fan_out(channel, message, excluded, effects)
    }

    fn fan_out(
        &mut self,
        channel: &str,
        message: Shared,
        excluded: Option<SessionKey>,
        effects: &mut Effects,
    ) -> usize {
        debug_assert_eq!(channel::classify(channel), Some(ChannelKind::Broadcast));
        let started = Instant::now();
        self.publish_seq += 1;
        self.published += 1;
        let seq = self.publish_seq;
        let mut targets = Vec::new();
        let sessions = &mut self.sessions;
        self.index.for_each_match(channel, |key| {
            if Some(key) == excluded {
                return;
            }
            if let Some(session) = sessions.slot_mut(key) {
                if session.last_publish != seq {
                    session.last_publish = seq;
                    targets.push(key);
                }
            }
        });
        for &key in &targets {
            self.deliver(key, Arc::clone(&message), effects);
        }
        self.fan_outs.record(started.elapsed());
        targets.len()
    }

    fn deliver(&mut self, key: SessionKey, message: Shared, effects: &mut Effects) {
        let capacity = self.config.queue_capacity;
        let session = self.sessions.get_mut(key);
        if let Enqueued::DroppedOldest = session.enqueue(message, capacity) {
            self.dropped += 1;
        }
        if let Some(marks) = &mut self.marks {
            marks.queued(key, session);
        }
        self.delivered += 1;
        if session.woken {
            return;
        }
        if session.socket.is_some() && !session.connect_only {
            session.woken = true;
            effects.push.push(session.client_id);
        } else if session.held.is_some() {
            session.woken = true;
            effects.wake.push(session.client_id);
        }
    }

    fn broadcast_message(&mut self, channel: &str, data: &str, now: Instant) -> Shared {
        self.history.message(channel, data, now)
    }

    fn replay(
        &mut self,
        channel: &str,
        from: ReplayFrom,
        now: Instant,
    ) -> Result<Vec<Shared>, ReplayRefused> {
        self.history.replay(channel, from, now)
    }

    fn replayed_undelivered(&self, key: SessionKey) -> usize {
        self.session(key).replay_allowance
    }

    fn deliver_replay(&mut self, key: SessionKey, messages: Vec<Shared>, effects: &mut Effects) {
        self.sessions.get_mut(key).replay_allowance += messages.len();
        for message in messages {
            self.deliver(key, message, effects);
        }
    }

    fn enable_ack(&mut self, key: SessionKey) {
        let session = self.session_mut(key);
        session.ack = Some(AckState::default());
        session.connect_only = true;
    }

    fn acknowledge(&mut self, key: SessionKey, batch: u64) {
        if let Some(ack) = self.session_mut(key).ack.as_mut() {
            ack.acknowledge(batch);
        }
    }

    fn first_connect(&mut self, key: SessionKey) -> bool {
        let session = self.session_mut(key);
        session.claimed = true;
        !std::mem::replace(&mut session.connected, true)
    }

    fn has_pending(&self, key: SessionKey) -> bool {
        self.session(key).has_pending()
    }

    fn browser_at_limit(&self, key: SessionKey) -> bool {
        let limit = self.config.max_sessions_per_browser;
        self.holds.at_limit(&self.session(key).browser, limit)
    }

    fn hold(&mut self, key: SessionKey, counted: bool, effects: &mut Effects) -> u64 {
        self.release_held(key, effects);
        let token = self.holds.next_token();
        let session = self.sessions.get_mut(key);
        session.held = Some(token);
        session.held_counted = counted;
        session.woken = false;
        session.deadline = None;
        if counted {
            self.holds.count(session.browser);
        }
        token
    }

    fn release_held(&mut self, key: SessionKey, effects: &mut Effects) {
        if self.clear_held(key) {
            effects.release.push(self.session(key).client_id);
        }
    }

    fn end_hold(&mut self, id: &Id, token: u64, now: Instant) -> Option<(SessionKey, bool)> {
        let key = self.key_of(id)?;
        let current = self.session(key).held == Some(token);
        if current {
            self.clear_held(key);
            self.session_mut(key).woken = false;
            self.touch(key, now);
        }
        Some((key, current))
    }

    fn take_ended_hold(&mut self, token: u64) -> Option<HoldEnd> {
        self.holds.take_ended(token)
    }

    fn touch(&mut self, key: SessionKey, now: Instant) {
        let expires = now + self.config.interval + self.config.max_interval;
        self.session_mut(key).deadline = Some(expires);
    }

    fn drain_for_connect(&mut self, key: SessionKey, out: &mut Body) -> Option<u64> {
        let capacity = self.config.queue_capacity;
        let session = self.sessions.get_mut(key);
        let (batch, dropped) = session.drain_for_connect(out, capacity);
        if let Some(marks) = &mut self.marks {
            marks.drained(key, session);
        }
        self.dropped += dropped;
        batch
    }

    fn ack_batch(&self, key: SessionKey) -> Option<u64> {
        self.session(key).ack.as_ref().map(AckState::batch)
    }

    fn ack_report(&mut self, key: SessionKey) -> Option<(Option<u64>, Option<u64>)> {
        self.session_mut(key).ack.as_mut().map(AckState::report)
    }

    fn continue_ack_after(&mut self, key: SessionKey, batch: u64) {
        if let Some(ack) = self.session_mut(key).ack.as_mut() {
            ack.continue_after(batch);
        }
    }

    fn set_bound(&mut self, key: SessionKey, socket: Option<SocketId>, effects: &mut Effects) {
        let session = self.sessions.get_mut(key);
        let was_bound = session.socket.is_some();
        session.socket = socket;
        self.on_sockets = self.on_sockets + usize::from(socket.is_some()) - usize::from(was_bound);
        if socket.is_some() {
            session.claimed = true;
            effects.bound.push(session.client_id);
        }
    }

    fn drain_to_push(&mut self, key: SessionKey, socket: Option<SocketId>, out: &mut Body) -> bool {
        let session = self.sessions.get_mut(key);
        if socket.is_some() && session.socket != socket {
            return false;
        }
        let drained = session.drain_to_push(out);
        if drained {
            if let Some(marks) = &mut self.marks {
                marks.drained(key, session);
            }
        }
        drained
    }

    fn unbind(&mut self, id: &Id, socket: SocketId, now: Instant, effects: &mut Effects) {
        let Some(key) = self.key_of(id) else {
            return;
        };
        // The session moved to another socket, or to HTTP, meanwhile: not this socket's now.
        if self.session(key).socket != Some(socket) {
            return;
        }
        self.release_held(key, effects);
        let session = self.sessions.get_mut(key);
        session.socket = None;
        session.woken = false;
        self.on_sockets -= 1;
        self.touch(key, now);
    }

    fn release_all(&mut self, effects: &mut Effects) {
        let keys: Vec<SessionKey> = self.sessions.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.release_held(key, effects);
        }
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
