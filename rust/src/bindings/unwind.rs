//! Backtraces: `crashed_stack(handle)`, a function over the handle (the handle's methods
//! stay in one `#[pymethods]` block, without pyo3's `multiple-pymethods`).

use pyo3::prelude::*;

use super::detach::detached;
use super::handle::Handle;

/// One frame: (pc, symbol, offset, reliable).
pub type FrameTuple = (u64, Option<String>, Option<u64>, bool);

/// The crashing CPU's frames, innermost first; detached (the first call builds the
/// address index and reads the unwinding tables).
#[pyfunction]
pub fn crashed_stack(py: Python<'_>, handle: &Handle) -> PyResult<Vec<FrameTuple>> {
    let session = handle.session(py)?;
    let frames = detached(py, move || session.crashed_stack())?;
    Ok(frames
        .into_iter()
        .map(|f| (f.pc, f.symbol, f.offset, f.reliable))
        .collect())
}
