//! A bounded cache of decompressed pages, shared by the threads reading through a handle.
//! First in, first out: a dump is read in bursts around a few structures, and FIFO keeps
//! the bookkeeping to one map and one queue under one short-held lock.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use crate::errors::Error;

pub const DEFAULT_PAGES: usize = 64;
/// The most pages `KVM_RS_PAGE_CACHE` may ask for (4 GiB of 4 KiB pages): a larger value
/// is a typo, not a cache.
pub const MAX_PAGES: usize = 1 << 20;
const VARIABLE: &str = "KVM_RS_PAGE_CACHE";

/// The cache size of new handles: `KVM_RS_PAGE_CACHE` (pages, 0 disables it), else 64 when
/// it is unset or empty. Any other value is an error: open refuses it (`Session::open`).
pub fn setting() -> Result<usize, Error> {
    parse(std::env::var_os(VARIABLE).as_deref())
}

/// `setting()`, for a format that opens after the session checked it.
pub fn configured_pages() -> usize {
    setting().unwrap_or(DEFAULT_PAGES)
}

fn parse(value: Option<&OsStr>) -> Result<usize, Error> {
    let Some(raw) = value else {
        return Ok(DEFAULT_PAGES);
    };
    let text = raw.to_string_lossy();
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(DEFAULT_PAGES);
    }
    match trimmed.parse::<usize>() {
        Ok(pages) if pages <= MAX_PAGES => Ok(pages),
        _ => Err(Error::PageCacheSetting {
            value: text.into_owned(),
            max: MAX_PAGES,
        }),
    }
}

pub struct PageCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    pages: HashMap<u64, Arc<[u8]>, BuildHasherDefault<KeyHasher>>,
    order: VecDeque<u64>,
}

/// One multiply (Fibonacci hashing) instead of SipHash on every warm read. Keys a reader
/// picks to collide cost at most a probe through the cache's few entries (its capacity).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
        self.0 = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl PageCache {
    pub fn new(capacity: usize) -> PageCache {
        PageCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn get(&self, key: u64) -> Option<Arc<[u8]>> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pages
            .get(&key)
            .cloned()
    }

    pub fn insert(&self, key: u64, page: Arc<[u8]>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.pages.insert(key, page).is_some() {
            return;
        }
        inner.order.push_back(key);
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.pages.remove(&old);
            }
        }
    }

    pub fn clear(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.pages.clear();
        inner.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_is_a_bounded_page_count() {
        let parsed = |text: &str| parse(Some(OsStr::new(text)));
        assert_eq!(parse(None), Ok(DEFAULT_PAGES));
        assert_eq!(parsed(""), Ok(DEFAULT_PAGES));
        assert_eq!(parsed(" 0 "), Ok(0));
        assert_eq!(parsed("1048576"), Ok(MAX_PAGES));
        for bad in ["abc", "-1", "1048577", "1e3", "99999999999999999999999"] {
            let error = parsed(bad).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("KVM_RS_PAGE_CACHE={bad}: not a number of pages (0 to 1048576)")
            );
        }
    }

    #[test]
    fn bounded_fifo() {
        let cache = PageCache::new(2);
        for key in 0..3u64 {
            cache.insert(key, Arc::from(vec![key as u8]));
        }
        assert!(cache.get(0).is_none());
        assert_eq!(cache.get(2).as_deref(), Some(&[2u8][..]));
    }
}
