//! The in-memory engine's book of held connects: their tokens, how many each browser holds
//! (for `max_sessions_per_browser`), and which ended with their session (disconnected by the
//! client, or moved to another process).

use rustc_hash::FxHashMap;

use super::quotas::Counts;

use crate::client_id::Id;

#[derive(Default)]
pub struct Holds {
    seq: u64,
    per_browser: Counts<Id>,
    /// Held connects whose session ended without being lost (see `HoldEnd`): answered as
    /// such rather than with a 402. Each entry lives until its connect completes.
    ended: FxHashMap<u64, HoldEnd>,
}

/// Why a held connect's session is gone, when that is no error for its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldEnd {
    /// The client disconnected the session: answered with `reconnect: "none"`.
    Disconnected,
    /// The session moved to another process of a cluster: answered as a plain connect reply,
    /// and the client's next connect finds the session there.
    Moved,
}

impl Holds {
    /// A token no earlier hold had.
    pub fn next_token(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A held long-poll of `browser` started.
    pub fn count(&mut self, browser: Id) {
        self.per_browser.add(browser);
    }

    /// A held long-poll of `browser` ended.
    pub fn uncount(&mut self, browser: &Id) {
        self.per_browser.remove(browser);
    }

    /// Whether `browser` holds as many long-polls as `limit` allows; negative: no limit.
    pub fn at_limit(&self, browser: &Id, limit: i64) -> bool {
        let held = self.per_browser.get(browser);
        limit >= 0 && i64::from(held) >= limit
    }

    /// The session of the held connect `token` ended, for `how`.
    pub fn ended(&mut self, token: u64, how: HoldEnd) {
        self.ended.insert(token, how);
    }

    /// How the session of the held connect `token` ended, if it did (once per token).
    pub fn take_ended(&mut self, token: u64) -> Option<HoldEnd> {
        self.ended.remove(&token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_browser_against_a_limit() {
        let mut holds = Holds::default();
        let browser = Id::generate();
        assert!(!holds.at_limit(&browser, 1));
        holds.count(browser);
        assert!(holds.at_limit(&browser, 1));
        assert!(!holds.at_limit(&browser, -1), "negative means no limit");
        holds.uncount(&browser);
        assert!(!holds.at_limit(&browser, 1));
        assert!(
            holds.per_browser.is_empty(),
            "a browser at zero is forgotten"
        );
    }

    #[test]
    fn an_ended_token_is_taken_once() {
        let mut holds = Holds::default();
        let token = holds.next_token();
        assert_ne!(token, holds.next_token());
        holds.ended(token, HoldEnd::Moved);
        assert_eq!(holds.take_ended(token), Some(HoldEnd::Moved));
        assert_eq!(holds.take_ended(token), None);
    }
}
