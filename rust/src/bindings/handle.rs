//! `_native.Handle`: a frozen class over `Mutex<Option<Arc<Session>>>`. Closing takes the
//! session out; a call running in another thread holds its own `Arc`, so nothing is
//! unmapped under a reader, and every call after close fails with the closed error.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::detach::{detached, interruptible};
use super::errors::to_py;
use crate::errors::Error;
use crate::session::{Info, OpenRequest, Session};

/// Reads at least this large release the GIL (measured by benches/read_gil.py: below it,
/// detaching costs more than the copy it frees the interpreter for).
const DETACH_READ_BYTES: usize = 64 * 1024;
/// Reads at least this large also let Ctrl-C through (a worker thread costs ~30 us; reads
/// this size take milliseconds).
const INTERRUPTIBLE_READ_BYTES: usize = 8 << 20;
/// Reads up to this size get their whole result allocated at once.
const MAX_DIRECT_READ: usize = 64 << 20;

#[pyclass(frozen, module = "kvm_rs._native")]
pub struct Handle {
    session: Mutex<Option<Arc<Session>>>,
}

impl Handle {
    pub fn new(session: Session) -> Handle {
        Handle {
            session: Mutex::new(Some(Arc::new(session))),
        }
    }

    pub(super) fn session(&self, py: Python<'_>) -> PyResult<Arc<Session>> {
        // The lock is dropped before any Python runs: building the exception executes
        // Python code, which may hand the GIL to a thread that then waits on this lock.
        let session = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        session.ok_or_else(|| to_py(py, &Error::Closed))
    }
}

#[pymethods]
impl Handle {
    /// Releases the files: 0, or -1 when the handle was already closed. Never raises.
    fn close(&self) -> i32 {
        let taken = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if taken.is_some() {
            0
        } else {
            -1
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    /// `(n_type, value)` or None per name. The first call builds the name index, detached.
    fn nlist(&self, py: Python<'_>, names: Vec<Vec<u8>>) -> PyResult<Vec<Option<(u8, u64)>>> {
        let session = self.session(py)?;
        let built = session.symbols_ready();
        if built {
            return session.nlist(&names).map_err(|e| to_py(py, &e));
        }
        detached(py, move || session.nlist(&names))
    }

    /// Physical memory: `(bytes read, error or None)`, as `read`; detached.
    fn read_physical<'py>(
        &self,
        py: Python<'py>,
        addr: u64,
        size: usize,
    ) -> PyResult<(Bound<'py, PyBytes>, Option<PyErr>)> {
        let session = self.session(py)?;
        let (data, error) = if size >= INTERRUPTIBLE_READ_BYTES {
            interruptible(py, |cancel| {
                Ok(session.read_physical_with(addr, size, cancel))
            })?
        } else {
            py.detach(|| session.read_physical(addr, size))
        };
        Ok((PyBytes::new(py, &data), error.map(|e| to_py(py, &e))))
    }

    /// `kvm_read`: `(bytes read, error or None)`. The error is returned, not raised: a short
    /// read carries both data and an error. The bytes are written straight into the new
    /// Python object; reads of 64 KiB and more run detached.
    fn read<'py>(
        &self,
        py: Python<'py>,
        addr: u64,
        size: usize,
    ) -> PyResult<(Bound<'py, PyBytes>, Option<PyErr>)> {
        let session = self.session(py)?;
        if size > MAX_DIRECT_READ {
            // Too large to allocate up front on the caller's word: grown as pages come.
            let (data, error) =
                interruptible(py, |cancel| Ok(session.read_with(addr, size, cancel)))?;
            return Ok((PyBytes::new(py, &data), error.map(|e| to_py(py, &e))));
        }
        let mut outcome = (0usize, None);
        let bytes = PyBytes::new_with(py, size, |buf| {
            outcome = if size >= INTERRUPTIBLE_READ_BYTES {
                interruptible(py, |cancel| Ok(session.read_into_with(addr, buf, cancel)))?
            } else if size >= DETACH_READ_BYTES {
                py.detach(|| session.read_into(addr, buf))
            } else {
                session.read_into(addr, buf)
            };
            Ok(())
        })?;
        let (copied, error) = outcome;
        let bytes = if copied < size {
            PyBytes::new(py, bytes.as_bytes().get(..copied).unwrap_or(&[]))
        } else {
            bytes
        };
        Ok((bytes, error.map(|e| to_py(py, &e))))
    }

    /// `kvm_write`: bytes written; raises on error.
    fn write(&self, py: Python<'_>, addr: u64, data: Vec<u8>) -> PyResult<usize> {
        let session = self.session(py)?;
        detached(py, move || session.write(addr, &data))
    }

    /// The kernel log's records: (seq, ts_nsec, level, caller, text), oldest first
    /// (detached; Ctrl-C stops it).
    #[allow(clippy::type_complexity)]
    fn log(&self, py: Python<'_>) -> PyResult<Vec<(u64, u64, u8, Option<String>, String)>> {
        let session = self.session(py)?;
        let records = interruptible(py, move |cancel| session.dmesg_with(cancel))?;
        Ok(records
            .into_iter()
            .map(|r| (r.seq, r.ts_nsec, r.level, r.caller, r.text))
            .collect())
    }

    /// `Kvm.info` as a dict; None for a handle with no core file.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let session = self.session(py)?;
        let Some(info) = session.info() else {
            return Ok(None);
        };
        info_dict(py, info).map(Some)
    }

    /// True when the handle was opened with KVM_NO_FILES.
    #[getter]
    fn no_files(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.session(py)?.core().is_none())
    }
}

pub(super) fn info_dict(py: Python<'_>, info: Info) -> PyResult<Bound<'_, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("format", info.format)?;
    dict.set_item("compression", info.compression)?;
    dict.set_item("machine", info.machine)?;
    dict.set_item("osrelease", info.osrelease)?;
    dict.set_item("build_id", info.build_id)?;
    dict.set_item("page_size", info.page_size)?;
    dict.set_item("kernel_offset", info.kernel_offset)?;
    dict.set_item("pgtable_levels", info.pgtable_levels)?;
    dict.set_item("live", info.live)?;
    dict.set_item("truncated", info.truncated)?;
    dict.set_item("incomplete", info.incomplete)?;
    let raw = PyDict::new(py);
    for (key, value) in info.vmcoreinfo {
        raw.set_item(key, value)?;
    }
    dict.set_item("vmcoreinfo", raw)?;
    dict.set_item("vmcoreinfo_source", info.vmcoreinfo_source)?;
    dict.set_item("exec_format", info.exec_format)?;
    dict.set_item("pfn_range", info.pfn_range)?;
    dict.set_item("parts", info.parts)?;
    Ok(dict)
}

/// The default paths (SPEC §1) as the Python layer reads them at call time: a dict.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct Defaults {
    pub(super) path_ksyms: Vec<u8>,
    pub(super) path_unix: Vec<u8>,
    pub(super) path_devmem: Vec<u8>,
}

#[allow(clippy::too_many_arguments)]
/// `kvm_open`: every core file given (more than one: a split dump's parts); detached.
#[pyfunction]
#[pyo3(signature = (execfile, corefiles, swapfile, flags, defaults, core_symbols=false, vmcoreinfo=None))]
pub fn open_session(
    py: Python<'_>,
    execfile: Option<Vec<u8>>,
    corefiles: Vec<Vec<u8>>,
    swapfile: Option<Vec<u8>>,
    flags: i64,
    defaults: Defaults,
    core_symbols: bool,
    vmcoreinfo: Option<Vec<u8>>,
) -> PyResult<Handle> {
    let request = OpenRequest {
        execfile,
        corefiles,
        swapfile,
        flags,
        path_ksyms: defaults.path_ksyms,
        path_unix: defaults.path_unix,
        path_devmem: defaults.path_devmem,
        core_symbols,
        symbols_optional: false,
        vmcoreinfo,
    };
    let session = detached(py, move || Session::open(&request))?;
    Ok(Handle::new(session))
}
