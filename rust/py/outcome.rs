//! `Outcome` and `HeldConnect`: what one call into the engine changed, in Python objects.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::client_id::Id;
use crate::engine::{Effects, Event};
use crate::protocol::Hold;

/// A `/meta/connect` being held; opaque to Python except for what the waiter needs.
#[pyclass(frozen, module = "starlette_cometd._core", name = "HeldConnect")]
pub struct PyHold(pub Hold);

#[pymethods]
impl PyHold {
    #[getter]
    fn client_id(&self) -> String {
        self.0.client_id.to_string()
    }

    /// Seconds to hold at most.
    #[getter]
    fn timeout(&self) -> f64 {
        self.0.timeout.as_secs_f64()
    }
}

/// What one call changed. `events` are `(kind, client_id, detail)` tuples.
#[pyclass(frozen, module = "starlette_cometd._core", name = "Outcome")]
pub struct PyOutcome {
    #[pyo3(get)]
    status: u16,
    #[pyo3(get)]
    body: Py<PyBytes>,
    #[pyo3(get)]
    hold: Option<Py<PyHold>>,
    #[pyo3(get)]
    events: Vec<(&'static str, String, Option<Py<PyAny>>)>,
    #[pyo3(get)]
    wake: Vec<String>,
    #[pyo3(get)]
    release: Vec<String>,
    #[pyo3(get)]
    push: Vec<String>,
    #[pyo3(get)]
    bound: Vec<String>,
    #[pyo3(get)]
    new_browser: Option<String>,
}

fn ids(list: &[Id]) -> Vec<String> {
    list.iter().map(Id::to_string).collect()
}

pub fn outcome(
    py: Python<'_>,
    status: u16,
    body: &[u8],
    hold: Option<Hold>,
    effects: Effects,
    new_browser: Option<Id>,
) -> PyResult<PyOutcome> {
    let mut events = Vec::with_capacity(effects.events.len());
    for event in effects.events {
        events.push(match event {
            Event::SessionAdded(id) => ("session_added", id.to_string(), None),
            Event::Subscribed(id, channels) => (
                "subscribe",
                id.to_string(),
                Some(channels.into_pyobject(py)?.into_any().unbind()),
            ),
            Event::Unsubscribed(id, channels) => (
                "unsubscribe",
                id.to_string(),
                Some(channels.into_pyobject(py)?.into_any().unbind()),
            ),
            Event::SessionRemoved(id, reason) => (
                "session_removed",
                id.to_string(),
                Some(reason.as_str().into_pyobject(py)?.into_any().unbind()),
            ),
        });
    }
    Ok(PyOutcome {
        status,
        body: PyBytes::new(py, body).unbind(),
        hold: hold.map(|h| Py::new(py, PyHold(h))).transpose()?,
        events,
        wake: ids(&effects.wake),
        release: ids(&effects.release),
        push: ids(&effects.push),
        bound: ids(&effects.bound),
        new_browser: new_browser.map(|b| b.to_string()),
    })
}

pub fn effects_outcome(py: Python<'_>, effects: Effects) -> PyResult<PyOutcome> {
    outcome(py, 200, b"", None, effects, None)
}
