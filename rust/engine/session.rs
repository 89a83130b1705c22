//! One session of the in-memory engine: who it belongs to, what it listens to, its bounded
//! queue of messages and the state of its connects.

use std::collections::VecDeque;
use std::time::Instant;

use rustc_hash::FxHashSet;

use super::marks::SessionMark;
use super::quotas::Address;
use super::SocketId;
use crate::ack::AckState;
use crate::client_id::Id;
use crate::json::Body;
use crate::message::Shared;

pub struct Session {
    pub client_id: Id,
    /// The `BAYEUX_BROWSER` cookie value the session was created with.
    pub browser: Id,
    /// The client's address, as its sessions are counted against their limit.
    pub address: Option<Address>,
    /// Channel names and patterns, as subscribed: a set, so that subscribing and unsubscribing
    /// cost the same however many the session has.
    pub subscriptions: FxHashSet<Box<str>>,
    queue: VecDeque<Shared>,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
    /// The token of the `/meta/connect` being held for this session, if any.
    pub held: Option<u64>,
    /// The WebSocket the session is bound to: messages are pushed as they arrive, not only in
    /// connect replies, and only that socket may use the session without its cookie.
    pub socket: Option<SocketId>,
    /// Set once a socket or a connect has used the session: until then, a session made by a
    /// handshake over HTTP goes to the first socket that asks for it.
    pub claimed: bool,
    /// Set once the transport has been told that messages are waiting, so a burst of
    /// messages wakes it once; cleared when the queue is drained.
    pub woken: bool,
    /// Whether any `/meta/connect` has been answered yet; the first one is answered at once.
    pub connected: bool,
    /// When the session expires unless a connect arrives; `None` while a connect is held.
    pub deadline: Option<Instant>,
    /// The id of the last publish that reached this session: deduplicates wildcard matches.
    pub last_publish: u64,
    /// Set when the client negotiated the ack extension.
    pub ack: Option<AckState>,
    /// Messages go only in `/meta/connect` replies, never pushed on their own (the ack
    /// extension and `meta_connect_deliver_only` need this).
    pub connect_only: bool,
    /// Whether the held connect counts against its browser's limit of held long-polls.
    pub held_counted: bool,
    /// Where its undelivered messages begin, for a cluster node (see `marks.rs`).
    pub mark: SessionMark,
    /// How far its queue may hold more than its bound until its next drain: the messages of
    /// a replay (see history.rs), which must all arrive.
    pub replay_allowance: usize,
}

/// What `enqueue` did.
pub enum Enqueued {
    Queued,
    /// The oldest message was dropped to make room.
    DroppedOldest,
}

impl Session {
    pub fn new(client_id: Id, browser: Id, deadline: Instant) -> Self {
        Self {
            client_id,
            browser,
            address: None,
            subscriptions: FxHashSet::default(),
            queue: VecDeque::new(),
            dropped: 0,
            held: None,
            socket: None,
            claimed: false,
            woken: false,
            connected: false,
            deadline: Some(deadline),
            last_publish: 0,
            ack: None,
            connect_only: false,
            held_counted: false,
            mark: SessionMark::default(),
            replay_allowance: 0,
        }
    }

    /// Appends a message; when the queue already holds `capacity` messages, the oldest one is
    /// dropped and counted, so a slow client sees the newest messages and never grows memory.
    pub fn enqueue(&mut self, message: Shared, capacity: usize) -> Enqueued {
        let mut result = Enqueued::Queued;
        if self.queue.len() >= capacity.max(1) + self.replay_allowance {
            self.queue.pop_front();
            self.dropped += 1;
            result = Enqueued::DroppedOldest;
        }
        self.queue.push_back(message);
        result
    }

    pub fn has_messages(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether a connect now would carry anything: queued messages, or unacknowledged ones to
    /// send again.
    pub fn has_pending(&self) -> bool {
        self.has_messages() || self.ack.as_ref().is_some_and(AckState::has_unacked)
    }

    /// Takes every queued message, in order.
    pub fn drain(&mut self) -> impl Iterator<Item = Shared> + '_ {
        self.woken = false;
        self.replay_allowance = 0;
        self.queue.drain(..)
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Writes what a connect reply carries, in order; with the ack extension that is every
    /// unacknowledged message and then the new ones, as one batch whose id is returned, with
    /// how many unacknowledged messages were dropped beyond `capacity`.
    pub fn drain_for_connect(&mut self, out: &mut Body, capacity: usize) -> (Option<u64>, u64) {
        let Some(mut ack) = self.ack.take() else {
            self.drain_into(out);
            return (None, 0);
        };
        // A replay is never cut, nor the messages unacknowledged when it came.
        let capacity = capacity + self.replay_allowance;
        let (batch, messages, dropped) = ack.next_batch(self.drain(), capacity);
        self.ack = Some(ack);
        for message in &messages {
            out.push(message);
        }
        self.dropped += dropped;
        (Some(batch), dropped)
    }

    /// Writes the queued messages for a socket to push; false when there are none or the
    /// session takes messages only in connect replies. Either way it may be woken again.
    pub fn drain_to_push(&mut self, out: &mut Body) -> bool {
        self.woken = false;
        if !self.has_messages() || self.connect_only {
            return false;
        }
        self.drain_into(out);
        true
    }

    fn drain_into(&mut self, out: &mut Body) {
        for message in self.drain() {
            out.push(&message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let mut session = Session::new(Id::generate(), Id::generate(), Instant::now());
        for i in 0..5u8 {
            session.enqueue(Arc::from(vec![i]), 3);
        }
        assert_eq!(session.dropped, 2);
        let left: Vec<u8> = session.drain().map(|m| m[0]).collect();
        assert_eq!(left, vec![2, 3, 4]);
        assert!(!session.has_messages());
    }
}
