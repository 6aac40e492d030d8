//! The kernel's own symbol table, decoded from the dump (kernels ≥ 6.0 name its pieces in
//! VMCOREINFO): `kallsyms_names` (token-compressed entries whose first character is the
//! `nm` type), `kallsyms_token_table`/`_index`, and `kallsyms_offsets` relative to
//! `kallsyms_relative_base`. Decoded into kallsyms text, so the text parser and name index
//! serve it like a /proc/kallsyms file.

use super::{ReadFn, Words};
use crate::errors::Error;
use crate::formats::vmcoreinfo::VmcoreInfo;

/// More symbols than any kernel has (a large allyesconfig has ~300k).
const MAX_SYMBOLS: u64 = 4_000_000;
/// The longest name with its type letter: the kernel's KSYM_NAME_LEN is 512 (since 6.1;
/// 128 before), so a longer entry is a corrupt table, not a name.
const MAX_NAME: usize = 1024;
/// All names together: a real table has a few MiB.
const MAX_NAME_BYTES: usize = 256 << 20;
const NAMES_CHUNK: usize = 64 * 1024;

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
}

/// One decoded symbol: runtime address, `nm` type letter, name.
pub struct CoreSymbol {
    pub value: u64,
    pub letter: u8,
    pub name: Vec<u8>,
}

/// Decodes the first `limit` symbols (all of them with None).
pub fn decode(
    read: ReadFn<'_>,
    words: Words,
    tables: &Tables,
    limit: Option<usize>,
) -> Result<Vec<CoreSymbol>, Error> {
    // Grown as names decode: the count is the dump's claim.
    let mut out = Vec::with_capacity(limit.unwrap_or(1 << 16).min(1 << 16));
    decode_each(read, words, tables, limit, |value, letter, name| {
        out.push(CoreSymbol {
            value,
            letter,
            name: name.to_vec(),
        });
    })?;
    Ok(out)
}

/// Every symbol as kallsyms text (`ADDRESS TYPE NAME` lines), decoded straight into it:
/// no allocation per symbol.
pub fn decode_text(read: ReadFn<'_>, words: Words, tables: &Tables) -> Result<Vec<u8>, Error> {
    // About 40 bytes a line; grown as names decode.
    let mut text = Vec::with_capacity(1 << 20);
    decode_each(read, words, tables, None, |value, letter, name| {
        push_hex16(&mut text, value);
        text.extend_from_slice(&[b' ', letter, b' ']);
        text.extend_from_slice(name);
        text.push(b'\n');
    })?;
    Ok(text)
}

/// `value` as 16 lowercase hex digits.
fn push_hex16(out: &mut Vec<u8>, value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 16];
    let mut rest = value;
    for digit in &mut hex {
        // The top nibble comes round to the bottom.
        rest = rest.rotate_left(4);
        *digit = DIGITS.get((rest & 0xf) as usize).copied().unwrap_or(b'0');
    }
    out.extend_from_slice(&hex);
}

/// Decodes the first `limit` symbols (all of them with None), handing each to `sink` as
/// (runtime address, `nm` type letter, name).
fn decode_each(
    read: ReadFn<'_>,
    words: Words,
    tables: &Tables,
    limit: Option<usize>,
    mut sink: impl FnMut(u64, u8, &[u8]),
) -> Result<(), Error> {
    let bad = |what: &str| Error::Core {
        path: Vec::new(),
        fault: crate::errors::CoreFault::Invalid(format!("kallsyms tables: {what}")),
    };
    let num_syms = u64::from(words.read_u32(read, tables.num_syms)?);
    if num_syms == 0 || num_syms > MAX_SYMBOLS {
        return Err(bad(&format!("kallsyms_num_syms {num_syms}")));
    }
    let count = usize::try_from(limit.map_or(num_syms, |l| (l as u64).min(num_syms)))
        .map_err(|_| bad("too many symbols"))?;
    let relative_base = words.read_long(read, tables.relative_base)?;
    let index_raw = read(tables.token_index, 512)?;
    let token_index: Vec<usize> = (0..512u64)
        .step_by(2)
        .map(|at| usize::from(words.u16(&index_raw, at)))
        .collect();
    // The longest token cannot be longer than a name.
    let table_len = token_index
        .iter()
        .max()
        .copied()
        .unwrap_or(0)
        .saturating_add(MAX_NAME);
    let token_table = read(tables.token_table, table_len)?;
    let tokens: Vec<&[u8]> = token_index
        .iter()
        .map(|&at| {
            let rest = token_table.get(at..).unwrap_or(&[]);
            rest.get(..rest.iter().position(|&b| b == 0).unwrap_or(rest.len()))
                .unwrap_or(&[])
        })
        .collect();
    // Every offset, even for a sample: the encoding is told by all of them (below).
    let all = usize::try_from(num_syms).map_err(|_| bad("too many symbols"))?;
    let offsets = read(tables.offsets, all.saturating_mul(4))?;
    let offsets: Vec<i32> = offsets
        .chunks_exact(4)
        .map(|entry| words.u32(entry, 0) as i32)
        .collect();
    // CONFIG_KALLSYMS_ABSOLUTE_PERCPU stores per-CPU symbols as absolute non-negative values
    // and every other symbol as `relative_base - 1 - offset` (negative); without it every
    // offset is a non-negative displacement from relative_base. The per-CPU symbols come
    // first (hundreds on x86_64), so a sample's own offsets may all be non-negative.
    let absolute_percpu = offsets.iter().any(|&o| o < 0);

    let mut names = NameStream {
        read,
        at: tables.names,
        buf: Vec::new().into_iter(),
    };
    let mut total = 0usize;
    let mut expanded = Vec::with_capacity(MAX_NAME);
    for &offset in offsets.iter().take(count) {
        let first = names.byte()?;
        let len = if first & 0x80 != 0 {
            usize::from(first & 0x7f) | usize::from(names.byte()?) << 7
        } else {
            usize::from(first)
        };
        if len > MAX_NAME {
            return Err(bad(&format!("a name of {len} tokens")));
        }
        expanded.clear();
        for _ in 0..len {
            let token = tokens
                .get(usize::from(names.byte()?))
                .copied()
                .unwrap_or(&[]);
            if expanded.len().saturating_add(token.len()) > MAX_NAME {
                return Err(bad(&format!("a name longer than {MAX_NAME} bytes")));
            }
            expanded.extend_from_slice(token);
        }
        total = total.saturating_add(expanded.len());
        if total > MAX_NAME_BYTES {
            return Err(bad("names longer than 256 MiB in all"));
        }
        let Some((&letter, name)) = expanded.split_first() else {
            return Err(bad("empty name entry"));
        };
        let value = if absolute_percpu {
            if offset >= 0 {
                offset as u64
            } else {
                relative_base
                    .wrapping_sub(1)
                    .wrapping_sub(i64::from(offset) as u64)
            }
        } else {
            relative_base.wrapping_add(u64::from(offset as u32))
        };
        sink(value, letter, name);
    }
    Ok(())
}

/// `kallsyms_names`, read forward in chunks (its length is not recorded anywhere).
struct NameStream<'a> {
    read: ReadFn<'a>,
    /// The kernel address after the chunk in `buf` (wraps as the CPU's addresses do).
    at: u64,
    /// The bytes of the chunk not read yet.
    buf: std::vec::IntoIter<u8>,
}

impl NameStream<'_> {
    fn byte(&mut self) -> Result<u8, Error> {
        if let Some(byte) = self.buf.next() {
            return Ok(byte);
        }
        let chunk = (self.read)(self.at, NAMES_CHUNK)?;
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
        decode(&read, LE64, &tables, limit)
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
