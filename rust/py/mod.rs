//! The Python bindings: every `#[pyclass]`, and the conversions between Python values and the
//! core's. `lib.rs` registers them as the module `starlette_cometd._core`.

pub mod batch;
pub mod client_id;
pub mod engine;
pub mod errors;
pub mod json;
pub mod outcome;
