//! Where each session's undelivered messages begin, for a cluster node (see
//! `python/starlette_cometd/cluster/gates.py`): the node tags every message it fans out with a
//! stamp, and asks, once per gate, which sessions' first undelivered stamp changed since it
//! last asked. A session that receives and sends its messages between two gates changes
//! nothing, so a node whose sessions keep up writes nothing per session.

use super::session::Session;
use super::table::SessionTable;
use crate::client_id::Id;
use crate::subscriptions::SessionKey;

/// Off on a single process (`None` in the engine): nothing is tracked there.
#[derive(Default)]
pub struct Marks {
    /// The stamp of the messages queued now (the cluster's log entry being fanned out).
    pub stamp: u64,
    /// Sessions whose first undelivered stamp may have changed since the last report.
    listed: Vec<SessionKey>,
}

/// A session's part: the stamp of its first undelivered message (0: none), the one last
/// reported, and whether it is listed for the next report.
#[derive(Default, Clone, Copy)]
pub struct SessionMark {
    since: u64,
    reported: u64,
    listed: bool,
}

impl Marks {
    /// A message was queued for `session` (at `self.stamp`).
    pub fn queued(&mut self, key: SessionKey, session: &mut Session) {
        if session.ack.is_some() {
            return; // the ack extension records where its client stands by itself
        }
        let mark = &mut session.mark;
        if mark.since == 0 {
            mark.since = self.stamp;
        }
        self.list(key, mark);
    }

    /// `session`'s queue was drained: nothing of it is undelivered now.
    pub fn drained(&mut self, key: SessionKey, session: &mut Session) {
        let mark = &mut session.mark;
        if mark.since != 0 || mark.reported != 0 {
            mark.since = 0;
            self.list(key, mark);
        }
    }

    fn list(&mut self, key: SessionKey, mark: &mut SessionMark) {
        if !mark.listed {
            mark.listed = true;
            self.listed.push(key);
        }
    }

    /// Each session whose first undelivered stamp changed since the last report, with that
    /// stamp (0: all delivered). A listed session that ended since is passed over (its slot
    /// may hold another by now, which then reports its own change, if any).
    pub fn report(&mut self, sessions: &mut SessionTable) -> Vec<(Id, u64)> {
        let mut changed = Vec::new();
        for key in self.listed.drain(..) {
            let Some(session) = sessions.slot_mut(key) else {
                continue;
            };
            let mark = &mut session.mark;
            mark.listed = false;
            if mark.since != mark.reported {
                mark.reported = mark.since;
                changed.push((session.client_id, mark.since));
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn one_session() -> (SessionTable, SessionKey, Id) {
        let mut table = SessionTable::with_capacity(1);
        let id = Id::generate();
        let key = table.insert(Session::new(id, Id::generate(), Instant::now()));
        (table, key, id)
    }

    fn queue(marks: &mut Marks, table: &mut SessionTable, key: SessionKey, stamp: u64) {
        marks.stamp = stamp;
        marks.queued(key, table.get_mut(key));
    }

    #[test]
    fn a_session_that_keeps_up_between_reports_is_not_reported() {
        let (mut table, key, _) = one_session();
        let mut marks = Marks::default();
        queue(&mut marks, &mut table, key, 3);
        marks.drained(key, table.get_mut(key));
        assert!(marks.report(&mut table).is_empty());
    }

    #[test]
    fn the_first_undelivered_stamp_is_reported_once_then_its_delivery() {
        let (mut table, key, id) = one_session();
        let mut marks = Marks::default();
        queue(&mut marks, &mut table, key, 3);
        queue(&mut marks, &mut table, key, 4);
        assert_eq!(marks.report(&mut table), vec![(id, 3)]);
        queue(&mut marks, &mut table, key, 5);
        assert!(marks.report(&mut table).is_empty());
        marks.drained(key, table.get_mut(key));
        assert_eq!(marks.report(&mut table), vec![(id, 0)]);
    }

    #[test]
    fn a_session_ended_before_the_report_is_passed_over() {
        let (mut table, key, _) = one_session();
        let mut marks = Marks::default();
        queue(&mut marks, &mut table, key, 3);
        table.remove(key);
        assert!(marks.report(&mut table).is_empty());
    }
}
