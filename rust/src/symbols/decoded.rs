//! A symbol table decoded from the dump itself (its kallsyms tables): the names side by side
//! in one buffer, shared by every dump of the kernel build, and each dump's own values (a
//! KASLR boot moves them). Read by the same `for_each` as the file formats, with nothing
//! left to parse.

use std::sync::Arc;

use super::Symbol;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where the name starts in the names buffer.
    name_at: u32,
    name_len: u16,
    letter: u8,
}

/// The names of a kallsyms table in table order, with their `nm` type letters.
#[derive(Default)]
pub struct NameList {
    names: Vec<u8>,
    entries: Vec<Entry>,
}

impl NameList {
    pub fn with_capacity(symbols: usize) -> NameList {
        NameList {
            // About twenty bytes a name.
            names: Vec::with_capacity(symbols.saturating_mul(20)),
            entries: Vec::with_capacity(symbols),
        }
    }

    /// Adds a name; false when the list cannot hold it (a name past u16, or names past
    /// 4 GiB in all: the decoder's own bounds are far below both).
    pub fn push(&mut self, letter: u8, name: &[u8]) -> bool {
        let (Ok(name_at), Ok(name_len)) =
            (u32::try_from(self.names.len()), u16::try_from(name.len()))
        else {
            return false;
        };
        self.names.extend_from_slice(name);
        self.entries.push(Entry {
            name_at,
            name_len,
            letter,
        });
        true
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.names
    }
}

/// A dump's symbols: a build's names and this dump's value of each.
pub struct DecodedTable {
    names: Arc<NameList>,
    values: Vec<u64>,
}

impl DecodedTable {
    /// None unless there is a value for every name.
    pub fn new(names: Arc<NameList>, values: Vec<u64>) -> Option<DecodedTable> {
        (names.len() == values.len()).then_some(DecodedTable { names, values })
    }

    pub fn count(&self) -> usize {
        self.values.len()
    }

    pub fn names(&self) -> &Arc<NameList> {
        &self.names
    }

    /// Every symbol in table order, as (name, where it starts in the names buffer, symbol).
    pub fn for_each(&self, visit: &mut impl FnMut(&[u8], usize, Symbol)) {
        let names = self.names.bytes();
        for (entry, &value) in self.names.entries.iter().zip(&self.values) {
            let at = entry.name_at as usize;
            let Some(name) = at
                .checked_add(usize::from(entry.name_len))
                .and_then(|end| names.get(at..end))
            else {
                continue;
            };
            visit(
                name,
                at,
                Symbol {
                    value,
                    letter: entry.letter,
                },
            );
        }
    }
}
