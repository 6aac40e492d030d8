//! What every dump of one kernel build shares, kept per process: the decoded names of its
//! kallsyms tables and its parsed BTF. A pipeline sees thousands of dumps of a few builds,
//! and these are most of a triage's cost (a thousand compressed pages of BTF, hundreds of
//! kallsyms names). The key is the bytes that identify the data, compared whole, never a
//! hash: the release and BUILD-ID from VMCOREINFO (BUILD-ID alone is garbage on some stable
//! kernels), plus bytes each user reads from the dump itself (its token table, the first and
//! last page of BTF). A dump that claims another build's key gets that build's data, never
//! unchecked bytes. Bounded; the least recently used build goes first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::formats::vmcoreinfo::VmcoreInfo;

/// Builds remembered per cache: a fleet runs a few kernels at a time.
const BUILDS: usize = 4;

pub struct BuildCache<V> {
    /// Most recently used last.
    entries: Mutex<Vec<(Vec<u8>, Arc<V>)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<V> BuildCache<V> {
    pub const fn new() -> BuildCache<V> {
        BuildCache {
            entries: Mutex::new(Vec::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Arc<V>> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let found = entries.iter().position(|(k, _)| k == key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let at = found?;
        let entry = entries.remove(at);
        let value = Arc::clone(&entry.1);
        entries.push(entry);
        Some(value)
    }

    pub fn put(&self, key: Vec<u8>, value: Arc<V>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|(k, _)| *k != key);
        if entries.len() >= BUILDS {
            entries.remove(0);
        }
        entries.push((key, value));
    }

    /// (hits, misses) since the process started.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl<V> Default for BuildCache<V> {
    fn default() -> Self {
        BuildCache::new()
    }
}

/// The start of a key: the build as VMCOREINFO names it. None without a release (nothing to
/// tell builds apart by: the data is not cached).
pub fn build_key(info: &VmcoreInfo) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(4096);
    key.extend_from_slice(info.osrelease()?.as_bytes());
    key.push(b'\n');
    key.extend_from_slice(info.build_id().unwrap_or("").as_bytes());
    key.push(b'\n');
    Some(key)
}

/// Empties every cache of build data (tests; a caller that wants the memory back).
pub fn clear() {
    super::kallsyms::NAMES.clear();
    crate::session::BTF_BUILDS.clear();
}

/// (hits, misses) of the kallsyms names and of BTF together.
pub fn stats() -> (u64, u64) {
    let (names_hits, names_misses) = super::kallsyms::NAMES.stats();
    let (btf_hits, btf_misses) = crate::session::BTF_BUILDS.stats();
    (
        names_hits.saturating_add(btf_hits),
        names_misses.saturating_add(btf_misses),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_least_recently_used_first() {
        let cache: BuildCache<u8> = BuildCache::new();
        for n in (0..=u8::MAX).take(BUILDS) {
            cache.put(vec![n], Arc::new(n));
        }
        assert_eq!(cache.get(&[0]).as_deref(), Some(&0));
        cache.put(vec![99], Arc::new(99));
        // 1 was the least recently used: 0 was just read.
        assert!(cache.get(&[1]).is_none());
        assert_eq!(cache.get(&[0]).as_deref(), Some(&0));
        assert_eq!(cache.get(&[99]).as_deref(), Some(&99));
        assert!(cache.get(&[0, 0]).is_none(), "keys compare whole");
    }
}
