//! The only code that uses PyO3: the `kvm_rs._native` module.

mod detach;
mod errors;
mod handle;
mod scan;
mod triage;
mod unwind;

use pyo3::prelude::*;

/// Forgets the exec files kept for later opens (their mappings go when no handle uses them).
#[pyfunction]
fn clear_exec_cache() {
    crate::symbols::cache::clear();
}

/// How often an open found its exec file already parsed: (hits, misses).
#[pyfunction]
fn exec_cache_stats() -> (u64, u64) {
    crate::symbols::cache::stats()
}

/// Forgets each kernel build's decoded kallsyms names and parsed BTF.
#[pyfunction]
fn clear_build_cache() {
    crate::kernel::builds::clear();
}

/// How often a triage found its build's names or BTF decoded already: (hits, misses).
#[pyfunction]
fn build_cache_stats() -> (u64, u64) {
    crate::kernel::builds::stats()
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<handle::Handle>()?;
    module.add_function(wrap_pyfunction!(handle::open_session, module)?)?;
    module.add_class::<scan::ScanStream>()?;
    module.add_function(wrap_pyfunction!(scan::scan_stream, module)?)?;
    module.add_function(wrap_pyfunction!(unwind::stack, module)?)?;
    module.add_function(wrap_pyfunction!(clear_exec_cache, module)?)?;
    module.add_function(wrap_pyfunction!(exec_cache_stats, module)?)?;
    module.add_function(wrap_pyfunction!(clear_build_cache, module)?)?;
    module.add_function(wrap_pyfunction!(build_cache_stats, module)?)?;
    module.add_function(wrap_pyfunction!(triage::tasks, module)?)?;
    module.add_function(wrap_pyfunction!(triage::modules, module)?)?;
    module.add_function(wrap_pyfunction!(triage::loadavg, module)?)?;
    module.add_function(wrap_pyfunction!(triage::system, module)?)?;
    module.add("KVM_NO_FILES", crate::session::KVM_NO_FILES)?;
    module.add("PATH_MAX", crate::session::PATH_MAX)?;
    Ok(())
}
