//! The subscription index: which sessions listen to which channels, exact and wildcard.
//! Matching a channel costs two lookups, and one more per ancestor no deeper than the deepest
//! `/**` pattern subscribed: a publish to a deep channel never hashes every prefix of it.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::channel::{self, Pattern};
use crate::shrink::ShrinkIfSparse;

/// Sessions are named by their slot in the engine's session table.
pub type SessionKey = u32;

type Subscribers = FxHashSet<SessionKey>;

#[derive(Default)]
pub struct SubscriptionIndex {
    exact: FxHashMap<Box<str>, Subscribers>,
    one_segment: FxHashMap<Box<str>, Subscribers>,
    any_depth: FxHashMap<Box<str>, Subscribers>,
    /// How many `/**` patterns are keyed by a prefix of each number of segments (`/**` by 0,
    /// `/a/b/**` by 2): matching looks at ancestors no deeper than the deepest of them.
    any_depth_by_segments: Vec<usize>,
    subscriber_capacity: usize,
    /// Subscriptions of all sessions, kept as they change so that counting them costs nothing.
    subscriptions: usize,
}

impl SubscriptionIndex {
    /// `subscriber_capacity` pre-sizes each channel's subscriber set.
    pub fn new(channel_capacity: usize, subscriber_capacity: usize) -> Self {
        Self {
            exact: FxHashMap::with_capacity_and_hasher(channel_capacity, Default::default()),
            one_segment: FxHashMap::default(),
            any_depth: FxHashMap::default(),
            any_depth_by_segments: Vec::new(),
            subscriber_capacity,
            subscriptions: 0,
        }
    }

    fn table<'n>(&mut self, name: &'n str) -> (&mut FxHashMap<Box<str>, Subscribers>, &'n str) {
        match channel::pattern(name) {
            Pattern::Exact(key) => (&mut self.exact, key),
            Pattern::OneSegment(key) => (&mut self.one_segment, key),
            Pattern::AnyDepth(key) => (&mut self.any_depth, key),
        }
    }

    /// Whether a channel or pattern has at least one subscriber.
    pub fn contains(&self, name: &str) -> bool {
        match channel::pattern(name) {
            Pattern::Exact(key) => self.exact.contains_key(key),
            Pattern::OneSegment(key) => self.one_segment.contains_key(key),
            Pattern::AnyDepth(key) => self.any_depth.contains_key(key),
        }
    }

    /// Adds a subscription to a valid channel or pattern; true if it is new.
    pub fn subscribe(&mut self, name: &str, session: SessionKey) -> bool {
        let capacity = self.subscriber_capacity;
        let (table, key) = self.table(name);
        if let Some(set) = table.get_mut(key) {
            let added = set.insert(session);
            self.subscriptions += usize::from(added);
            return added;
        }
        let mut set = FxHashSet::with_capacity_and_hasher(capacity, Default::default());
        set.insert(session);
        table.insert(key.into(), set);
        self.subscriptions += 1;
        if let Pattern::AnyDepth(key) = channel::pattern(name) {
            let depth = segments(key);
            if self.any_depth_by_segments.len() <= depth {
                self.any_depth_by_segments.resize(depth + 1, 0);
            }
            self.any_depth_by_segments[depth] += 1;
        }
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
        set.shrink_if_sparse();
        if set.is_empty() {
            table.remove(key);
            table.shrink_if_sparse();
            if let Pattern::AnyDepth(key) = channel::pattern(name) {
                self.forget_any_depth(segments(key));
            }
        }
        self.subscriptions -= usize::from(removed);
        removed
    }

    fn forget_any_depth(&mut self, depth: usize) {
        let counts = &mut self.any_depth_by_segments;
        counts[depth] -= 1;
        while counts.last() == Some(&0) {
            counts.pop();
        }
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
        // A `/**` pattern keyed by a prefix of n segments can only be found among the first
        // n + 1 ancestors (the root has none).
        let deepest = self.any_depth_by_segments.len();
        for ancestor in channel::ancestors(channel).take(deepest) {
            visit(self.any_depth.get(ancestor));
        }
    }

    /// Subscriptions of all sessions: each (session, channel or pattern) once.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }

    /// How many distinct channels and patterns have at least one subscriber.
    pub fn channel_count(&self) -> usize {
        self.exact.len() + self.one_segment.len() + self.any_depth.len()
    }
}

/// The segments of a pattern's key: `/a/b` has 2, the root (empty) none.
fn segments(key: &str) -> usize {
    key.bytes().filter(|&b| b == b'/').count()
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
    fn the_index_gives_memory_back_once_a_flood_of_channels_is_gone() {
        let mut index = SubscriptionIndex::new(0, 0);
        let names: Vec<String> = (0..10_000).map(|i| format!("/flood/{i}")).collect();
        for name in &names {
            index.subscribe(name, 1);
        }
        for session in 2..10_000 {
            index.subscribe("/crowded", session);
        }
        for name in &names {
            index.unsubscribe(name, 1);
        }
        for session in 2..9_990 {
            index.unsubscribe("/crowded", session);
        }
        assert!(index.exact.capacity() < 100, "{}", index.exact.capacity());
        assert!(index.exact["/crowded"].capacity() < 100);
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

    #[test]
    fn only_ancestors_as_deep_as_a_subscribed_any_depth_pattern_are_looked_at() {
        let mut index = SubscriptionIndex::new(0, 0);
        index.subscribe("/a/b/**", 1);
        index.subscribe("/**", 2);
        assert_eq!(index.any_depth_by_segments, vec![1, 0, 1]);
        assert_eq!(matches(&index, "/a/b/c/d"), vec![1, 2]);
        assert_eq!(matches(&index, "/a/c/d"), vec![2]);
        index.unsubscribe("/a/b/**", 1);
        assert_eq!(index.any_depth_by_segments, vec![1]);
        assert_eq!(matches(&index, "/a/b/c/d"), vec![2]);
        index.unsubscribe("/**", 2);
        assert!(index.any_depth_by_segments.is_empty());
        assert!(matches(&index, "/a/b/c/d").is_empty());
    }

    #[test]
    fn a_publish_to_a_very_deep_channel_costs_no_more_than_the_patterns_need() {
        // Hashing every ancestor of a name of n segments costs n * n / 2 bytes: with n = 10^6
        // that is 10^12, hours. Only the ancestors a pattern may key are looked at now.
        let mut index = SubscriptionIndex::new(0, 0);
        index.subscribe("/**", 1);
        index.subscribe("/a/**", 2);
        let deep = "/a".repeat(1_000_000);
        for _ in 0..100 {
            assert_eq!(matches(&index, &deep), vec![1, 2]);
        }
    }

    #[test]
    fn contains_looks_in_the_pattern_s_own_table() {
        let mut index = SubscriptionIndex::new(0, 0);
        index.subscribe("/a/*", 1);
        assert!(index.contains("/a/*"));
        assert!(!index.contains("/a"));
        assert!(!index.contains("/a/**"));
    }
}
