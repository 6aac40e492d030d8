//! Validating many dumps at once: each path opened and described in a worker thread (the
//! GIL is released by the caller), one report per path, in the order given. A dump that
//! fails to open is a report with the SPEC's message, never an error that stops the batch.

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::dmesg::Record;
use crate::session::{Info, OpenRequest, Session};

pub struct Report {
    pub path: Vec<u8>,
    pub error: Option<String>,
    pub info: Option<Info>,
    pub facts: Option<crate::session::DumpFacts>,
    pub panic: Option<String>,
}

/// What the kernel said when it died: the panic line, else the first oops or BUG line.
pub fn panic_message(records: &[Record]) -> Option<String> {
    const PANIC: &str = "Kernel panic - not syncing: ";
    let lines = || records.iter().flat_map(|r| r.text.split('\n'));
    // The first panic line; the last one is the "---[ end Kernel panic ... ]---" trailer.
    if let Some(line) = lines().find(|l| l.contains(PANIC)) {
        let at = line.find(PANIC).unwrap_or(0) + PANIC.len();
        let message = line.get(at..).unwrap_or(line);
        return Some(message.trim_end_matches(" ]---").trim().to_owned());
    }
    lines()
        .find(|l| {
            l.starts_with("BUG: ")
                || l.contains("kernel BUG at")
                || l.starts_with("Oops: ")
                || l.contains("general protection fault")
        })
        .map(|l| l.trim().to_owned())
}

fn describe(path: &[u8], template: &OpenRequest) -> Report {
    let mut request = template.clone();
    request.corefile = path.to_vec();
    match Session::open(&request) {
        Err(error) => Report {
            path: path.to_vec(),
            error: Some(error.to_string()),
            info: None,
            facts: None,
            panic: None,
        },
        Ok(session) => {
            let panic = session
                .dmesg()
                .ok()
                .and_then(|records| panic_message(&records));
            Report {
                path: path.to_vec(),
                error: None,
                info: session.info(),
                facts: session.dump_facts(),
                panic,
            }
        }
    }
}

pub fn scan(paths: &[Vec<u8>], template: &OpenRequest, threads: usize) -> Vec<Report> {
    // Largest files first: one big dump started last would leave the other threads idle.
    let mut order: Vec<(u64, usize)> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let size = std::fs::metadata(std::path::Path::new(std::ffi::OsStr::from_bytes(p)))
                .map_or(0, |m| m.len());
            (size, i)
        })
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<Report>>> = Mutex::new((0..paths.len()).map(|_| None).collect());
    let workers = threads.clamp(1, paths.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(&(_, index)) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let Some(path) = paths.get(index) else { break };
                    let report = describe(path, template);
                    let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(slot) = slots.get_mut(index) {
                        *slot = Some(report);
                    }
                }
            });
        }
    });
    slots
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> Record {
        Record {
            seq: 0,
            ts_nsec: 0,
            level: 0,
            text: text.into(),
        }
    }

    #[test]
    fn panic_line_wins_over_oops() {
        let log = [
            record("BUG: unable to handle page fault"),
            record("Kernel panic - not syncing: Fatal exception"),
        ];
        assert_eq!(panic_message(&log).as_deref(), Some("Fatal exception"));
        assert_eq!(
            panic_message(&log[..1]).as_deref(),
            Some("BUG: unable to handle page fault")
        );
        assert_eq!(panic_message(&[record("all is well")]), None);
    }
}
