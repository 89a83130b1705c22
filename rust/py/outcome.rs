//! `Outcome` and `HeldConnect`: what one call into the engine changed, in Python objects.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::client_id::Id;
use crate::engine::{Effects, Event, Refusal, Relayed};
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

    /// Whether it counts against its browser's limit of held long-polls (HTTP/1.x).
    #[getter]
    fn counted(&self) -> bool {
        self.0.counted
    }
}

/// What one call changed. Every field is a Python object made once, when the call returns,
/// so reading an attribute twice costs nothing and returns the same object. `events` are
/// `(kind, client_id, detail)` tuples; `wake`, `release`, `push` and `bound` lists of client
/// ids.
#[pyclass(frozen, module = "starlette_cometd._core", name = "Outcome")]
pub struct PyOutcome {
    #[pyo3(get)]
    status: u16,
    #[pyo3(get)]
    body: Py<PyBytes>,
    #[pyo3(get)]
    hold: Option<Py<PyHold>>,
    #[pyo3(get)]
    events: Py<PyList>,
    #[pyo3(get)]
    wake: Py<PyList>,
    #[pyo3(get)]
    release: Py<PyList>,
    #[pyo3(get)]
    push: Py<PyList>,
    #[pyo3(get)]
    bound: Py<PyList>,
    #[pyo3(get)]
    new_browser: Option<Py<PyString>>,
    /// `(channel, message, excluded)` for each publish handed back (`relay_publishes`);
    /// `None` when there is none, which is always without that setting.
    #[pyo3(get)]
    relayed: Option<Py<PyList>>,
    /// `(client_id, channel, error)` for each unsuccessful reply, client id and channel `None`
    /// when the message named none usable; `None` when every reply succeeded.
    #[pyo3(get)]
    refused: Option<Py<PyList>>,
    /// How many more unsuccessful replies there were than `refused` lists.
    #[pyo3(get)]
    refused_left_out: usize,
}

/// Client ids as a list of str.
fn ids(py: Python<'_>, list: &[Id]) -> PyResult<Py<PyList>> {
    Ok(PyList::new(py, list.iter().map(Id::to_string))?.unbind())
}

/// One event as `(kind, client_id, detail)`: detail is the channels of a (un)subscribe, the
/// reason of a removal, `None` for a new session.
fn event<'py>(py: Python<'py>, event: Event) -> PyResult<Bound<'py, PyTuple>> {
    let (kind, id, detail) = match event {
        Event::SessionAdded(id) => (intern!(py, "session_added"), id, py.None().into_bound(py)),
        Event::Subscribed(id, channels) => (
            intern!(py, "subscribe"),
            id,
            PyList::new(py, channels)?.into_any(),
        ),
        Event::Unsubscribed(id, channels) => (
            intern!(py, "unsubscribe"),
            id,
            PyList::new(py, channels)?.into_any(),
        ),
        Event::SessionRemoved(id, reason) => (
            intern!(py, "session_removed"),
            id,
            PyString::new(py, reason.as_str()).into_any(),
        ),
    };
    let id = PyString::new(py, &id.to_string()).into_any();
    PyTuple::new(py, [kind.clone().into_any(), id, detail])
}

pub fn outcome(
    py: Python<'_>,
    status: u16,
    body: &[u8],
    hold: Option<Hold>,
    effects: Effects,
    new_browser: Option<Id>,
) -> PyResult<PyOutcome> {
    let events = PyList::empty(py);
    for e in effects.events {
        events.append(event(py, e)?)?;
    }
    Ok(PyOutcome {
        status,
        body: PyBytes::new(py, body).unbind(),
        hold: hold.map(|h| Py::new(py, PyHold(h))).transpose()?,
        events: events.unbind(),
        wake: ids(py, &effects.wake)?,
        release: ids(py, &effects.release)?,
        push: ids(py, &effects.push)?,
        bound: ids(py, &effects.bound)?,
        new_browser: new_browser.map(|b| PyString::new(py, &b.to_string()).unbind()),
        relayed: relayed(py, effects.relayed)?,
        refused: refused(py, effects.refused)?,
        refused_left_out: effects.refused_left_out,
    })
}

/// The unsuccessful replies as `(client_id, channel, error)` tuples.
fn refused(py: Python<'_>, refused: Vec<Refusal>) -> PyResult<Option<Py<PyList>>> {
    if refused.is_empty() {
        return Ok(None);
    }
    let list = PyList::empty(py);
    for refusal in refused {
        let client_id = refusal.client_id.map(|id| id.to_string());
        let item = (client_id, refusal.channel.as_deref(), &*refusal.error);
        list.append(item.into_pyobject(py)?)?;
    }
    Ok(Some(list.unbind()))
}

/// The relayed publishes as `(channel, message bytes, excluded client id or None)` tuples.
fn relayed(py: Python<'_>, relayed: Vec<Relayed>) -> PyResult<Option<Py<PyList>>> {
    if relayed.is_empty() {
        return Ok(None);
    }
    let list = PyList::empty(py);
    for publish in relayed {
        let excluded = match publish.excluded {
            Some(id) => PyString::new(py, &id.to_string()).into_any(),
            None => py.None().into_bound(py),
        };
        let channel = PyString::new(py, &publish.channel).into_any();
        let message = PyBytes::new(py, &publish.message).into_any();
        list.append(PyTuple::new(py, [channel, message, excluded])?)?;
    }
    Ok(Some(list.unbind()))
}

pub fn effects_outcome(py: Python<'_>, effects: Effects) -> PyResult<PyOutcome> {
    outcome(py, 200, b"", None, effects, None)
}
