//! The one place a Rust `Error` becomes a Python exception: `kvm_rs.errors` builds the
//! `KvmError` (an OSError, also FileNotFoundError etc. where a system call failed).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyAny, PyBytes};

use crate::errors::Error;

static FROM_NATIVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// libkvm's error buffer is `_POSIX2_LINE_MAX` (2048) bytes with its NUL.
const MAX_MESSAGE: usize = 2047;

/// The message cut to 2047 bytes, not inside a UTF-8 sequence.
fn capped(mut message: Vec<u8>) -> Vec<u8> {
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while cut > 0 && message.get(cut).is_some_and(|b| b & 0xc0 == 0x80) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}

pub fn to_py(py: Python<'_>, err: &Error) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let factory = FROM_NATIVE.import(py, "kvm_rs.errors", "_from_native")?;
        // Bytes: Python decodes them with os.fsdecode, so a file name that is not UTF-8
        // survives the round trip through errbuf (os.fsencode) unchanged.
        let message = PyBytes::new(py, &capped(err.message()));
        let filename = err.filename().map(|name| PyBytes::new(py, name));
        let exc = factory.call1((
            message,
            !err.is_soft(),
            err.errno(),
            filename,
            err.address(),
            err.reason().map(|r| r.text()),
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

#[cfg(test)]
mod tests {
    use super::capped;

    #[test]
    fn cap_keeps_utf8_whole() {
        let long = "é".repeat(2000).into_bytes();
        let cut = capped(long);
        assert!(cut.len() <= 2047);
        assert!(String::from_utf8(cut).is_ok());
    }
}
