//! The in-memory engine's book of held connects: their tokens, how many each browser holds
//! (for `max_sessions_per_browser`), and which ended because their client disconnected.

use rustc_hash::FxHashSet;

use super::quotas::Counts;

use crate::client_id::Id;

#[derive(Default)]
pub struct Holds {
    seq: u64,
    per_browser: Counts<Id>,
    /// Held connects whose session the client itself disconnected: answered with
    /// `reconnect: "none"` rather than a 402. Each entry lives until its connect completes.
    disconnected: FxHashSet<u64>,
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

    /// The session of the held connect `token` was disconnected by its client.
    pub fn disconnected(&mut self, token: u64) {
        self.disconnected.insert(token);
    }

    /// Whether the held connect `token` ended because its client disconnected (once per token).
    pub fn take_disconnected(&mut self, token: u64) -> bool {
        self.disconnected.remove(&token)
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
    fn a_disconnected_token_is_taken_once() {
        let mut holds = Holds::default();
        let token = holds.next_token();
        assert_ne!(token, holds.next_token());
        holds.disconnected(token);
        assert!(holds.take_disconnected(token));
        assert!(!holds.take_disconnected(token));
    }
}
