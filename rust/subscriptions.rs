//! The subscription index: which sessions listen to which channels, exact and wildcard.
//! Matching a channel costs one lookup per path segment, however many patterns exist.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::channel::{self, Pattern};

/// Sessions are named by their slot in the engine's session table.
pub type SessionKey = u32;

type Subscribers = FxHashSet<SessionKey>;

#[derive(Default)]
pub struct SubscriptionIndex {
    exact: FxHashMap<Box<str>, Subscribers>,
    one_segment: FxHashMap<Box<str>, Subscribers>,
    any_depth: FxHashMap<Box<str>, Subscribers>,
    subscriber_capacity: usize,
}

impl SubscriptionIndex {
    /// `subscriber_capacity` pre-sizes each channel's subscriber set.
    pub fn new(channel_capacity: usize, subscriber_capacity: usize) -> Self {
        Self {
            exact: FxHashMap::with_capacity_and_hasher(channel_capacity, Default::default()),
            one_segment: FxHashMap::default(),
            any_depth: FxHashMap::default(),
            subscriber_capacity,
        }
    }

    fn table<'n>(&mut self, name: &'n str) -> (&mut FxHashMap<Box<str>, Subscribers>, &'n str) {
        match channel::pattern(name) {
            Pattern::Exact(key) => (&mut self.exact, key),
            Pattern::OneSegment(key) => (&mut self.one_segment, key),
            Pattern::AnyDepth(key) => (&mut self.any_depth, key),
        }
    }

    /// Adds a subscription to a valid channel or pattern; true if it is new.
    pub fn subscribe(&mut self, name: &str, session: SessionKey) -> bool {
        let capacity = self.subscriber_capacity;
        let (table, key) = self.table(name);
        if let Some(set) = table.get_mut(key) {
            return set.insert(session);
        }
        let mut set = FxHashSet::with_capacity_and_hasher(capacity, Default::default());
        set.insert(session);
        table.insert(key.into(), set);
        true
    }

    /// Removes a subscription; true if it existed. Empty sets are dropped so the index does not
    /// keep every channel ever used.
    pub fn unsubscribe(&mut self, name: &str, session: SessionKey) -> bool {
        let (table, key) = self.table(name);
        let Some(set) = table.get_mut(key) else {
            return false;
        };
        let removed = set.remove(&session);
        if set.is_empty() {
            table.remove(key);
        }
        removed
    }

    /// Calls `deliver` for every subscriber of `channel`, through any pattern. A session matched
    /// by several patterns is passed once per set; the caller deduplicates (see `Engine`).
    pub fn for_each_match(&self, channel: &str, mut deliver: impl FnMut(SessionKey)) {
        let mut visit = |set: Option<&Subscribers>| {
            if let Some(set) = set {
                set.iter().copied().for_each(&mut deliver);
            }
        };
        visit(self.exact.get(channel));
        visit(self.one_segment.get(channel::parent(channel)));
        if !self.any_depth.is_empty() {
            for ancestor in channel::ancestors(channel) {
                visit(self.any_depth.get(ancestor));
            }
        }
    }

    /// How many distinct channels and patterns have at least one subscriber.
    pub fn channel_count(&self) -> usize {
        self.exact.len() + self.one_segment.len() + self.any_depth.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(index: &SubscriptionIndex, channel: &str) -> Vec<SessionKey> {
        let mut out = Vec::new();
        index.for_each_match(channel, |k| out.push(k));
        out.sort_unstable();
        out
    }

    #[test]
    fn exact_and_wildcards() {
        let mut index = SubscriptionIndex::new(0, 0);
        index.subscribe("/a/b", 1);
        index.subscribe("/a/*", 2);
        index.subscribe("/a/**", 3);
        index.subscribe("/**", 4);
        index.subscribe("/*", 5);
        assert_eq!(matches(&index, "/a/b"), vec![1, 2, 3, 4]);
        assert_eq!(matches(&index, "/a/b/c"), vec![3, 4]);
        assert_eq!(matches(&index, "/a"), vec![4, 5]);
        assert_eq!(matches(&index, "/b/c"), vec![4]);
    }

    #[test]
    fn unsubscribe_removes_and_drops_empty_sets() {
        let mut index = SubscriptionIndex::new(0, 0);
        assert!(index.subscribe("/a/*", 1));
        assert!(!index.subscribe("/a/*", 1));
        assert_eq!(index.channel_count(), 1);
        assert!(index.unsubscribe("/a/*", 1));
        assert!(!index.unsubscribe("/a/*", 1));
        assert_eq!(index.channel_count(), 0);
        assert!(matches(&index, "/a/b").is_empty());
    }
}
