//! The in-memory engine's session table: sessions in reusable slots, so that the subscription
//! index names them by a small number, and an index from client id to slot.

use rustc_hash::FxHashMap;

use super::session::Session;
use crate::client_id::Id;
use crate::subscriptions::SessionKey;

pub struct SessionTable {
    slots: Vec<Option<Session>>,
    free: Vec<SessionKey>,
    ids: FxHashMap<Id, SessionKey>,
}

impl SessionTable {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            slots: Vec::with_capacity(capacity),
            free: Vec::new(),
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
        let key = match self.free.pop() {
            Some(key) => {
                self.slots[key as usize] = Some(session);
                key
            }
            None => {
                self.slots.push(Some(session));
                (self.slots.len() - 1) as SessionKey
            }
        };
        self.ids.insert(id, key);
        key
    }

    pub fn remove(&mut self, key: SessionKey) -> Option<Session> {
        let session = self.slots[key as usize].take()?;
        self.ids.remove(&session.client_id);
        self.free.push(key);
        Some(session)
    }

    pub fn key_of(&self, id: &Id) -> Option<SessionKey> {
        self.ids.get(id).copied()
    }

    pub fn get(&self, key: SessionKey) -> &Session {
        self.slots[key as usize]
            .as_ref()
            .expect("a live session key")
    }

    pub fn get_mut(&mut self, key: SessionKey) -> &mut Session {
        self.slots[key as usize]
            .as_mut()
            .expect("a live session key")
    }

    /// The session in a slot, if the slot is in use (for the subscription index's matches).
    pub fn slot_mut(&mut self, key: SessionKey) -> Option<&mut Session> {
        self.slots[key as usize].as_mut()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Every live session's key, with the session.
    pub fn iter(&self) -> impl Iterator<Item = (SessionKey, &Session)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(key, slot)| Some((key as SessionKey, slot.as_ref()?)))
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
}
