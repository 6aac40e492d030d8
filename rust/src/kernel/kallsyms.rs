//! The kernel's own symbol table, decoded from the dump (kernels ≥ 6.0 name its pieces in
//! VMCOREINFO): `kallsyms_names` (token-compressed entries whose first character is the
//! `nm` type), `kallsyms_token_table`/`_index`, and `kallsyms_offsets` relative to
//! `kallsyms_relative_base`. Decoded straight into a `DecodedTable`, which the name and
//! address indexes read like any exec file; the names, the costly part, once per build.

use std::sync::Arc;

use super::builds::{self, BuildCache};
use super::{ReadFn, Words};
use crate::errors::Error;
use crate::formats::vmcoreinfo::VmcoreInfo;
use crate::symbols::decoded::{DecodedTable, NameList};

/// More symbols than any kernel has (a large allyesconfig has ~300k).
const MAX_SYMBOLS: u64 = 4_000_000;
/// The longest name with its type letter: the kernel's KSYM_NAME_LEN is 512 (since 6.1;
/// 128 before), so a longer entry is a corrupt table, not a name.
const MAX_NAME: usize = 1024;
/// All names together: a real table has a few MiB.
const MAX_NAME_BYTES: usize = 256 << 20;
const NAMES_CHUNK: usize = 64 * 1024;
/// The most of `kallsyms_names` read in one go when the tables bound it: a real table has
/// a few MiB.
const NAMES_AT_ONCE: u64 = 32 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Tables {
    names: u64,
    num_syms: u64,
    token_table: u64,
    token_index: u64,
    offsets: u64,
    relative_base: u64,
}

impl Tables {
    pub fn from_vmcoreinfo(info: &VmcoreInfo) -> Option<Tables> {
        Some(Tables {
            names: info.symbol("kallsyms_names")?,
            num_syms: info.symbol("kallsyms_num_syms")?,
            token_table: info.symbol("kallsyms_token_table")?,
            token_index: info.symbol("kallsyms_token_index")?,
            offsets: info.symbol("kallsyms_offsets")?,
            relative_base: info.symbol("kallsyms_relative_base")?,
        })
    }

    /// How much to read of `kallsyms_names` first: up to the nearest table the kernel puts
    /// after it (the names' own length is recorded nowhere), so the whole of it comes in one
    /// read whose pages decode side by side; a chunk when no table bounds it closely.
    fn names_first_read(&self) -> usize {
        [
            self.num_syms,
            self.token_table,
            self.token_index,
            self.offsets,
            self.relative_base,
        ]
        .iter()
        .filter_map(|&at| at.checked_sub(self.names).filter(|&gap| gap > 0))
        .min()
        .filter(|&gap| gap <= NAMES_AT_ONCE)
        .and_then(|gap| usize::try_from(gap).ok())
        .unwrap_or(NAMES_CHUNK)
    }
}

/// One decoded symbol: runtime address, `nm` type letter, name.
pub struct CoreSymbol {
    pub value: u64,
    pub letter: u8,
    pub name: Vec<u8>,
}

/// The names of each build's table, decoded once per process (kernel::builds).
pub(super) static NAMES: BuildCache<NameList> = BuildCache::new();

/// How much of `kallsyms_names` goes in the key: its first page.
const NAMES_KEY_BYTES: usize = 4096;

/// Decodes the first `limit` symbols.
pub fn decode(
    read: ReadFn<'_>,
    words: Words,
    tables: &Tables,
    limit: usize,
) -> Result<Vec<CoreSymbol>, Error> {
    let prelude = Prelude::read(read, words, tables)?;
    // Grown as names decode: the count is the dump's claim.
    let mut out = Vec::with_capacity(limit.min(1 << 16));
    let mut values = prelude.values();
    decode_names(read, tables, &prelude, limit, |letter, name| {
        if let Some(value) = values.next() {
            out.push(CoreSymbol {
                value,
                letter,
                name: name.to_vec(),
            });
        }
    })?;
    Ok(out)
}

/// Every symbol: this dump's values, and the names of its build (decoded once a process).
pub fn decode_table(
    read: ReadFn<'_>,
    words: Words,
    tables: &Tables,
    info: &VmcoreInfo,
) -> Result<DecodedTable, Error> {
    let prelude = Prelude::read(read, words, tables)?;
    let key = builds::build_key(info).map(|mut key| {
        key.extend_from_slice(&prelude.num_syms.to_le_bytes());
        key.extend_from_slice(
            &tables
                .names
                .wrapping_sub(tables.relative_base)
                .to_le_bytes(),
        );
        key.extend_from_slice(&prelude.token_index_raw);
        key.extend_from_slice(&prelude.token_table);
        // What the first page holds (a read that fails here fails the decode below too).
        key.extend_from_slice(&read(tables.names, NAMES_KEY_BYTES).unwrap_or_default());
        key
    });
    let cached = key.as_deref().and_then(|key| NAMES.get(key));
    let names = match cached {
        Some(names) => names,
        None => {
            let mut names = NameList::with_capacity(prelude.offsets.len());
            let mut fits = true;
            decode_names(read, tables, &prelude, usize::MAX, |letter, name| {
                fits &= names.push(letter, name);
            })?;
            if !fits {
                return Err(invalid("a table too large to index"));
            }
            let names = Arc::new(names);
            if let Some(key) = key {
                NAMES.put(key, Arc::clone(&names));
            }
            names
        }
    };
    DecodedTable::new(names, prelude.values().collect())
        .ok_or_else(|| invalid("names and offsets of different counts"))
}

fn invalid(what: &str) -> Error {
    Error::Core {
        path: Vec::new(),
        fault: crate::errors::CoreFault::Invalid(format!("kallsyms tables: {what}")),
    }
}

/// What decoding needs besides the names: the count, the tokens and every offset.
struct Prelude {
    num_syms: u64,
    relative_base: u64,
    token_index_raw: Vec<u8>,
    token_index: Vec<usize>,
    token_table: Vec<u8>,
    offsets: Vec<i32>,
    absolute_percpu: bool,
}

impl Prelude {
    fn read(read: ReadFn<'_>, words: Words, tables: &Tables) -> Result<Prelude, Error> {
        let num_syms = u64::from(words.read_u32(read, tables.num_syms)?);
        if num_syms == 0 || num_syms > MAX_SYMBOLS {
            return Err(invalid(&format!("kallsyms_num_syms {num_syms}")));
        }
        let relative_base = words.read_long(read, tables.relative_base)?;
        let token_index_raw = read(tables.token_index, 512)?;
        let token_index: Vec<usize> = (0..512u64)
            .step_by(2)
            .map(|at| usize::from(words.u16(&token_index_raw, at)))
            .collect();
        // The longest token cannot be longer than a name.
        let table_len = token_index
            .iter()
            .max()
            .copied()
            .unwrap_or(0)
            .saturating_add(MAX_NAME);
        let token_table = read(tables.token_table, table_len)?;
        // Every offset, even for a sample: the encoding is told by all of them (below).
        let all = usize::try_from(num_syms).map_err(|_| invalid("too many symbols"))?;
        let offsets: Vec<i32> = read(tables.offsets, all.saturating_mul(4))?
            .chunks_exact(4)
            .map(|entry| words.u32(entry, 0) as i32)
            .collect();
        // CONFIG_KALLSYMS_ABSOLUTE_PERCPU stores per-CPU symbols as absolute non-negative
        // values and every other symbol as `relative_base - 1 - offset` (negative); without
        // it every offset is a non-negative displacement from relative_base. The per-CPU
        // symbols come first (hundreds on x86_64), so a sample's own offsets may all be
        // non-negative.
        let absolute_percpu = offsets.iter().any(|&o| o < 0);
        Ok(Prelude {
            num_syms,
            relative_base,
            token_index_raw,
            token_index,
            token_table,
            offsets,
            absolute_percpu,
        })
    }

    /// Each symbol's runtime address, in table order.
    fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.offsets.iter().map(|&offset| {
            if !self.absolute_percpu {
                self.relative_base.wrapping_add(u64::from(offset as u32))
            } else if offset >= 0 {
                offset as u64
            } else {
                self.relative_base
                    .wrapping_sub(1)
                    .wrapping_sub(i64::from(offset) as u64)
            }
        })
    }

    fn tokens(&self) -> Vec<Token<'_>> {
        self.token_index
            .iter()
            .map(|&at| {
                let rest = self.token_table.get(at..).unwrap_or(&[]);
                Token::new(
                    rest.get(..rest.iter().position(|&b| b == 0).unwrap_or(rest.len()))
                        .unwrap_or(&[]),
                )
            })
            .collect()
    }
}

/// Decodes the first `limit` names (as many as there are offsets at most), handing each to
/// `sink` as (`nm` type letter, name).
fn decode_names(
    read: ReadFn<'_>,
    tables: &Tables,
    prelude: &Prelude,
    limit: usize,
    mut sink: impl FnMut(u8, &[u8]),
) -> Result<(), Error> {
    let bad = invalid;
    let tokens = prelude.tokens();
    let count = prelude.offsets.len().min(limit);
    let mut names = NameStream {
        read,
        at: tables.names,
        // A sample reads what it needs; the whole table, all of it at once.
        next_len: if count < prelude.offsets.len() {
            NAMES_CHUNK
        } else {
            tables.names_first_read()
        },
        buf: Vec::new().into_iter(),
    };
    let mut total = 0usize;
    // A name is expanded here, a whole token chunk at a time: room for the longest name
    // plus one chunk past it.
    let mut expanded = [0u8; MAX_NAME + TOKEN_CHUNK];
    for _ in 0..count {
        let first = names.byte()?;
        let len = if first & 0x80 != 0 {
            usize::from(first & 0x7f) | usize::from(names.byte()?) << 7
        } else {
            usize::from(first)
        };
        if len > MAX_NAME {
            return Err(bad(&format!("a name of {len} tokens")));
        }
        let mut filled = 0usize;
        for _ in 0..len {
            let token = tokens
                .get(usize::from(names.byte()?))
                .unwrap_or(&Token::EMPTY);
            if !token.expand(&mut expanded, &mut filled) {
                return Err(bad(&format!("a name longer than {MAX_NAME} bytes")));
            }
        }
        total = total.saturating_add(filled);
        if total > MAX_NAME_BYTES {
            return Err(bad("names longer than 256 MiB in all"));
        }
        let Some((&letter, name)) = expanded.get(..filled).and_then(<[u8]>::split_first) else {
            return Err(bad("empty name entry"));
        };
        sink(letter, name);
    }
    Ok(())
}

/// Bytes a token is copied in at once: most tokens are a few bytes, and a copy of a fixed
/// size is two moves where one of a token's own length is a call.
const TOKEN_CHUNK: usize = 16;

/// One entry of `kallsyms_token_table`: its first `TOKEN_CHUNK` bytes zero-padded, and the
/// whole token for the rare longer one.
struct Token<'a> {
    head: [u8; TOKEN_CHUNK],
    bytes: &'a [u8],
}

impl<'a> Token<'a> {
    const EMPTY: Token<'static> = Token {
        head: [0; TOKEN_CHUNK],
        bytes: &[],
    };

    fn new(bytes: &'a [u8]) -> Token<'a> {
        let mut head = [0u8; TOKEN_CHUNK];
        head.iter_mut().zip(bytes).for_each(|(d, s)| *d = *s);
        Token { head, bytes }
    }

    /// Appends the token to `name[..*filled]`; false when it would pass MAX_NAME.
    fn expand(&self, name: &mut [u8; MAX_NAME + TOKEN_CHUNK], filled: &mut usize) -> bool {
        let Some(end) = filled
            .checked_add(self.bytes.len())
            .filter(|&e| e <= MAX_NAME)
        else {
            return false;
        };
        let copied = if self.bytes.len() <= TOKEN_CHUNK {
            // `filled` <= MAX_NAME, so the chunk fits the buffer's tail.
            name.get_mut(*filled..)
                .and_then(<[u8]>::first_chunk_mut::<TOKEN_CHUNK>)
                .map(|chunk| *chunk = self.head)
        } else {
            name.get_mut(*filled..end)
                .map(|slot| slot.copy_from_slice(self.bytes))
        };
        *filled = end;
        copied.is_some()
    }
}

/// `kallsyms_names`, read forward in chunks (its length is not recorded anywhere).
struct NameStream<'a> {
    read: ReadFn<'a>,
    /// The kernel address after the chunk in `buf` (wraps as the CPU's addresses do).
    at: u64,
    /// How much the next read asks for.
    next_len: usize,
    /// The bytes of the chunk not read yet.
    buf: std::vec::IntoIter<u8>,
}

impl NameStream<'_> {
    fn byte(&mut self) -> Result<u8, Error> {
        if let Some(byte) = self.buf.next() {
            return Ok(byte);
        }
        let chunk = (self.read)(self.at, std::mem::replace(&mut self.next_len, NAMES_CHUNK))?;
        self.at = self.at.wrapping_add(chunk.len() as u64);
        self.buf = chunk.into_iter();
        self.buf.next().ok_or(Error::ShortRead { addr: self.at })
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::errors::Reason;

    const BASE: u64 = 0xffff_ffff_8100_0000;
    const LE64: Words = Words {
        big_endian: false,
        wide: true,
    };

    /// Tables of three symbols, the first two per-CPU (absolute offsets), the last relative
    /// to `relative_base` the CONFIG_KALLSYMS_ABSOLUTE_PERCPU way; every token one byte.
    fn memory() -> (Vec<u8>, VmcoreInfo) {
        let mut mem = vec![0u8; 0x3000];
        let put = |mem: &mut Vec<u8>, at: usize, bytes: &[u8]| {
            mem[at..at + bytes.len()].copy_from_slice(bytes);
        };
        put(&mut mem, 0x0, &3u32.to_le_bytes()); // num_syms
        put(&mut mem, 0x8, &BASE.to_le_bytes()); // relative_base
        let offsets: [i32; 3] = [0x10, 0x20, -0x41];
        for (i, o) in offsets.iter().enumerate() {
            put(&mut mem, 0x100 + 4 * i, &o.to_le_bytes());
        }
        let mut names = Vec::new();
        for name in [&b"Dcpu_a"[..], b"Dcpu_b", b"Tfunc"] {
            names.push(name.len() as u8);
            names.extend_from_slice(name);
        }
        put(&mut mem, 0x200, &names);
        for i in 0..256usize {
            put(&mut mem, 0x400 + 2 * i, &((2 * i) as u16).to_le_bytes()); // token_index
            put(&mut mem, 0x800 + 2 * i, &[i as u8, 0]); // token_table
        }
        let info = VmcoreInfo::parse(
            format!(
                "SYMBOL(kallsyms_num_syms)={:x}\nSYMBOL(kallsyms_relative_base)={:x}\n\
                 SYMBOL(kallsyms_offsets)={:x}\nSYMBOL(kallsyms_names)={:x}\n\
                 SYMBOL(kallsyms_token_index)={:x}\nSYMBOL(kallsyms_token_table)={:x}\n",
                BASE,
                BASE + 8,
                BASE + 0x100,
                BASE + 0x200,
                BASE + 0x400,
                BASE + 0x800
            )
            .as_bytes(),
        );
        (mem, info)
    }

    fn decoded(limit: Option<usize>) -> Vec<(u64, String)> {
        let (mem, info) = memory();
        let read = |addr: u64, len: usize| -> Result<Vec<u8>, Error> {
            let at = addr.checked_sub(BASE).map(|a| a as usize);
            match at.and_then(|a| mem.get(a..)) {
                Some(rest) => Ok(rest[..len.min(rest.len())].to_vec()),
                None => Err(Error::InvalidAddress {
                    addr,
                    reason: Reason::NotInDump,
                }),
            }
        };
        let tables = Tables::from_vmcoreinfo(&info).unwrap();
        decode(&read, LE64, &tables, limit.unwrap_or(usize::MAX))
            .unwrap()
            .iter()
            .map(|s| (s.value, String::from_utf8_lossy(&s.name).into_owned()))
            .collect()
    }

    #[test]
    fn absolute_percpu_is_told_by_every_offset_even_for_a_sample() {
        let all = decoded(None);
        assert_eq!(
            all,
            [
                (0x10, "cpu_a".to_owned()),
                (0x20, "cpu_b".to_owned()),
                (BASE - 1 + 0x41, "func".to_owned())
            ]
        );
        // A sample of the per-CPU symbols alone decodes them the same way.
        assert_eq!(decoded(Some(2)), all[..2]);
    }
}
