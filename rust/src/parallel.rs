//! A large read split across the machine's idle cores. Reading a compressed dump is page
//! decompression, and pages decode independently: a triage's 4 MiB of BTF is a thousand
//! pages. Helper threads are a process-wide budget (one fewer than the cores), so threads
//! that already read in parallel (a scan's workers) do not multiply them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Below this a read is not worth a thread.
const MIN_PARALLEL: usize = 256 << 10;
/// A unit of work: small enough to share a read out evenly, large enough to be worth one.
const PART: usize = 64 << 10;
/// However many cores: a read is also bounded by the file's I/O.
const MAX_HELPERS: usize = 3;

static HELPERS_BUSY: AtomicUsize = AtomicUsize::new(0);

fn helper_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .saturating_sub(1)
            .min(MAX_HELPERS)
    })
}

/// Helper threads taken from the budget, given back when dropped.
struct Helpers(usize);

impl Helpers {
    fn take(wanted: usize) -> Helpers {
        let mut taken = 0;
        let _ = HELPERS_BUSY.fetch_update(Ordering::AcqRel, Ordering::Acquire, |busy| {
            taken = helper_budget().saturating_sub(busy).min(wanted);
            busy.checked_add(taken)
        });
        Helpers(taken)
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        HELPERS_BUSY.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// What one part came to: its length, the bytes filled, and why it stopped short.
type PartResult<E> = (usize, usize, Option<E>);

/// Fills `buf` with `fill(offset, part)` over parts of it, on helper threads where the
/// budget has any, and answers as one `fill(0, buf)` would: the bytes filled up to the first
/// part that stopped short, and why it stopped. Parts after one that stopped are not
/// started.
pub fn fill<E: Send>(
    buf: &mut [u8],
    fill: impl Fn(usize, &mut [u8]) -> (usize, Option<E>) + Sync,
) -> (usize, Option<E>) {
    if buf.len() < MIN_PARALLEL {
        return fill(0, buf);
    }
    let part_count = buf.len().div_ceil(PART);
    let helpers = Helpers::take(part_count.saturating_sub(1));
    if helpers.0 == 0 {
        return fill(0, buf);
    }
    let parts: Vec<Mutex<Option<&mut [u8]>>> =
        buf.chunks_mut(PART).map(|p| Mutex::new(Some(p))).collect();
    let results: Vec<Mutex<Option<PartResult<E>>>> =
        parts.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let first_short = AtomicUsize::new(usize::MAX);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i > first_short.load(Ordering::Relaxed) {
            return;
        }
        let Some(slot) = parts.get(i) else {
            return;
        };
        let Some(part) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            continue;
        };
        let len = part.len();
        let (done, error) = fill(i.saturating_mul(PART), part);
        if done < len || error.is_some() {
            first_short.fetch_min(i, Ordering::Relaxed);
        }
        if let Some(result) = results.get(i) {
            *result.lock().unwrap_or_else(PoisonError::into_inner) = Some((len, done, error));
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..helpers.0 {
            // A thread the system refuses leaves its share to the others.
            if std::thread::Builder::new()
                .spawn_scoped(scope, work)
                .is_err()
            {
                break;
            }
        }
        work();
    });
    drop(helpers);
    let mut filled = 0usize;
    for result in results {
        let Some((len, done, error)) = result.into_inner().unwrap_or_else(PoisonError::into_inner)
        else {
            break;
        };
        filled = filled.saturating_add(done);
        if done < len || error.is_some() {
            return (filled, error);
        }
    }
    (filled, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_as_one_call_would() {
        let mut buf = vec![0u8; 1 << 20];
        let (done, error) = fill(&mut buf, |at, part| {
            part.iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = ((at + i) % 251) as u8);
            (part.len(), None::<String>)
        });
        assert_eq!((done, error), (1 << 20, None));
        assert!(buf.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));

        // A part that stops short ends the read there, with its error, whatever the
        // others did.
        let stop = 5 * PART + 100;
        let (done, error) = fill(&mut buf, |at, part| {
            if at + part.len() <= stop {
                (part.len(), None)
            } else if at <= stop {
                (stop - at, Some(format!("stopped at {stop}")))
            } else {
                (part.len(), None)
            }
        });
        assert_eq!((done, error), (stop, Some(format!("stopped at {stop}"))));
    }
}
