//! The one place a Rust `Error` becomes a Python exception: `kvm_rs.errors` builds the
//! `KvmError` (an OSError, also FileNotFoundError etc. where a system call failed).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyAny;

use crate::errors::Error;

static FROM_NATIVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

pub fn to_py(py: Python<'_>, err: &Error) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let factory = FROM_NATIVE.import(py, "kvm_rs.errors", "_from_native")?;
        let exc = factory.call1((
            err.to_string(),
            !err.is_soft(),
            err.errno(),
            err.filename(),
            err.address(),
        ))?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|failure| failure)
}

/// Lets `?` turn a core error into a Python exception inside binding code.
pub trait IntoPyResult<T> {
    fn into_py_result(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn into_py_result(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|err| to_py(py, &err))
    }
}
