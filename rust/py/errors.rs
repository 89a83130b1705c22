//! The one place where core errors become Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::PyErr;

use crate::errors::CoreError;

create_exception!(
    starlette_cometd,
    SendError,
    PyException,
    "A message could not be sent."
);
create_exception!(
    starlette_cometd,
    InvalidChannelError,
    SendError,
    "The channel is not one that messages can be sent to."
);
create_exception!(
    starlette_cometd,
    ClientNotFoundError,
    SendError,
    "No session has that client id."
);
create_exception!(
    starlette_cometd,
    ContextClosedError,
    SendError,
    "The context has been closed."
);

create_exception!(
    starlette_cometd,
    ReplayIdError,
    PyValueError,
    "The history cannot be read after that id (see the replay extension's errors)."
);

impl From<CoreError> for PyErr {
    fn from(error: CoreError) -> PyErr {
        let text = error.to_string();
        match error {
            CoreError::InvalidChannel(_) | CoreError::ChannelTooBig(..) => {
                InvalidChannelError::new_err(text)
            }
            CoreError::ClientNotFound(_) => ClientNotFoundError::new_err(text),
            CoreError::InvalidClientId(_) => PyValueError::new_err(text),
            CoreError::NotJson(_) => PyTypeError::new_err(text),
        }
    }
}
