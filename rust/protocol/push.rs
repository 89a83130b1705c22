//! Draining a session's queue for a transport that pushes (a WebSocket), outside any connect.

use crate::client_id::Id;
use crate::engine::Engine;
use crate::json::Body;

/// Every message queued for a session, as one JSON array; `None` when there is nothing to
/// send, or the session takes messages only in connect replies.
pub fn drain_queue<E: Engine + ?Sized>(engine: &mut E, id: &Id) -> Option<Vec<u8>> {
    let key = engine.key_of(id)?;
    let mut out = Body::new();
    engine.drain_to_push(key, &mut out).then(|| out.finish())
}
