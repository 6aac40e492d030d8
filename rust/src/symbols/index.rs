//! The name → symbol index behind `nlist`, built once on first use: the symbols in file
//! order, and (hash of name, position) pairs sorted. Sorting integers is several times
//! faster than sorting strings, and the index is on the path of every pipeline's first
//! `nlist`. Names stay in the exec file's bytes; the index owns no strings.

use super::{ExecFile, Symbol};

struct Entry {
    name_at: usize,
    name_len: u32,
    symbol: Symbol,
}

pub struct NameIndex {
    entries: Vec<Entry>,
    /// (hash, index into `entries`), sorted: file order within a hash.
    by_hash: Vec<(u64, u32)>,
}

/// FNV-1a: short keys, no allocation, stable across runs.
fn hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl NameIndex {
    pub fn build(exec: &ExecFile) -> NameIndex {
        let mut entries = Vec::new();
        let mut by_hash = Vec::new();
        exec.for_each(|name, name_at, symbol| {
            if let (Ok(name_len), Ok(at)) =
                (u32::try_from(name.len()), u32::try_from(entries.len()))
            {
                by_hash.push((hash(name), at));
                entries.push(Entry {
                    name_at,
                    name_len,
                    symbol,
                });
            }
        });
        by_hash.sort_unstable();
        NameIndex { entries, by_hash }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A name defined more than once (static functions) resolves to its global definition,
    /// else to the first in file order.
    pub fn get(&self, data: &[u8], name: &[u8]) -> Option<Symbol> {
        let key = hash(name);
        let start = self.by_hash.partition_point(|&(h, _)| h < key);
        let mut same = self
            .by_hash
            .get(start..)?
            .iter()
            .take_while(|&&(h, _)| h == key)
            .filter_map(|&(_, at)| self.entries.get(at as usize))
            .filter(|e| name_of(data, e) == name)
            .map(|e| e.symbol);
        let first = same.next()?;
        if first.is_global() {
            return Some(first);
        }
        Some(same.find(Symbol::is_global).unwrap_or(first))
    }
}

fn name_of<'a>(data: &'a [u8], entry: &Entry) -> &'a [u8] {
    data.get(entry.name_at..entry.name_at + entry.name_len as usize)
        .unwrap_or(&[])
}
