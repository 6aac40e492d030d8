//! A bounded cache of decompressed pages, shared by the threads reading through a handle.
//! First in, first out: a dump is read in bursts around a few structures, and FIFO keeps
//! the bookkeeping to one map and one queue under one short-held lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

pub const DEFAULT_PAGES: usize = 64;

/// The cache size of new handles: `KVM_RS_PAGE_CACHE` (pages; 0 disables), else 64.
pub fn configured_pages() -> usize {
    std::env::var("KVM_RS_PAGE_CACHE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_PAGES)
}

pub struct PageCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    pages: HashMap<u64, Arc<[u8]>>,
    order: VecDeque<u64>,
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
    fn bounded_fifo() {
        let cache = PageCache::new(2);
        for key in 0..3u64 {
            cache.insert(key, Arc::from(vec![key as u8]));
        }
        assert!(cache.get(0).is_none());
        assert_eq!(cache.get(2).as_deref(), Some(&[2u8][..]));
    }
}
