//! The name → symbol index behind `nlist`: one sorted vector of (name, symbol), names kept
//! as offsets into the exec file's bytes, so the index owns no strings.

use super::{ExecFile, Symbol};

struct Entry {
    name_at: usize,
    name_len: u32,
    symbol: Symbol,
}

pub struct NameIndex {
    entries: Vec<Entry>,
}

impl NameIndex {
    pub fn build(exec: &ExecFile) -> NameIndex {
        let mut entries = Vec::new();
        exec.for_each(|name, name_at, symbol| {
            if let Ok(name_len) = u32::try_from(name.len()) {
                entries.push(Entry {
                    name_at,
                    name_len,
                    symbol,
                });
            }
        });
        let data = exec.data();
        // A name defined more than once (static functions) resolves to a global definition
        // first, then to the first in file order (the sort is stable).
        entries.sort_by(|a, b| {
            name_of(data, a)
                .cmp(name_of(data, b))
                .then(b.symbol.is_global().cmp(&a.symbol.is_global()))
        });
        entries.dedup_by(|later, first| name_of(data, later) == name_of(data, first));
        entries.shrink_to_fit();
        NameIndex { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, data: &[u8], name: &[u8]) -> Option<Symbol> {
        let at = self
            .entries
            .binary_search_by(|e| name_of(data, e).cmp(name))
            .ok()?;
        self.entries.get(at).map(|e| e.symbol)
    }
}

fn name_of<'a>(data: &'a [u8], entry: &Entry) -> &'a [u8] {
    data.get(entry.name_at..entry.name_at + entry.name_len as usize)
        .unwrap_or(&[])
}
