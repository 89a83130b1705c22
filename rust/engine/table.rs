//! The in-memory engine's session table: sessions in reusable slots, so that the subscription
//! index names them by a small number, and an index from client id to slot.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use super::quotas::shrink_if_sparse;
use super::session::Session;
use crate::client_id::Id;
use crate::subscriptions::SessionKey;

/// Sessions are boxed so that an empty slot costs a pointer, not a whole session: after a
/// flood of sessions has expired, the slots left behind hold little.
pub struct SessionTable {
    slots: Vec<Option<Box<Session>>>,
    /// Free slots, lowest first, so that live sessions gather at the front and the tail can
    /// be given back. Slots past the end of `slots` (dropped with the tail) may linger here
    /// until the next compaction; they are never used.
    free: BinaryHeap<Reverse<SessionKey>>,
    ids: FxHashMap<Id, SessionKey>,
}

impl SessionTable {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            slots: Vec::with_capacity(capacity),
            free: BinaryHeap::new(),
            ids: FxHashMap::with_capacity_and_hasher(capacity, Default::default()),
        }
    }

    /// A client id no live session has.
    pub fn fresh_id(&self) -> Id {
        let mut id = Id::generate();
        while self.ids.contains_key(&id) {
            id = Id::generate();
        }
        id
    }

    pub fn insert(&mut self, session: Session) -> SessionKey {
        let id = session.client_id;
        let session = Some(Box::new(session));
        let key = match self.free.pop() {
            Some(Reverse(key)) if (key as usize) < self.slots.len() => {
                self.slots[key as usize] = session;
                key
            }
            lowest => {
                // Either no slot is free, or the lowest free one is past the end: then all are.
                if lowest.is_some() {
                    self.free.clear();
                }
                self.slots.push(session);
                (self.slots.len() - 1) as SessionKey
            }
        };
        self.ids.insert(id, key);
        key
    }

    pub fn remove(&mut self, key: SessionKey) -> Option<Session> {
        let session = self.slots.get_mut(key as usize)?.take()?;
        self.ids.remove(&session.client_id);
        self.free.push(Reverse(key));
        self.give_back_memory();
        Some(*session)
    }

    /// Drops the free slots at the end of the table and returns memory that a flood of
    /// sessions left behind: each slot is dropped once, and the free list is compacted only
    /// after it has doubled past the table, so this costs O(1) per removal.
    fn give_back_memory(&mut self) {
        shrink_if_sparse(&mut self.ids);
        while let Some(None) = self.slots.last() {
            self.slots.pop();
        }
        let len = self.slots.len();
        if self.slots.capacity() > 64 && self.slots.capacity() > 4 * len {
            self.slots.shrink_to(2 * len);
        }
        if self.free.len() > 64 && self.free.len() > 2 * len {
            self.free.retain(|&Reverse(key)| (key as usize) < len);
            self.free.shrink_to(2 * self.free.len());
        }
    }

    /// How many slots there are, live or free (a sweep goes round them in slices).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub fn key_of(&self, id: &Id) -> Option<SessionKey> {
        self.ids.get(id).copied()
    }

    pub fn get(&self, key: SessionKey) -> &Session {
        self.slots[key as usize]
            .as_deref()
            .expect("a live session key")
    }

    pub fn get_mut(&mut self, key: SessionKey) -> &mut Session {
        self.slots[key as usize]
            .as_deref_mut()
            .expect("a live session key")
    }

    /// The session in a slot, if the slot is in use (for the subscription index's matches,
    /// and sweeps).
    pub fn slot(&self, key: SessionKey) -> Option<&Session> {
        self.slots.get(key as usize)?.as_deref()
    }

    /// The session in a slot, if the slot is in use (for the subscription index's matches).
    pub fn slot_mut(&mut self, key: SessionKey) -> Option<&mut Session> {
        self.slots.get_mut(key as usize)?.as_deref_mut()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Every live session's key, with the session.
    pub fn iter(&self) -> impl Iterator<Item = (SessionKey, &Session)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(key, slot)| Some((key as SessionKey, slot.as_deref()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn slots_are_reused_and_ids_follow_them() {
        let mut table = SessionTable::with_capacity(0);
        let session =
            |table: &SessionTable| Session::new(table.fresh_id(), Id::generate(), Instant::now());
        let a = table.insert(session(&table));
        let b = table.insert(session(&table));
        let a_id = table.get(a).client_id;
        assert_eq!(table.key_of(&a_id), Some(a));
        assert!(table.remove(a).is_some());
        assert!(table.remove(a).is_none());
        assert_eq!(table.key_of(&a_id), None);
        let c = table.insert(session(&table));
        assert_eq!(c, a, "a freed slot is used again");
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.iter().map(|(key, _)| key).collect::<Vec<_>>(),
            vec![a, b]
        );
    }

    #[test]
    fn the_table_shrinks_once_a_flood_of_sessions_is_gone() {
        let mut table = SessionTable::with_capacity(0);
        let insert = |table: &mut SessionTable| {
            table.insert(Session::new(
                table.fresh_id(),
                Id::generate(),
                Instant::now(),
            ))
        };
        let keeper = insert(&mut table);
        let flood: Vec<SessionKey> = (0..10_000).map(|_| insert(&mut table)).collect();
        let late = insert(&mut table);
        for &key in &flood {
            table.remove(key);
        }
        assert_eq!(table.len(), 2);
        // The last session still pins the slots before it; they cost a pointer each.
        assert_eq!(table.slot_count(), 10_002);
        table.remove(late);
        assert_eq!(table.slot_count(), 1, "the free tail was dropped");
        assert!(table.slots.capacity() < 1000, "and its memory given back");
        assert!(table.free.len() < 1000, "the free list was compacted");
        assert!(table.ids.capacity() < 1000, "the id index gave memory back");
        assert_eq!(
            table.get(keeper).client_id,
            table.iter().next().unwrap().1.client_id
        );
        let again = insert(&mut table);
        assert_eq!(again, 1, "the lowest free slot is used first");
    }
}
