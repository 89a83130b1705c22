//! A request body split into its messages for the application's hooks, by the same reader as
//! the protocol, so that the hooks see exactly what the core would act on.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::json;
use crate::protocol;

/// The messages of a request body, each as its JSON text and whether the protocol can read it
/// as a message (an object within the depth limit, with a usable id and a string channel);
/// `None` when the body is not a batch at all.
#[pyfunction]
pub fn read_batch(py: Python<'_>, body: &[u8]) -> Option<Vec<(Py<PyBytes>, bool)>> {
    let messages = json::split_batch(body).ok()?;
    let read = messages.into_iter().map(|raw| {
        let readable = protocol::read(raw).is_ok();
        (PyBytes::new(py, raw.get().as_bytes()).unbind(), readable)
    });
    Some(read.collect())
}
