//! Triage calls (SPEC §14) on a `Handle`: the task and module lists, the load average and
//! the system facts. They load BTF on first use and walk kernel lists (and the log), so
//! they run detached with Ctrl-C let through (`interruptible`); the load average, a few
//! pages, runs detached only.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::detach::{detached, interruptible};
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

/// One module as Python receives it: (name, base, size, text_size, state, module address).
type ModuleRow = (Py<PyString>, u64, u64, u64, Option<String>, u64);

/// `Kvm.modules`: `(modules, complete, problems)`; raises KvmError (no BTF, no core file).
#[pyfunction]
pub fn modules(py: Python<'_>, handle: &Handle) -> PyResult<(Vec<ModuleRow>, bool, Vec<String>)> {
    let session = handle.session(py)?;
    let list = interruptible(py, move |cancel| session.modules_with(cancel))?;
    let rows = list
        .modules
        .iter()
        .map(|m| {
            (
                PyString::new(py, &String::from_utf8_lossy(&m.name)).unbind(),
                m.base,
                m.size,
                m.text_size,
                m.state.clone(),
                m.module,
            )
        })
        .collect();
    Ok((rows, list.complete, list.problems))
}

/// `kvm_getloadavg`: the three averages as /proc/loadavg prints them. A few pages read:
/// detached (a compressed page costs more than the detach), not interruptible.
#[pyfunction]
pub fn loadavg(py: Python<'_>, handle: &Handle) -> PyResult<[String; 3]> {
    let session = handle.session(py)?;
    detached(py, move || session.loadavg_with(&crate::cancel::NEVER))
}

/// `Kvm.triage`'s system facts as a dict (the fields of `SystemFacts`; `uptime_ns` an int).
#[pyfunction]
pub fn system<'py>(py: Python<'py>, handle: &Handle) -> PyResult<Bound<'py, PyDict>> {
    let session = handle.session(py)?;
    let facts = interruptible(py, move |cancel| session.system_with(cancel))?;
    let dict = PyDict::new(py);
    dict.set_item("release", facts.release)?;
    dict.set_item("machine", facts.machine)?;
    dict.set_item("nodename", facts.nodename)?;
    dict.set_item("uptime_ns", facts.uptime_ns)?;
    dict.set_item("uptime_source", facts.uptime_source)?;
    dict.set_item("loadavg", facts.loadavg)?;
    dict.set_item("taint", facts.taint)?;
    dict.set_item("taint_string", facts.taint_string)?;
    dict.set_item("nr_cpus", facts.nr_cpus)?;
    dict.set_item("possible_cpus", facts.possible_cpus)?;
    dict.set_item("present_cpus", facts.present_cpus)?;
    dict.set_item("online_cpus", facts.online_cpus)?;
    dict.set_item("totalram_pages", facts.totalram_pages)?;
    dict.set_item("panic_cpu", facts.panic_cpu)?;
    dict.set_item("panic_message", facts.panic_message)?;
    dict.set_item("problems", facts.problems)?;
    Ok(dict)
}
