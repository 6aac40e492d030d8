//! The name → symbol index behind `nlist`, built once on first use: an open-addressing hash
//! table over the symbols. Built in one pass, with no sort: the index is on the path of every
//! pipeline's first `nlist` (127,000 symbols in a vmlinux). Names stay in the exec file's
//! bytes; the table holds positions, so the index owns no strings.

use super::{ExecFile, Symbol};

struct Entry {
    hash: u64,
    name_at: usize,
    name_len: u32,
    symbol: Symbol,
}

pub struct NameIndex {
    entries: Vec<Entry>,
    /// 1 + index into `entries`, 0 for an empty slot; a power of two, at most half full.
    slots: Vec<u32>,
    /// slots.len() - 1: a slot number modulo the table's size.
    mask: usize,
    shift: u32,
}

const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// Eight bytes at a time: symbol names average twenty.
fn hash(name: &[u8]) -> u64 {
    let mut chunks = name.chunks_exact(8);
    let mut h = name.len() as u64;
    for chunk in &mut chunks {
        let word = chunk.try_into().map_or(0, u64::from_le_bytes);
        h = (h.rotate_left(23) ^ word).wrapping_mul(MULTIPLIER);
    }
    let mut last = [0u8; 8];
    last.iter_mut()
        .zip(chunks.remainder())
        .for_each(|(d, s)| *d = *s);
    (h.rotate_left(23) ^ u64::from_le_bytes(last)).wrapping_mul(MULTIPLIER)
}

fn name_of<'a>(data: &'a [u8], entry: &Entry) -> &'a [u8] {
    entry
        .name_at
        .checked_add(entry.name_len as usize)
        .and_then(|end| data.get(entry.name_at..end))
        .unwrap_or(&[])
}

/// The slot after `slot`, round the table.
#[inline]
fn next_slot(slot: usize, mask: usize) -> usize {
    // slot <= mask < usize::MAX: the add never wraps; the mask takes it round.
    slot.wrapping_add(1) & mask
}

impl NameIndex {
    pub fn build(exec: &ExecFile) -> NameIndex {
        let data = exec.data();
        let mut entries = Vec::with_capacity(exec.symbol_count_hint());
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
        // At least twice as many slots as names (16 at least), a power of two.
        let slot_count = match entries
            .len()
            .max(8)
            .checked_mul(2)
            .and_then(usize::checked_next_power_of_two)
        {
            Some(n) => n,
            None => {
                // Never: a Vec of 32-byte entries is far shorter than usize::MAX / 2.
                entries.clear();
                16
            }
        };
        let mask = !(usize::MAX << slot_count.trailing_zeros());
        let mut index = NameIndex {
            entries,
            slots: vec![0; slot_count],
            mask,
            // 64 - log2(slot_count): the hash's top bits pick the home slot.
            shift: (mask as u64).leading_zeros(),
        };
        for at in 0..index.entries.len() {
            index.insert(data, at);
        }
        index
    }

    fn home(&self, hash: u64) -> usize {
        // Below the slot count, a usize: the conversion never fails.
        usize::try_from(hash.wrapping_mul(MULTIPLIER) >> self.shift).unwrap_or_default()
    }

    /// A name defined more than once (static functions) keeps its global definition, else
    /// its first in file order.
    fn insert(&mut self, data: &[u8], at: usize) {
        let Some(new) = self.entries.get(at) else {
            return;
        };
        // The slot's value; an entry past u32 (4 billion names) cannot be indexed.
        let Some(value) = u32::try_from(at).ok().and_then(|at| at.checked_add(1)) else {
            return;
        };
        let mask = self.mask;
        let mut slot = self.home(new.hash);
        loop {
            let Some(&held) = self.slots.get(slot) else {
                return;
            };
            let Some(old) = held
                .checked_sub(1)
                .and_then(|i| self.entries.get(i as usize))
            else {
                if let Some(empty) = self.slots.get_mut(slot) {
                    *empty = value;
                }
                return;
            };
            if old.hash == new.hash && name_of(data, old) == name_of(data, new) {
                if !old.symbol.is_global() && new.symbol.is_global() {
                    if let Some(replaced) = self.slots.get_mut(slot) {
                        *replaced = value;
                    }
                }
                return;
            }
            slot = next_slot(slot, mask);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, data: &[u8], name: &[u8]) -> Option<Symbol> {
        let key = hash(name);
        let mask = self.mask;
        let mut slot = self.home(key);
        loop {
            let held = *self.slots.get(slot)?;
            let entry = self.entries.get(held.checked_sub(1)? as usize)?;
            if entry.hash == key && name_of(data, entry) == name {
                return Some(entry.symbol);
            }
            slot = next_slot(slot, mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::system_map as exec;

    #[test]
    fn duplicates_resolve_to_global_then_first() {
        let exec = exec(
            "ffffffff81000000 t dup\nffffffff82000000 T dup\nffffffff83000000 t dup\n\
             ffffffff84000000 t local\nffffffff85000000 t local\nffffffff86000000 D only\n",
        );
        let index = exec.index();
        let value = |name: &str| index.get(exec.data(), name.as_bytes()).map(|s| s.value);
        assert_eq!(value("dup"), Some(0xffff_ffff_8200_0000));
        assert_eq!(value("local"), Some(0xffff_ffff_8400_0000));
        assert_eq!(value("only"), Some(0xffff_ffff_8600_0000));
        assert_eq!(value("missing"), None);
        assert_eq!(value(""), None);
    }

    #[test]
    fn many_names_all_found() {
        let text: String = (0..5000)
            .map(|i| format!("{:016x} T sym_{i}\n", 0xffff_ffff_8100_0000u64 + i))
            .collect();
        let exec = exec(&text);
        for i in (0..5000).step_by(7) {
            let sym = exec.index().get(exec.data(), format!("sym_{i}").as_bytes());
            assert_eq!(sym.map(|s| s.value), Some(0xffff_ffff_8100_0000 + i));
        }
    }
}
