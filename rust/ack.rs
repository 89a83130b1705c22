//! The server side of the clients' ack extension: a session's unacknowledged messages, sent
//! again until the client says it received them.

use std::collections::VecDeque;

use crate::message::Shared;

/// A session's unacknowledged messages: every connect reply carries a batch id; the client
/// acknowledges the last batch it received on its next connect, and whatever it has not
/// acknowledged is sent again, so a dropped reply loses nothing and nothing arrives twice.
#[derive(Debug, Default)]
pub struct AckState {
    batch: u64,
    unacked: VecDeque<Shared>,
    /// The batch the unacknowledged messages were last sent in.
    sent_in: u64,
    /// The batch the client acknowledged last, if it did.
    acked: Option<u64>,
    /// The batch of the last connect reply built and not yet reported (see `report`).
    built: Option<u64>,
}

impl AckState {
    /// The client received every batch up to `batch`.
    pub fn acknowledge(&mut self, batch: u64) {
        self.acked = Some(batch);
        if batch >= self.sent_in {
            self.unacked.clear();
        }
    }

    pub fn has_unacked(&self) -> bool {
        !self.unacked.is_empty()
    }

    /// Starts the next batch: the unacknowledged messages (sent again) and then `fresh`, in
    /// order. Returns the batch id, the messages to send, and how many old ones were dropped
    /// because more than `capacity` were waiting.
    pub fn next_batch(
        &mut self,
        fresh: impl Iterator<Item = Shared>,
        capacity: usize,
    ) -> (u64, Vec<Shared>, u64) {
        self.unacked.extend(fresh);
        let mut dropped = 0;
        while self.unacked.len() > capacity.max(1) {
            self.unacked.pop_front();
            dropped += 1;
        }
        if !self.unacked.is_empty() {
            self.batch += 1;
            self.sent_in = self.batch;
        }
        self.built = Some(self.batch);
        (self.batch, self.unacked.iter().cloned().collect(), dropped)
    }

    pub fn batch(&self) -> u64 {
        self.batch
    }

    /// For a cluster, which records where each batch stands: the batch the client acknowledged
    /// last, and the batch of the connect reply built since the last report, if one was.
    pub fn report(&mut self) -> (Option<u64>, Option<u64>) {
        (self.acked, self.built.take())
    }

    /// Numbers the next batches after `batch`: a session another process served continues
    /// its numbering, so that a batch id the client acknowledges names one batch only.
    pub fn continue_after(&mut self, batch: u64) {
        self.batch = self.batch.max(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn msg(n: u8) -> Shared {
        Arc::from(vec![n])
    }

    #[test]
    fn unacknowledged_messages_are_sent_again_once_then_dropped_when_acknowledged() {
        let mut ack = AckState::default();
        let (b1, sent, _) = ack.next_batch([msg(1), msg(2)].into_iter(), 10);
        assert_eq!((b1, sent.len()), (1, 2));
        // The reply was lost: the client acknowledges only batch 0.
        ack.acknowledge(0);
        let (b2, sent, _) = ack.next_batch([msg(3)].into_iter(), 10);
        assert_eq!(b2, 2);
        assert_eq!(sent.iter().map(|m| m[0]).collect::<Vec<_>>(), vec![1, 2, 3]);
        ack.acknowledge(2);
        assert!(!ack.has_unacked());
        let (b3, sent, _) = ack.next_batch(std::iter::empty(), 10);
        assert_eq!(
            (b3, sent.len()),
            (2, 0),
            "an empty reply keeps the batch id"
        );
    }

    #[test]
    fn reports_each_built_batch_once_and_the_last_acknowledged() {
        let mut ack = AckState::default();
        assert_eq!(ack.report(), (None, None));
        ack.continue_after(7);
        let (batch, _, _) = ack.next_batch([msg(1)].into_iter(), 10);
        assert_eq!(batch, 8, "numbered after the batches sent elsewhere");
        assert_eq!(ack.report(), (None, Some(8)));
        assert_eq!(ack.report(), (None, None), "reported once");
        ack.acknowledge(8);
        let (batch, sent, _) = ack.next_batch(std::iter::empty(), 10);
        assert_eq!((batch, sent.len()), (8, 0));
        assert_eq!(
            ack.report(),
            (Some(8), Some(8)),
            "an empty reply is built too"
        );
    }

    #[test]
    fn more_than_capacity_unacknowledged_drops_the_oldest() {
        let mut ack = AckState::default();
        let (_, sent, dropped) = ack.next_batch((1..=5).map(msg), 3);
        assert_eq!(sent.iter().map(|m| m[0]).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(dropped, 2);
    }
}
