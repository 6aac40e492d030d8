//! Stopping long native work from outside: the Python binding sets the flag when a signal
//! (Ctrl-C) arrives while the work runs detached; the work checks it between units (a dump,
//! a block of pages) and stops with `Error::Interrupted`.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::errors::Error;

#[derive(Debug, Default)]
pub struct Cancel(AtomicBool);

/// A flag nobody sets, for callers that cannot be interrupted.
pub static NEVER: Cancel = Cancel(AtomicBool::new(false));

impl Cancel {
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn check(&self) -> Result<(), Error> {
        if self.is_set() {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }
}
