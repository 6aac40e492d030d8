//! Validating many dumps at once: each path opened and described in a worker thread (the
//! GIL is released by the caller), one report per path, in the order given. A dump that
//! fails to open is a report with the SPEC's message, never an error that stops the batch.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::cancel::Cancel;
use crate::kernel::dmesg::Record;
use crate::session::{DumpFacts, Info, OpenRequest, Session};

/// `struct new_utsname`: six fields of 65 bytes; the release is the third.
const UTS_FIELD: u64 = 65;
const UTS_RELEASE: u64 = 2 * UTS_FIELD;
/// How far into `struct uts_namespace` the name may start (after a refcount).
const UTS_NAME_SEARCH: u64 = 16;

pub struct Report {
    /// The files of this report: one dump, or every part of a split dump.
    pub paths: Vec<Vec<u8>>,
    pub error: Option<String>,
    pub info: Option<Info>,
    pub facts: Option<DumpFacts>,
    pub panic: Option<String>,
    /// The kernel's memory reads back right through its own page tables.
    pub readable: bool,
    /// Why the dump is not readable (or, with `error`, why it did not open).
    pub reason: Option<String>,
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

/// Reads the release at `init_uts_ns` through the kernel's page tables and compares it
/// with VMCOREINFO's: Err is why the memory is not readable.
fn check_readable(session: &Session) -> Result<(), String> {
    let core = session.core().ok_or("no core file")?;
    let info = &core.vmcoreinfo;
    let expected = info
        .osrelease()
        .ok_or("VMCOREINFO has no OSRELEASE to compare with")?;
    let uts_ns = match info.symbol("init_uts_ns") {
        Some(addr) => addr,
        None => session
            .nlist(&[b"init_uts_ns".to_vec()])
            .ok()
            .and_then(|found| found.into_iter().flatten().next())
            .map(|(_, value)| value)
            .ok_or("no init_uts_ns in VMCOREINFO or the symbols")?,
    };
    // Kernels before 6.0 publish no OFFSET(uts_namespace.name): there a `struct kref`
    // (4 bytes) comes first, and the name is where the sysname "Linux" starts.
    let published = info
        .get("OFFSET(uts_namespace.name)")
        .and_then(|v| v.parse::<u64>().ok());
    let span = UTS_NAME_SEARCH + UTS_RELEASE + UTS_FIELD;
    let base = uts_ns.wrapping_add(published.unwrap_or(0));
    let (bytes, error) = session.read(base, span as usize);
    if let Some(error) = error {
        let reason = error
            .reason()
            .map_or(String::new(), |r| format!(": {}", r.text()));
        return Err(format!("init_uts_ns: {error}{reason}"));
    }
    let name = match published {
        Some(_) => 0,
        None => (0..=UTS_NAME_SEARCH)
            .step_by(4)
            .find(|&at| {
                bytes
                    .get(at as usize..)
                    .is_some_and(|b| b.starts_with(b"Linux\0"))
            })
            .unwrap_or(0),
    };
    let from = name.saturating_add(UTS_RELEASE) as usize;
    let bytes = bytes.get(from..).unwrap_or(&[]);
    let bytes = bytes.get(..UTS_FIELD as usize).unwrap_or(bytes);
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let found = String::from_utf8_lossy(bytes.get(..end).unwrap_or(&[]));
    if found != expected {
        return Err(format!(
            "init_uts_ns holds release {found:?}, VMCOREINFO says {expected:?}"
        ));
    }
    Ok(())
}

/// One dump's report; a panic in the library becomes that dump's report, never the batch's.
fn describe(paths: &[Vec<u8>], template: &OpenRequest) -> Report {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        describe_unguarded(paths, template)
    }))
    .unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        Report {
            paths: paths.to_vec(),
            error: Some(format!("internal error: {what}")),
            info: None,
            facts: None,
            panic: None,
            readable: false,
            reason: None,
        }
    })
}

fn describe_unguarded(paths: &[Vec<u8>], template: &OpenRequest) -> Report {
    let mut request = template.clone();
    request.corefiles = paths.to_vec();
    match Session::open(&request) {
        Err(error) => Report {
            paths: paths.to_vec(),
            reason: error.reason().map(|r| r.text().to_owned()),
            error: Some(error.to_string()),
            info: None,
            facts: None,
            panic: None,
            readable: false,
        },
        Ok(session) => {
            let readable = check_readable(&session);
            let panic = session
                .dmesg()
                .ok()
                .and_then(|records| panic_message(&records));
            Report {
                paths: paths.to_vec(),
                error: None,
                info: session.info(),
                facts: session.dump_facts(),
                panic,
                readable: readable.is_ok(),
                reason: readable.err(),
            }
        }
    }
}

/// Runs `work` over `jobs` in `threads` threads, largest first; results in job order (a
/// cancelled run returns the jobs done).
fn run_all<J: Sync, R: Send>(
    jobs: &[J],
    size: impl Fn(&J) -> u64,
    threads: usize,
    cancel: &Cancel,
    work: impl Fn(&J) -> R + Sync,
) -> Vec<R> {
    // Largest files first: one big dump started last would leave the other threads idle.
    let mut order: Vec<(u64, usize)> = jobs.iter().enumerate().map(|(i, j)| (size(j), i)).collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<R>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    let workers = threads.clamp(1, jobs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(&(_, index)) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if cancel.is_set() {
                        break;
                    }
                    let Some(job) = jobs.get(index) else { break };
                    let result = work(job);
                    let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(slot) = slots.get_mut(index) {
                        *slot = Some(result);
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

fn file_size(path: &[u8]) -> u64 {
    std::fs::metadata(std::path::Path::new(std::ffi::OsStr::from_bytes(path)))
        .map_or(0, |m| m.len())
}

/// One report per dump, in the order of `paths`; the parts of a split dump found among
/// them are opened together and reported once, where the first of them stands.
pub fn scan(
    paths: &[Vec<u8>],
    template: &OpenRequest,
    threads: usize,
    cancel: &Cancel,
) -> Result<Vec<Report>, crate::errors::Error> {
    let size = |p: &Vec<Vec<u8>>| p.iter().map(|f| file_size(f)).sum();
    let singles: Vec<Vec<Vec<u8>>> = paths.iter().map(|p| vec![p.clone()]).collect();
    let mut reports = run_all(&singles, size, threads, cancel, |p| describe(p, template));
    cancel.check()?;
    // Parts of one dump carry the same VMCOREINFO (it names the boot and the crash time).
    let mut groups: HashMap<Vec<(String, String)>, Vec<usize>> = HashMap::new();
    for (index, report) in reports.iter().enumerate() {
        if let Some(info) = report.info.as_ref().filter(|i| i.pfn_range.is_some()) {
            groups
                .entry(info.vmcoreinfo.clone())
                .or_default()
                .push(index);
        }
    }
    let sets: Vec<Vec<usize>> = groups.into_values().filter(|g| g.len() > 1).collect();
    if sets.is_empty() {
        return Ok(reports);
    }
    let set_paths: Vec<Vec<Vec<u8>>> = sets
        .iter()
        .map(|set| {
            set.iter()
                .filter_map(|&i| reports.get(i))
                .flat_map(|r| r.paths.clone())
                .collect()
        })
        .collect();
    let mut joined = run_all(&set_paths, size, threads, cancel, |p| describe(p, template));
    cancel.check()?;
    let mut absorbed = vec![false; reports.len()];
    for (set, report) in sets.iter().zip(joined.drain(..)) {
        let Some((&first, rest)) = set.split_first() else {
            continue;
        };
        if let Some(slot) = reports.get_mut(first) {
            *slot = report;
        }
        for &part in rest {
            if let Some(flag) = absorbed.get_mut(part) {
                *flag = true;
            }
        }
    }
    let mut kept = absorbed.iter();
    reports.retain(|_| !kept.next().copied().unwrap_or(false));
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> Record {
        Record {
            seq: 0,
            ts_nsec: 0,
            level: 0,
            caller: None,
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
