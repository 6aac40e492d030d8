//! Validating many dumps at once: each path opened and described in a worker thread (the
//! caller runs this detached from Python), one report per dump. A dump that fails to open is
//! a report with the SPEC's message, never an error that stops the batch; only an exec file
//! that cannot be loaded at all stops it, before any dump is opened.
//!
//! `scan_stream` hands each report to a sink as soon as its dump is done; `scan` collects the
//! stream in input order.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::cancel::Cancel;
use crate::errors::{CoreFault, Error};
use crate::kernel::dmesg::panic_message;
use crate::session::{DumpFacts, Frame, Info, OpenRequest, Session};

/// `struct new_utsname`: six fields of 65 bytes; the release is the third.
const UTS_FIELD: u64 = 65;
const UTS_RELEASE: u64 = 2 * UTS_FIELD;
/// How far into `struct uts_namespace` the name may start (after a refcount).
const UTS_NAME_SEARCH: u64 = 16;

/// What a scan makes of each dump: how to open it (the template of every open: its core
/// files are the dump's), and whether to triage it too (`scan --triage`).
#[derive(Clone)]
pub struct ScanJob {
    pub open: OpenRequest,
    pub triage: bool,
}

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
    /// The file ends early: the dump opened and says so, or its open failed because the
    /// file ends inside its own headers.
    pub truncated: bool,
    /// `scan --triage`: the crashed task and its backtrace.
    pub crash: Option<Crash>,
}

/// What a triage scan adds to a report: the task on the CPU that panicked and its
/// backtrace (the signature is made from the frames by the Python layer).
pub struct Crash {
    pub pid: Option<i64>,
    pub comm: Option<String>,
    pub frames: Vec<Frame>,
    /// Why a part is missing (no BTF, no crash registers...).
    pub problems: Vec<String>,
}

/// The crashed task: the one running (`on_cpu`) on the CPU that panicked.
fn crash_of(session: &Session, cancel: &Cancel) -> Crash {
    if !session.has_symbols() {
        return Crash {
            pid: None,
            comm: None,
            frames: Vec::new(),
            problems: vec![
                "no symbol table: a kernel before 6.0 publishes no kallsyms; give -N".into(),
            ],
        };
    }
    let mut problems = Vec::new();
    let frames = session.crashed_stack().unwrap_or_else(|error| {
        problems.push(format!("backtrace: {error}"));
        Vec::new()
    });
    let cpu = match session.system_with(cancel) {
        Ok(facts) => facts.panic_cpu.map(u64::from),
        Err(error) => {
            problems.push(format!("crash CPU: {error}"));
            None
        }
    };
    let task = match (cpu, session.tasks_with(cancel)) {
        (Some(cpu), Ok(list)) => {
            let mut running = list
                .tasks
                .into_iter()
                .filter(|t| t.on_cpu.unwrap_or(0) != 0 && t.cpu == Some(cpu));
            match (running.next(), running.next()) {
                (Some(task), None) => Some(task),
                _ => None,
            }
        }
        (_, Err(error)) => {
            problems.push(format!("tasks: {error}"));
            None
        }
        (None, Ok(_)) => None,
    };
    Crash {
        pid: task.as_ref().map(|t| t.pid),
        comm: task.map(|t| String::from_utf8_lossy(&t.comm).into_owned()),
        frames,
        problems,
    }
}

impl Report {
    fn failed(paths: &[Vec<u8>], error: String, reason: Option<String>, truncated: bool) -> Report {
        Report {
            paths: paths.to_vec(),
            error: Some(error),
            info: None,
            facts: None,
            panic: None,
            readable: false,
            reason,
            truncated,
            crash: None,
        }
    }

    /// A split part alone (a report that will be described again with its siblings).
    fn split_part(&self) -> bool {
        self.info.as_ref().is_some_and(|i| i.pfn_range.is_some())
    }
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
fn describe(paths: &[Vec<u8>], job: &ScanJob, cancel: &Cancel) -> Report {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        describe_unguarded(paths, job, cancel)
    }))
    .unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        Report::failed(paths, format!("internal error: {what}"), None, false)
    })
}

fn describe_unguarded(paths: &[Vec<u8>], job: &ScanJob, cancel: &Cancel) -> Report {
    let mut request = job.open.clone();
    request.corefiles = paths.to_vec();
    match Session::open_with(&request, cancel) {
        Err(error) => Report::failed(
            paths,
            error.to_string(),
            error.reason().map(|r| r.text().to_owned()),
            matches!(
                error,
                Error::Core {
                    fault: CoreFault::Truncated(_),
                    ..
                }
            ),
        ),
        Ok(session) => {
            let readable = check_readable(&session);
            let panic = session
                .dmesg()
                .ok()
                .and_then(|records| panic_message(&records));
            let info = session.info();
            Report {
                paths: paths.to_vec(),
                error: None,
                truncated: info.as_ref().is_some_and(|i| i.truncated),
                info,
                facts: session.dump_facts(),
                panic,
                readable: readable.is_ok(),
                reason: readable.err(),
                crash: job.triage.then(|| crash_of(&session, cancel)),
            }
        }
    }
}

/// Runs `work` over `jobs` in `threads` threads, largest first, handing each result to
/// `done` with its job's index as soon as it is ready. Stops taking jobs once `cancel` is set.
fn run_each<J: Sync, R>(
    jobs: &[J],
    size: impl Fn(&J) -> u64,
    threads: usize,
    cancel: &Cancel,
    work: impl Fn(&J) -> R + Sync,
    done: impl Fn(usize, R) + Sync,
) {
    // Largest files first: one big dump started last would leave the other threads idle.
    let mut order: Vec<(u64, usize)> = jobs.iter().enumerate().map(|(i, j)| (size(j), i)).collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let next = AtomicUsize::new(0);
    let workers = threads.clamp(1, jobs.len().max(1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    while let Some(&(_, index)) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if cancel.is_set() {
                            break;
                        }
                        let Some(job) = jobs.get(index) else { break };
                        done(index, work(job));
                    }
                })
            })
            .collect();
        // Joined one by one, not left to the scope: the scope waits for the work only, a
        // join for the thread itself, so none outlives the scan (each dump runs under
        // catch_unwind: a worker has no panic to report).
        for handle in handles {
            let _ = handle.join();
        }
    });
}

fn file_size(path: &[u8]) -> u64 {
    std::fs::metadata(std::path::Path::new(std::ffi::OsStr::from_bytes(path)))
        .map_or(0, |m| m.len())
}

fn total_size(paths: &[Vec<u8>]) -> u64 {
    paths.iter().map(|f| file_size(f)).sum()
}

/// A dump's VMCOREINFO as `Info` gives it: the key of a split set.
type Vmcoreinfo = Vec<(String, String)>;

/// Loads the exec file the template names (none with `core_symbols`) once, before any dump:
/// one that cannot be loaded at all (missing, unreadable, not a symbol table) is the scan's
/// error, not every dump's. The exec cache then makes each dump's own load a hit.
pub fn check_exec(template: &OpenRequest) -> Result<(), Error> {
    if template.core_symbols {
        return Ok(());
    }
    // `Session::open` loads the exec file before it reads any core file: with none, a loaded
    // exec file is followed by the empty set's error, and any other error is the exec file's.
    let probe = OpenRequest {
        corefiles: Vec::new(),
        ..template.clone()
    };
    let outcome = std::panic::catch_unwind(|| Session::open(&probe).map(drop));
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(Error::Core { path, .. })) if path.is_empty() => Ok(()),
        Ok(Err(error)) => Err(error),
        // A panic is the dumps' to report, one by one, as before.
        Err(_) => Ok(()),
    }
}

/// Every dump of `paths` described in `threads` threads, largest first; `sink` gets each
/// report as soon as it is done, with the index in `paths` of its first file. The parts of a
/// split dump are held back until every dump is done, then described together (one report,
/// at the index of the first part found); a part with no sibling among `paths` is reported
/// alone. Err: the exec file cannot be loaded (before any report), or `cancel` was set (the
/// reports already handed over stand).
pub fn scan_stream(
    paths: &[Vec<u8>],
    job: &ScanJob,
    threads: usize,
    cancel: &Cancel,
    sink: impl Fn(usize, Report) + Sync,
) -> Result<(), Error> {
    check_exec(&job.open)?;
    let singles: Vec<Vec<Vec<u8>>> = paths.iter().map(|p| vec![p.clone()]).collect();
    let held: Mutex<Vec<(usize, Report)>> = Mutex::new(Vec::new());
    run_each(
        &singles,
        |files| total_size(files),
        threads,
        cancel,
        |p| describe(p, job, cancel),
        |index, report| {
            if report.split_part() {
                held.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((index, report));
            } else {
                sink(index, report);
            }
        },
    );
    cancel.check()?;
    let mut held = held.into_inner().unwrap_or_else(PoisonError::into_inner);
    held.sort_by_key(|(index, _)| *index);
    // Parts of one dump carry the same VMCOREINFO (it names the boot and the crash time).
    let mut groups: HashMap<Vmcoreinfo, Vec<(usize, Report)>> = HashMap::new();
    let mut keys = Vec::new();
    for (index, report) in held {
        let key = report
            .info
            .as_ref()
            .map(|i| i.vmcoreinfo.clone())
            .unwrap_or_default();
        let group = groups.entry(key.clone()).or_default();
        if group.is_empty() {
            keys.push(key);
        }
        group.push((index, report));
    }
    // (index of the first part, every part's files) per set of two or more parts.
    let mut sets: Vec<(usize, Vec<Vec<u8>>)> = Vec::new();
    for key in keys {
        let Some(group) = groups.remove(&key) else {
            continue;
        };
        if group.len() == 1 {
            for (index, report) in group {
                sink(index, report);
            }
        } else if let Some(&(first, _)) = group.first() {
            let files = group.into_iter().flat_map(|(_, r)| r.paths).collect();
            sets.push((first, files));
        }
    }
    run_each(
        &sets,
        |(_, files)| total_size(files),
        threads,
        cancel,
        |(_, files)| describe(files, job, cancel),
        |at, report| {
            if let Some((first, _)) = sets.get(at) {
                sink(*first, report);
            }
        },
    );
    cancel.check()
}

/// One report per dump, in the order of `paths` (the stream, collected and sorted); the
/// parts of a split dump found among them are opened together and reported once, where the
/// first of them stands.
pub fn scan(
    paths: &[Vec<u8>],
    job: &ScanJob,
    threads: usize,
    cancel: &Cancel,
) -> Result<Vec<Report>, Error> {
    let reports: Mutex<Vec<(usize, Report)>> = Mutex::new(Vec::with_capacity(paths.len()));
    scan_stream(paths, job, threads, cancel, |index, report| {
        reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((index, report));
    })?;
    let mut reports = reports.into_inner().unwrap_or_else(PoisonError::into_inner);
    reports.sort_by_key(|(index, _)| *index);
    Ok(reports.into_iter().map(|(_, report)| report).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::dmesg::Record;

    fn record(text: &str) -> Record {
        Record {
            seq: 0,
            ts_nsec: 0,
            level: 0,
            caller: None,
            text: text.into(),
        }
    }

    fn template(execfile: Option<&[u8]>) -> ScanJob {
        ScanJob {
            open: OpenRequest {
                core_symbols: execfile.is_none(),
                symbols_optional: true,
                execfile: execfile.map(<[u8]>::to_vec),
                flags: i64::from(libc::O_RDONLY),
                ..OpenRequest::default()
            },
            triage: false,
        }
    }

    #[test]
    fn an_exec_file_that_cannot_load_stops_the_scan_before_any_dump() {
        let paths = vec![b"/nonexistent/a".to_vec(), b"/nonexistent/b".to_vec()];
        let seen = Mutex::new(0);
        let outcome = scan_stream(
            &paths,
            &template(Some(b"/nonexistent/vmlinux")),
            2,
            &Cancel::default(),
            |_, _| *seen.lock().unwrap_or_else(PoisonError::into_inner) += 1,
        );
        assert_eq!(
            outcome.err().map(|e| e.to_string()),
            Some("/nonexistent/vmlinux: No such file or directory".to_owned())
        );
        assert_eq!(*seen.lock().unwrap_or_else(PoisonError::into_inner), 0);
    }

    #[test]
    fn every_path_is_streamed_once_with_its_index() {
        let paths: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("/nonexistent/{i}").into_bytes())
            .collect();
        let seen = Mutex::new(Vec::new());
        let outcome = scan_stream(&paths, &template(None), 3, &Cancel::default(), |i, r| {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((i, r.paths, r.truncated));
        });
        assert!(outcome.is_ok());
        let mut seen = seen.into_inner().unwrap_or_else(PoisonError::into_inner);
        seen.sort();
        let expected: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (i, vec![p.clone()], false))
            .collect();
        assert_eq!(seen, expected);
        let collected = scan(&paths, &template(None), 2, &Cancel::default());
        let firsts: Vec<_> = collected
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.paths)
            .collect();
        assert_eq!(
            firsts,
            paths.iter().map(|p| vec![p.clone()]).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_cancelled_scan_describes_nothing_more() {
        let cancel = Cancel::default();
        cancel.set();
        let paths = vec![b"/nonexistent/a".to_vec()];
        let outcome = scan_stream(&paths, &template(None), 1, &cancel, |_, _| {
            unreachable!("no dump is described after cancel")
        });
        assert!(matches!(outcome, Err(Error::Interrupted)));
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
