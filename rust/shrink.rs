//! Giving memory back: a hash table keeps the size its busiest moment gave it, so after a flood
//! of sessions or subscriptions is gone the tables are told to shrink.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};

/// Shrinks a table once it holds less than a quarter of what it has room for, to twice what
/// it holds: a table growing and shrinking around one size does not rehash each time, so the
/// cost stays O(1) per removal over time.
pub trait ShrinkIfSparse {
    fn shrink_if_sparse(&mut self);
}

fn sparse(len: usize, capacity: usize) -> bool {
    capacity > 64 && len * 4 < capacity
}

impl<K: Hash + Eq, V, S: BuildHasher> ShrinkIfSparse for HashMap<K, V, S> {
    fn shrink_if_sparse(&mut self) {
        if sparse(self.len(), self.capacity()) {
            self.shrink_to(self.len() * 2);
        }
    }
}

impl<K: Hash + Eq, S: BuildHasher> ShrinkIfSparse for HashSet<K, S> {
    fn shrink_if_sparse(&mut self) {
        if sparse(self.len(), self.capacity()) {
            self.shrink_to(self.len() * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_emptied_after_a_flood_gives_its_memory_back() {
        let mut set: HashSet<u32> = (0..10_000).collect();
        let peak = set.capacity();
        for i in 0..9_990 {
            set.remove(&i);
            set.shrink_if_sparse();
        }
        assert!(set.capacity() < peak / 100, "{} of {peak}", set.capacity());
        assert_eq!(set.len(), 10);
    }
}
