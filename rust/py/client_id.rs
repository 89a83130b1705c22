//! `ClientId`: a session's client id as Python sees it.

use pyo3::prelude::*;

use crate::client_id::Id;
use crate::errors::CoreError;

/// A session's client id: 40 lowercase hex characters.
#[pyclass(
    frozen,
    eq,
    ord,
    hash,
    module = "starlette_cometd._core",
    name = "ClientId"
)]
#[derive(PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PyClientId(Id);

#[pymethods]
impl PyClientId {
    #[new]
    fn new(text: &str) -> PyResult<Self> {
        Ok(Self(parse_id(text)?))
    }

    fn __str__(&self) -> String {
        self.0.to_string()
    }

    fn __repr__(&self) -> String {
        format!("ClientId('{}')", self.0)
    }

    /// The Unix time in nanoseconds when the id was made.
    #[getter]
    fn timestamp_nanos(&self) -> u64 {
        self.0.timestamp_nanos()
    }
}

pub fn parse_id(text: &str) -> Result<Id, CoreError> {
    Id::parse(text).ok_or_else(|| CoreError::InvalidClientId(text.chars().take(64).collect()))
}
