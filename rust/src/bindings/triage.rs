//! Triage calls (SPEC §14) on a `Handle`: the task list. They load BTF on first use and
//! walk kernel lists, so they run detached with Ctrl-C let through (`interruptible`).

use pyo3::prelude::*;
use pyo3::types::PyString;

use super::detach::interruptible;
use super::handle::Handle;

/// One task as Python receives it: (pid, tgid, ppid, comm, state, uid, cpu, on_cpu,
/// kthread, task address).
type TaskRow = (
    i64,
    i64,
    Option<i64>,
    Py<PyString>,
    char,
    Option<u64>,
    Option<u64>,
    Option<i64>,
    bool,
    u64,
);

/// `kvm_getprocs`: `(tasks, complete, problems)`; raises KvmError (no BTF, no core file).
#[pyfunction]
pub fn tasks(py: Python<'_>, handle: &Handle) -> PyResult<(Vec<TaskRow>, bool, Vec<String>)> {
    let session = handle.session(py)?;
    let list = interruptible(py, move |cancel| session.tasks_with(cancel))?;
    let rows = list
        .tasks
        .iter()
        .map(|t| {
            (
                t.pid,
                t.tgid,
                t.ppid,
                PyString::new(py, &String::from_utf8_lossy(&t.comm)).unbind(),
                t.state,
                t.uid,
                t.cpu,
                t.on_cpu,
                t.kthread,
                t.task,
            )
        })
        .collect();
    Ok((rows, list.complete, list.problems))
}
