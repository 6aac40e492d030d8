//! The name → symbol index behind `nlist`, built once on first use: one vector sorted by a
//! 64-bit hash of the name (sorting integers is several times faster than sorting strings,
//! and the index is on the path of every pipeline's first `nlist`). Names stay in the exec
//! file's bytes; entries hold their offsets, so the index owns no strings.

use super::{ExecFile, Symbol};

struct Entry {
    hash: u64,
    name_at: usize,
    name_len: u32,
    symbol: Symbol,
}

pub struct NameIndex {
    entries: Vec<Entry>,
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
        exec.for_each(|name, name_at, symbol| {
            if let Ok(name_len) = u32::try_from(name.len()) {
                entries.push(Entry {
                    hash: hash(name),
                    name_at,
                    name_len,
                    symbol,
                });
            }
        });
        // Stable: entries of one name keep file order, which `get` relies on.
        entries.sort_by_key(|e| e.hash);
        NameIndex { entries }
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
        let start = self.entries.partition_point(|e| e.hash < key);
        let mut same = self
            .entries
            .get(start..)?
            .iter()
            .take_while(|e| e.hash == key)
            .filter(|e| name_of(data, e) == name);
        let first = same.next()?.symbol;
        if first.is_global() {
            return Some(first);
        }
        Some(
            same.map(|e| e.symbol)
                .find(Symbol::is_global)
                .unwrap_or(first),
        )
    }
}

fn name_of<'a>(data: &'a [u8], entry: &Entry) -> &'a [u8] {
    data.get(entry.name_at..entry.name_at + entry.name_len as usize)
        .unwrap_or(&[])
}
