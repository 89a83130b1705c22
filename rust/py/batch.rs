//! A body split into its messages by the same reader as the protocol (see also `Engine.split`,
//! which the hooked path uses, with the engine's limits).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::config::MAX_DATA_DEPTH;
use crate::json;
use crate::protocol;

/// The messages of a body (a request's, or a reply's), each as its JSON text and whether the
/// protocol can read it as a message (an object nested no deeper than any `max_data_depth`
/// allows, with a usable id and a string channel); `None` when the body is not a batch at all.
#[pyfunction]
pub fn read_batch(py: Python<'_>, body: &[u8]) -> Option<Vec<(Py<PyBytes>, bool)>> {
    let messages = json::split_batch(body).ok()?;
    let read = messages.into_iter().map(|raw| {
        let readable = protocol::read(raw, MAX_DATA_DEPTH).is_ok();
        (PyBytes::new(py, raw.get().as_bytes()).unbind(), readable)
    });
    Some(read.collect())
}
