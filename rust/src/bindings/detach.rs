//! Every call that does real work (open and validation, index builds, reads of many pages)
//! goes through `detached`: the GIL is released while the Rust core runs, and its error is
//! converted once the GIL is back. Microsecond calls stay attached: detaching costs more
//! than they do.

use pyo3::prelude::*;

use super::errors::IntoPyResult;
use crate::errors::Error;

pub fn detached<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> Result<T, Error> + Send,
) -> PyResult<T> {
    py.detach(work).into_py_result(py)
}
