//! One exec file, many dumps: a pipeline opens thousands of dumps of a few kernel builds, so
//! a parsed exec file is kept per process and shared by every handle that names it. The key
//! is (device, inode, size, mtime, ctime): a file changed in place is parsed again. Bounded;
//! the least recently used entry goes first.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::ExecFile;

const ENTRIES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Key {
    pub fn of(meta: &Metadata) -> Key {
        Key {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Most recently used last.
static CACHE: Mutex<Vec<(Key, Arc<ExecFile>)>> = Mutex::new(Vec::new());

/// Lookups that found their file, and those that did not (`kvm-rs -v` reports them).
static HITS: AtomicU64 = AtomicU64::new(0);
static MISSES: AtomicU64 = AtomicU64::new(0);

/// (hits, misses) since the process started.
pub fn stats() -> (u64, u64) {
    (HITS.load(Ordering::Relaxed), MISSES.load(Ordering::Relaxed))
}

pub fn get(key: &Key, path: &[u8]) -> Option<Arc<ExecFile>> {
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    let found = cache
        .iter()
        .position(|(k, exec)| k == key && exec.path == path);
    let counter = if found.is_some() { &HITS } else { &MISSES };
    counter.fetch_add(1, Ordering::Relaxed);
    let at = found?;
    let entry = cache.remove(at);
    let exec = Arc::clone(&entry.1);
    cache.push(entry);
    Some(exec)
}

pub fn put(key: Key, exec: Arc<ExecFile>) {
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    cache.retain(|(k, _)| *k != key);
    if cache.len() >= ENTRIES {
        cache.remove(0);
    }
    cache.push((key, exec));
}

/// Empties the cache (tests; a caller that wants the memory back).
pub fn clear() {
    CACHE.lock().unwrap_or_else(PoisonError::into_inner).clear();
}
