//! Draining a session's queue for a transport that pushes (a WebSocket), outside any connect.

use crate::client_id::Id;
use crate::engine::{Engine, SocketId};
use crate::json::Body;

/// Every message queued for a session, as one JSON array, for `socket` to push; `None` when
/// there is nothing to send, the session takes messages only in connect replies, or it is no
/// longer bound to that socket (when one is named).
pub fn drain_queue<E: Engine + ?Sized>(
    engine: &mut E,
    id: &Id,
    socket: Option<SocketId>,
) -> Option<Vec<u8>> {
    let key = engine.key_of(id)?;
    let mut out = Body::new();
    engine
        .drain_to_push(key, socket, &mut out)
        .then(|| out.finish())
}
