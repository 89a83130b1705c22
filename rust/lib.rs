//! The Rust core of starlette-cometd. This file is a table of contents.

pub mod ack;
pub mod channel;
pub mod client_id;
pub mod config;
pub mod engine;
pub mod errors;
pub mod json;
pub mod message;
pub mod protocol;
pub mod subscriptions;
pub mod timesync;

mod py_api;
mod py_errors;
mod py_json;

use pyo3::prelude::*;

/// `starlette_cometd._core`: the engine, client ids and the exceptions.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<py_api::PyEngine>()?;
    m.add_class::<py_api::PyOutcome>()?;
    m.add_class::<py_api::PyHold>()?;
    m.add_class::<py_api::PyClientId>()?;
    m.add("SendError", py.get_type::<py_errors::SendError>())?;
    m.add(
        "InvalidChannelError",
        py.get_type::<py_errors::InvalidChannelError>(),
    )?;
    m.add(
        "ClientNotFoundError",
        py.get_type::<py_errors::ClientNotFoundError>(),
    )?;
    m.add(
        "ContextClosedError",
        py.get_type::<py_errors::ContextClosedError>(),
    )?;
    Ok(())
}
