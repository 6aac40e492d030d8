//! Backtraces: `stack(handle, pid, cpu)`, a function over the handle (the handle's methods
//! stay in one `#[pymethods]` block, without pyo3's `multiple-pymethods`).

use pyo3::prelude::*;

use super::detach::interruptible;
use super::handle::Handle;
use crate::session::stack::Which;
use crate::session::Frame;

/// One frame: (pc, symbol, offset, module, reliable).
pub type FrameTuple = (u64, Option<String>, Option<u64>, Option<String>, bool);

/// A task's frames, innermost first: pid None the crashed task, pid 0 the idle task of
/// `cpu` (default 0), any other pid that task. Detached, Ctrl-C let through (the first call
/// builds the address index, reads the unwinding tables and, for a pid, BTF and the task
/// list).
#[pyfunction]
#[pyo3(signature = (handle, pid=None, cpu=None))]
pub fn stack(
    py: Python<'_>,
    handle: &Handle,
    pid: Option<i64>,
    cpu: Option<u64>,
) -> PyResult<Vec<FrameTuple>> {
    let session = handle.session(py)?;
    let which = match pid {
        None => Which::Crashed,
        Some(0) => Which::Idle(cpu.unwrap_or(0)),
        Some(pid) => Which::Pid(pid),
    };
    let frames = interruptible(py, move |cancel| session.stack(which, cancel))?;
    Ok(frames.into_iter().map(frame_tuple).collect())
}

/// A frame as Python's `Frame` takes it.
pub(super) fn frame_tuple(f: Frame) -> FrameTuple {
    (f.pc, f.symbol, f.offset, f.module, f.reliable)
}
