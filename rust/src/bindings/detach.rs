//! Every call that does real work (open and validation, index builds, reads of many pages)
//! goes through `detached`: the GIL is released while the Rust core runs, and its error is
//! converted once the GIL is back. Microsecond calls stay attached: detaching costs more
//! than they do. Work that may run for long (dmesg, very large reads) goes through
//! `interruptible`, which also lets Ctrl-C through while it runs.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;

use super::errors::IntoPyResult;
use crate::cancel::Cancel;
use crate::errors::Error;

/// How often a waiting caller looks for signals (KeyboardInterrupt within a tenth of this
/// plus the work's own check interval).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

pub fn detached<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> Result<T, Error> + Send,
) -> PyResult<T> {
    py.detach(work).into_py_result(py)
}

/// Runs `work` on a worker thread while this thread, detached, wakes every 50 ms to run
/// Python's signal handlers. A handler that raises (Ctrl-C: KeyboardInterrupt) sets the
/// cancel flag; the work stops at its next check, and the exception is raised here, with
/// the process as healthy as before the call.
pub fn interruptible<T: Send>(
    py: Python<'_>,
    work: impl FnOnce(&Cancel) -> Result<T, Error> + Send,
) -> PyResult<T> {
    let cancel = Cancel::default();
    let done = (Mutex::new(false), Condvar::new());
    let (outcome, interrupted) = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let outcome = work(&cancel);
            let (flag, wake) = &done;
            *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
            wake.notify_all();
            outcome
        });
        let mut interrupted = None;
        loop {
            let finished = py.detach(|| {
                let (flag, wake) = &done;
                let guard = flag.lock().unwrap_or_else(PoisonError::into_inner);
                let (guard, _) = wake
                    .wait_timeout_while(guard, SIGNAL_CHECK, |finished| !*finished)
                    .unwrap_or_else(PoisonError::into_inner);
                *guard || worker.is_finished()
            });
            if finished {
                break;
            }
            if interrupted.is_none() {
                if let Err(error) = py.check_signals() {
                    cancel.set();
                    interrupted = Some(error);
                }
            }
        }
        let outcome = worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (outcome, interrupted)
    });
    match interrupted {
        Some(error) => Err(error),
        None => outcome.into_py_result(py),
    }
}
