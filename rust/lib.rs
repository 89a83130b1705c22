//! The Rust core of starlette-cometd. This file is a table of contents.

// Names and values.
pub mod channel; // channel names: validate, classify, wildcard patterns
pub mod client_id; // client ids and browser cookies: generate, parse, print
pub mod config; // the engine's settings, and how Python passes them
pub mod errors; // Bayeux error strings and the API's one error enum

// Bytes on the wire.
pub mod json; // reading a batch without copying payloads; writing replies
pub mod message; // a delivered message, serialised once and shared by every queue
pub mod shrink; // hash tables that give memory back after a flood

// State.
pub mod ack; // the ack extension's unacknowledged messages
pub mod engine; // the engine boundary (trait Engine) and the in-memory engine
pub mod history; // channels with a history: ids, retention, replay
pub mod subscriptions; // channel and pattern -> sessions, matched once per session
pub mod timesync; // the timesync extension's answer

// Behaviour.
pub mod protocol; // one request batch in, replies and effects out

// Python.
mod py; // every #[pyclass] and the conversions to and from Python values

use pyo3::prelude::*;

/// `starlette_cometd._core`: the engine, client ids, the batch reader and the exceptions.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<py::engine::PyEngine>()?;
    m.add_class::<py::outcome::PyOutcome>()?;
    m.add_class::<py::outcome::PyHold>()?;
    m.add_class::<py::client_id::PyClientId>()?;
    m.add_function(wrap_pyfunction!(py::batch::read_batch, m)?)?;
    m.add("SendError", py.get_type::<py::errors::SendError>())?;
    m.add(
        "InvalidChannelError",
        py.get_type::<py::errors::InvalidChannelError>(),
    )?;
    m.add(
        "ClientNotFoundError",
        py.get_type::<py::errors::ClientNotFoundError>(),
    )?;
    m.add(
        "ContextClosedError",
        py.get_type::<py::errors::ContextClosedError>(),
    )?;
    m.add("ReplayIdError", py.get_type::<py::errors::ReplayIdError>())?;
    Ok(())
}
