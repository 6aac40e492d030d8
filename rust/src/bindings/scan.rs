//! `_native.scan_stream`: many dumps described on a background thread that owns its inputs
//! and feeds a channel; `ScanStream` hands each report to Python as soon as it is done.
//! Waiting for the next report releases the GIL in slices of at most 50 ms and runs Python's
//! signal handlers between them: Ctrl-C cancels the scan and raises KeyboardInterrupt.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::detach::detached;
use super::errors::to_py;
use super::handle::{info_dict, Defaults};
use super::unwind::{frame_tuple, FrameTuple};
use crate::cancel::Cancel;
use crate::errors::Error;
use crate::scan::{check_exec, scan_stream as run_stream, Report, ScanJob};
use crate::session::OpenRequest;

/// The longest the interpreter waits, detached, before it looks for signals again.
const SLICE: Duration = Duration::from_millis(50);

/// What the background thread sends: a report with the index of its first path, or the
/// error that ended the scan (never `Interrupted`: that one the caller asked for).
enum Item {
    Report(usize, Box<Report>),
    Failed(Error),
}

/// One wait for the channel.
enum Next {
    Item(Item),
    Wait,
    Done,
}

/// The reports of one scan, as they finish. Frozen: every field is behind its own lock, so
/// two threads iterating one stream take turns instead of failing a borrow check.
#[pyclass(frozen, module = "kvm_rs._native")]
pub struct ScanStream {
    cancel: Arc<Cancel>,
    receiver: Mutex<Option<Receiver<Item>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl ScanStream {
    /// The next thing on the channel, waiting at most one slice (detached by the caller).
    fn wait(&self) -> Next {
        let guard = self.receiver.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(receiver) = guard.as_ref() else {
            return Next::Done;
        };
        match receiver.recv_timeout(SLICE) {
            Ok(item) => Next::Item(item),
            Err(RecvTimeoutError::Timeout) => Next::Wait,
            Err(RecvTimeoutError::Disconnected) => Next::Done,
        }
    }

    /// The channel is closed and the thread has ended: forget both.
    fn finish(&self) {
        self.receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // The thread has sent its last item and dropped its sender: this join is immediate.
        // Its panic (none is expected: each dump runs under catch_unwind) is dropped here.
        if let Some(worker) = worker {
            let _ = worker.join();
        }
    }
}

#[pymethods]
impl ScanStream {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next report as a dict, waiting with the GIL released; None (StopIteration) when
    /// the scan is over. KeyboardInterrupt (or any exception a signal handler raises)
    /// cancels the scan and propagates.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        loop {
            match py.detach(|| self.wait()) {
                Next::Item(Item::Report(index, report)) => {
                    return report_dict(py, index, *report).map(Some);
                }
                Next::Item(Item::Failed(error)) => return Err(to_py(py, &error)),
                Next::Done => {
                    py.detach(|| self.finish());
                    return Ok(None);
                }
                Next::Wait => {
                    if let Err(error) = py.check_signals() {
                        self.cancel.set();
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Cancels the scan and waits for its thread (a dump being described finishes first),
    /// detached, looking for signals every 50 ms. The reports not yet taken are dropped.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.cancel.set();
        loop {
            match py.detach(|| self.wait()) {
                Next::Done => {
                    py.detach(|| self.finish());
                    return Ok(());
                }
                Next::Item(_) => {}
                Next::Wait => py.check_signals()?,
            }
        }
    }
}

impl Drop for ScanStream {
    /// Cancels without waiting: the thread ends after the dumps it is describing, and its
    /// sends to the dropped channel go nowhere.
    fn drop(&mut self) {
        self.cancel.set();
    }
}

fn report_dict(py: Python<'_>, index: usize, report: Report) -> PyResult<Bound<'_, PyDict>> {
    let dict = match report.info {
        Some(info) => info_dict(py, info)?,
        None => PyDict::new(py),
    };
    dict.set_item("index", index)?;
    let first = report.paths.first().cloned().unwrap_or_default();
    dict.set_item("path", PyBytes::new(py, &first))?;
    let parts: Vec<Bound<'_, PyBytes>> = report.paths.iter().map(|p| PyBytes::new(py, p)).collect();
    dict.set_item("parts", parts)?;
    dict.set_item("ok", report.error.is_none())?;
    dict.set_item("error", report.error)?;
    dict.set_item("truncated", report.truncated)?;
    dict.set_item("readable", report.readable)?;
    dict.set_item("reason", report.reason)?;
    let facts = report.facts;
    dict.set_item("crash_time", facts.as_ref().and_then(|f| f.crash_time))?;
    dict.set_item("dump_level", facts.as_ref().and_then(|f| f.dump_level))?;
    dict.set_item("dumped_pages", facts.as_ref().and_then(|f| f.dumped_pages))?;
    dict.set_item("panic", report.panic)?;
    if let Some(crash) = report.crash {
        dict.set_item("crash_pid", crash.pid)?;
        dict.set_item("crash_comm", crash.comm)?;
        let frames: Vec<FrameTuple> = crash.frames.into_iter().map(frame_tuple).collect();
        dict.set_item("frames", frames)?;
        dict.set_item("crash_problems", crash.problems)?;
    }
    Ok(dict)
}

/// Starts describing every path in `threads` worker threads on a background thread and
/// returns at once with the stream of their reports (in the order they finish; "index" is
/// the position in `paths` of the report's first file). An exec file that cannot be loaded
/// raises KvmError here, before any dump is opened (detached while it loads).
#[pyfunction]
#[pyo3(signature = (paths, execfile, threads, defaults, vmcoreinfo=None, triage=false))]
pub fn scan_stream(
    py: Python<'_>,
    paths: Vec<Vec<u8>>,
    execfile: Option<Vec<u8>>,
    threads: usize,
    defaults: Defaults,
    vmcoreinfo: Option<Vec<u8>>,
    triage: bool,
) -> PyResult<ScanStream> {
    let template = OpenRequest {
        core_symbols: execfile.is_none(),
        symbols_optional: true,
        execfile,
        corefiles: Vec::new(),
        swapfile: None,
        flags: i64::from(libc::O_RDONLY),
        path_ksyms: defaults.path_ksyms,
        path_unix: defaults.path_unix,
        path_devmem: defaults.path_devmem,
        vmcoreinfo,
    };
    let job = detached(py, move || check_exec(&template).map(|()| template))?;
    let job = ScanJob { open: job, triage };
    let cancel = Arc::new(Cancel::default());
    let (sender, receiver) = mpsc::channel();
    let flag = Arc::clone(&cancel);
    let worker = std::thread::Builder::new()
        .name("kvm_rs-scan".into())
        .spawn(move || {
            let outcome = run_stream(&paths, &job, threads, &flag, |index, report| {
                // A closed stream drops its receiver: the send fails, the report goes.
                let _ = sender.send(Item::Report(index, Box::new(report)));
            });
            match outcome {
                Ok(()) | Err(Error::Interrupted) => {}
                Err(error) => {
                    let _ = sender.send(Item::Failed(error));
                }
            }
        })
        .map_err(|e| to_py(py, &Error::os(b"scan thread", &e)))?;
    Ok(ScanStream {
        cancel,
        receiver: Mutex::new(Some(receiver)),
        worker: Mutex::new(Some(worker)),
    })
}
