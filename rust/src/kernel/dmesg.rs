//! The kernel log from a dump, decoded with nothing but VMCOREINFO (no DWARF): the lockless
//! printk ring buffer of kernels ≥ 5.10 (`SYMBOL(prb)`), else the older variable-length
//! record buffer (`SYMBOL(log_buf)`). Offsets and sizes come from the `OFFSET()`/`SIZE()`
//! lines the kernel publishes for exactly this purpose.

use super::{ReadFn, Words};
use crate::errors::{CoreFault, Error};
use crate::formats::vmcoreinfo::VmcoreInfo;

/// The largest ring we read whole (CONFIG_LOG_BUF_SHIFT is at most 25: 32 MiB; log_buf_len=
/// on the command line may ask more, real systems a few MiB).
const MAX_RING_BYTES: u64 = 64 << 20;
/// No structure of the printk ring is larger: an OFFSET()/SIZE() beyond is not a layout.
const MAX_FIELD: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub ts_nsec: u64,
    pub level: u8,
    /// Who logged it, as the kernel's `[T123]`/`[C1]` prefix names it: a task id, or a CPU
    /// for a record logged outside task context; None where the ring does not say.
    pub caller: Option<String>,
    pub text: String,
}

struct Layout<'a> {
    info: &'a VmcoreInfo,
    words: Words,
}

impl Layout<'_> {
    fn offset(&self, name: &str) -> Result<u64, Error> {
        self.field("OFFSET", name)
    }

    fn size(&self, name: &str) -> Result<u64, Error> {
        self.field("SIZE", name)
    }

    fn field(&self, kind: &str, name: &str) -> Result<u64, Error> {
        let key = format!("{kind}({name})");
        let value = self
            .info
            .get(&key)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| unreadable(&format!("VMCOREINFO has no {key}")))?;
        if value > MAX_FIELD {
            return Err(unreadable(&format!("{key}={value} is not a layout")));
        }
        Ok(value)
    }

    /// `SIZE(name)`, at least `least` bytes (the fields the decoder reads from it).
    fn size_at_least(&self, name: &str, least: u64) -> Result<u64, Error> {
        let size = self.size(name)?;
        if size < least {
            return Err(unreadable(&format!("SIZE({name})={size} is too small")));
        }
        Ok(size)
    }
}

fn unreadable(what: &str) -> Error {
    Error::Core {
        path: Vec::new(),
        fault: CoreFault::Invalid(format!("kernel log: {what}")),
    }
}

/// The kernel log records, oldest first.
pub fn records(read: ReadFn<'_>, info: &VmcoreInfo, words: Words) -> Result<Vec<Record>, Error> {
    let layout = Layout { info, words };
    if let Some(prb) = info.symbol("prb") {
        return lockless(read, &layout, prb);
    }
    if let Some(log_buf) = info.symbol("log_buf") {
        return variable_length(read, &layout, log_buf);
    }
    Err(unreadable("VMCOREINFO names neither prb nor log_buf"))
}

/// The ≥ 5.10 ring: descriptors and infos arrays of 2^count_bits entries, text in a data
/// ring of 2^size_bits bytes where each block starts with its descriptor id.
fn lockless(read: ReadFn<'_>, layout: &Layout<'_>, prb_symbol: u64) -> Result<Vec<Record>, Error> {
    let w = layout.words;
    let long = w.long_bytes();
    // Kernel addresses: offsets are bounded by MAX_FIELD, addresses wrap as the CPU's do.
    let at = |base: u64, name: &str| layout.offset(name).map(|o| base.wrapping_add(o));
    let prb = w.read_long(read, prb_symbol)?;
    let counter = layout.offset("atomic_long_t.counter").unwrap_or(0);
    let desc_ring = at(prb, "printk_ringbuffer.desc_ring")?;
    let count_bits = w.read_u32(read, at(desc_ring, "prb_desc_ring.count_bits")?)?;
    let descs = w.read_long(read, at(desc_ring, "prb_desc_ring.descs")?)?;
    let infos = w.read_long(read, at(desc_ring, "prb_desc_ring.infos")?)?;
    let head_id = w.read_long(
        read,
        at(desc_ring, "prb_desc_ring.head_id")?.wrapping_add(counter),
    )?;
    let tail_id = w.read_long(
        read,
        at(desc_ring, "prb_desc_ring.tail_id")?.wrapping_add(counter),
    )?;
    let text_ring = at(prb, "printk_ringbuffer.text_data_ring")?;
    let size_bits = w.read_u32(read, at(text_ring, "prb_data_ring.size_bits")?)?;
    let data = w.read_long(read, at(text_ring, "prb_data_ring.data")?)?;

    if count_bits >= 32 || size_bits >= 40 {
        return Err(unreadable(&format!(
            "ring of 2^{count_bits} records, 2^{size_bits} bytes"
        )));
    }
    let count = 1u64 << count_bits;
    let data_size = 1u64 << size_bits;
    // A descriptor holds the state and two positions (three longs); an info at least seq
    // and ts_nsec.
    let desc_size = layout.size_at_least("prb_desc", if w.wide { 24 } else { 12 })?;
    let info_size = layout.size_at_least("printk_info", 16)?;
    if count.saturating_mul(desc_size.max(info_size)) > MAX_RING_BYTES || data_size > MAX_RING_BYTES
    {
        return Err(unreadable("ring larger than 64 MiB"));
    }
    // Within MAX_RING_BYTES (checked above).
    let ring_len = |n: Option<u64>| {
        n.and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| unreadable("ring larger than 64 MiB"))
    };
    let descs_raw = read(descs, ring_len(count.checked_mul(desc_size))?)?;
    let infos_raw = read(infos, ring_len(count.checked_mul(info_size))?)?;
    let data_raw = read(data, ring_len(Some(data_size))?)?;

    // Offsets within one structure: each at most MAX_FIELD, so their sums fit.
    let sum = |name: &str, a: u64, b: u64| {
        a.checked_add(b)
            .ok_or_else(|| unreadable(&format!("OFFSET({name}) is not a layout")))
    };
    let state_var = sum(
        "prb_desc.state_var",
        layout.offset("prb_desc.state_var")?,
        counter,
    )?;
    let text_lpos = layout.offset("prb_desc.text_blk_lpos")?;
    let begin_at = sum(
        "prb_data_blk_lpos.begin",
        text_lpos,
        layout.offset("prb_data_blk_lpos.begin")?,
    )?;
    let next_at = sum(
        "prb_data_blk_lpos.next",
        text_lpos,
        layout.offset("prb_data_blk_lpos.next")?,
    )?;
    let seq_at = layout.offset("printk_info.seq")?;
    let ts_at = layout.offset("printk_info.ts_nsec")?;
    let len_at = layout.offset("printk_info.text_len")?;
    let caller_at = layout.offset("printk_info.caller_id").ok();
    // The byte after text_len and facility: flags:5, level:3.
    let level_at = usize::try_from(sum("printk_info.text_len", len_at, 3)?)
        .map_err(|_| unreadable("OFFSET(printk_info.text_len) is not a layout"))?;

    // The state bits are the top two of a `long`.
    let flags_shift: u32 = if w.wide { 62 } else { 30 };
    let id_mask: u64 = !(u64::MAX << flags_shift);
    let index_mask = !(u64::MAX << count_bits);
    let data_mask = !(u64::MAX << size_bits);
    const COMMITTED: u64 = 1;
    const FINALIZED: u64 = 2;

    let mut out = Vec::new();
    // Records do not share ring bytes: more text than the ring holds is a corrupt ring.
    let mut text_total = 0u64;
    let mut id = tail_id;
    for _ in 0..=count {
        let index = id & index_mask;
        let desc = entry(&descs_raw, index, desc_size);
        let sv = w.long(desc, state_var);
        let state = sv >> flags_shift;
        if sv & id_mask == id & id_mask && (state == COMMITTED || state == FINALIZED) {
            let begin = w.long(desc, begin_at);
            let next = w.long(desc, next_at);
            let info = entry(&infos_raw, index, info_size);
            let text_len = w.u16(info, len_at);
            let text = if begin & 1 != 0 || next & 1 != 0 {
                String::new() // a data-less record
            } else {
                // A block that wraps is stored whole at the start of the ring.
                let start = if begin >> size_bits == next >> size_bits {
                    begin & data_mask
                } else {
                    0
                };
                text_total = text_total
                    .checked_add(u64::from(text_len))
                    .filter(|&total| total <= data_size)
                    .ok_or_else(|| unreadable("records hold more text than the ring"))?;
                // The text follows the block's descriptor id (a long).
                let text = start
                    .checked_add(long)
                    .map_or(&[][..], |from| bytes_from(&data_raw, from, text_len.into()));
                String::from_utf8_lossy(text).into_owned()
            };
            out.push(Record {
                seq: w.u64(info, seq_at),
                ts_nsec: w.u64(info, ts_at),
                level: info.get(level_at).map_or(0, |b| b >> 5),
                caller: caller_at.map(|at| caller_name(w.u32(info, at))),
                text,
            });
        }
        if id == head_id {
            break;
        }
        id = id.wrapping_add(1);
    }
    Ok(out)
}

/// The kernel's name for a `caller_id`: its top bit set means a CPU number, else a task id.
fn caller_name(id: u32) -> String {
    const CPU_FLAG: u32 = 0x8000_0000;
    if id & CPU_FLAG != 0 {
        format!("C{}", id & !CPU_FLAG)
    } else {
        format!("T{id}")
    }
}

/// Entry `index` of an array of `size`-byte entries, and what follows it: fields past the
/// array's end read as 0, as `Words` reads any short buffer.
fn entry(raw: &[u8], index: u64, size: u64) -> &[u8] {
    index
        .checked_mul(size)
        .and_then(|at| usize::try_from(at).ok())
        .and_then(|at| raw.get(at..))
        .unwrap_or(&[])
}

/// Up to `len` bytes of `raw` from `from`: fewer at its end, none past it.
fn bytes_from(raw: &[u8], from: u64, len: usize) -> &[u8] {
    let rest = usize::try_from(from)
        .ok()
        .and_then(|at| raw.get(at..))
        .unwrap_or(&[]);
    rest.get(..len).unwrap_or(rest)
}

/// The < 5.10 buffer: `struct printk_log` headers, each followed by its text; a header of
/// length 0 sends the reader back to the start of the buffer.
fn variable_length(
    read: ReadFn<'_>,
    layout: &Layout<'_>,
    log_buf_symbol: u64,
) -> Result<Vec<Record>, Error> {
    let sym = |name: &str| {
        layout
            .info
            .symbol(name)
            .ok_or_else(|| unreadable(&format!("no SYMBOL({name})")))
    };
    let w = layout.words;
    let buf = w.read_long(read, log_buf_symbol)?;
    let len = u64::from(w.read_u32(read, sym("log_buf_len")?)?);
    let first = u64::from(w.read_u32(read, sym("log_first_idx")?)?);
    let next = u64::from(w.read_u32(read, sym("log_next_idx")?)?);
    if len == 0 || len > MAX_RING_BYTES {
        return Err(unreadable(&format!("log_buf_len {len}")));
    }
    let raw = read(
        buf,
        usize::try_from(len).map_err(|_| unreadable(&format!("log_buf_len {len}")))?,
    )?;
    // The header: ts_nsec, len, text_len, facility and level at least.
    let header = layout.size_at_least("printk_log", 14)?;
    let ts_at = layout.offset("printk_log.ts_nsec")?;
    let len_at = layout.offset("printk_log.len")?;
    let text_len_at = layout.offset("printk_log.text_len")?;
    // Published only by kernels built with CONFIG_PRINTK_CALLER.
    let caller_at = layout.offset("printk_log.caller_id").ok();
    // The byte of flags:5 and level:3, after text_len, dict_len (u16 each) and facility.
    let level_at = text_len_at
        .checked_add(5)
        .and_then(|at| usize::try_from(at).ok())
        .ok_or_else(|| unreadable("OFFSET(printk_log.text_len) is not a layout"))?;
    // Every record is at least a header long: this bounds the walk on a corrupt buffer.
    let most = len
        .checked_div(header)
        .ok_or_else(|| unreadable(&format!("SIZE(printk_log)={header} is too small")))?;
    let mut out = Vec::new();
    let mut idx = first;
    for _ in 0..=most {
        if idx == next || idx >= len {
            break;
        }
        // The record and what follows it (fields past the buffer read as 0).
        let rec = bytes_from(&raw, idx, raw.len());
        let rec_len = u64::from(w.u16(rec, len_at));
        if rec_len == 0 {
            if idx == 0 {
                break;
            }
            idx = 0;
            continue;
        }
        let text_len = w.u16(rec, text_len_at);
        let text = bytes_from(rec, header, text_len.into());
        out.push(Record {
            // Records pushed before this one.
            seq: out.len() as u64,
            ts_nsec: w.u64(rec, ts_at),
            level: rec.get(level_at).map_or(0, |b| b >> 5),
            caller: caller_at.map(|at| caller_name(w.u32(rec, at))),
            text: String::from_utf8_lossy(text).into_owned(),
        });
        // Past the buffer (or past u64: the same) is back to its start.
        idx = idx.saturating_add(rec_len);
        if idx >= len {
            idx = 0;
        }
    }
    Ok(out)
}

/// What the kernel said when it died: the message of the first panic line, else the first
/// oops or BUG line (what `scan` and `Kvm.triage` report).
pub fn panic_message(records: &[Record]) -> Option<String> {
    const PANIC: &str = "Kernel panic - not syncing: ";
    let lines = || records.iter().flat_map(|r| r.text.split('\n'));
    // The first panic line; the last one is the "---[ end Kernel panic ... ]---" trailer.
    if let Some((_, message)) = lines().find_map(|l| l.split_once(PANIC)) {
        return Some(message.trim_end_matches(" ]---").trim().to_owned());
    }
    lines()
        .find(|l| {
            l.starts_with("BUG: ")
                || l.contains("kernel BUG at")
                || l.starts_with("Oops: ")
                || l.contains("general protection fault")
        })
        .map(|l| l.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LE64: Words = Words {
        big_endian: false,
        wide: true,
    };

    /// Kernel memory as a few byte ranges at fixed addresses.
    fn memory(ranges: Vec<(u64, Vec<u8>)>) -> impl Fn(u64, usize) -> Result<Vec<u8>, Error> {
        move |addr, len| {
            for (start, bytes) in &ranges {
                let at = addr
                    .checked_sub(*start)
                    .and_then(|at| usize::try_from(at).ok());
                if let Some(held) = at.and_then(|at| bytes.get(at..)?.get(..len)) {
                    return Ok(held.to_vec());
                }
            }
            Err(Error::InvalidAddress {
                addr,
                reason: crate::errors::Reason::NotInDump,
            })
        }
    }

    /// A record of the < 5.10 layout: 16-byte `struct printk_log`, text, padding to 8.
    fn record(ts_nsec: u64, text: &str) -> Vec<u8> {
        let len = text.len().checked_add(16).unwrap().next_multiple_of(8);
        let mut out = Vec::new();
        out.extend_from_slice(&ts_nsec.to_le_bytes());
        out.extend_from_slice(&u16::try_from(len).unwrap().to_le_bytes());
        out.extend_from_slice(&u16::try_from(text.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 6 << 5]);
        out.extend_from_slice(text.as_bytes());
        out.resize(len, 0);
        out
    }

    #[test]
    fn variable_length_log_buf_wraps() {
        let first = record(1_500_000_000, "Linux version 4.19.0");
        let second = record(2_000_001_000, "a line\nand its continuation");
        let third = record(3_000_000_000, "after the wrap");
        // The ring: `third` at the start (wrapped), then a gap, `first`, `second`, and a
        // zero-length header that sends the reader back to 0.
        let mut ring = third.clone();
        let first_at = 256usize;
        ring.resize(first_at, 0);
        ring.extend_from_slice(&first);
        ring.extend_from_slice(&second);
        ring.extend_from_slice(&[0; 16]);
        ring.resize(1024, 0);
        let (log_buf, buf, len, first_idx, next_idx) =
            (0x1000u64, 0x8000u64, 0x2000u64, 0x2008u64, 0x2010u64);
        let read = memory(vec![
            (log_buf, buf.to_le_bytes().to_vec()),
            (len, 1024u32.to_le_bytes().to_vec()),
            (
                first_idx,
                u32::try_from(first_at).unwrap().to_le_bytes().to_vec(),
            ),
            (
                next_idx,
                u32::try_from(third.len()).unwrap().to_le_bytes().to_vec(),
            ),
            (buf, ring),
        ]);
        let info = VmcoreInfo::parse(
            format!(
                "SYMBOL(log_buf)={log_buf:x}\nSYMBOL(log_buf_len)={len:x}\nSYMBOL(log_first_idx)={first_idx:x}\n\
                 SYMBOL(log_next_idx)={next_idx:x}\nSIZE(printk_log)=16\nOFFSET(printk_log.ts_nsec)=0\n\
                 OFFSET(printk_log.len)=8\nOFFSET(printk_log.text_len)=10\n"
            )
            .as_bytes(),
        );
        let records = records(&read, &info, LE64).unwrap();
        let seen: Vec<(u64, &str)> = records
            .iter()
            .map(|r| (r.ts_nsec, r.text.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (1_500_000_000, "Linux version 4.19.0"),
                (2_000_001_000, "a line\nand its continuation"),
                (3_000_000_000, "after the wrap"),
            ]
        );
        assert_eq!(records.first().map(|r| r.level), Some(6));
    }

    #[test]
    fn no_log_symbols_is_an_error() {
        let read = memory(Vec::new());
        assert!(records(&read, &VmcoreInfo::parse(b"OSRELEASE=6.1\n"), LE64).is_err());
    }
}
