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
    pub text: String,
}

impl Record {
    /// The record as the console prints it: `[    5.123456] text`, one line per text line.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        let secs = self.ts_nsec / 1_000_000_000;
        let micros = (self.ts_nsec % 1_000_000_000) / 1000;
        self.text
            .split('\n')
            .map(move |line| format!("[{secs:5}.{micros:06}] {line}"))
    }
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
    // A descriptor holds the state and two positions; an info at least seq and ts_nsec.
    let desc_size = layout.size_at_least("prb_desc", 3 * long)?;
    let info_size = layout.size_at_least("printk_info", 16)?;
    if count.saturating_mul(desc_size.max(info_size)) > MAX_RING_BYTES || data_size > MAX_RING_BYTES
    {
        return Err(unreadable("ring larger than 64 MiB"));
    }
    // Within MAX_RING_BYTES: these products and sums stay far below 2^64.
    let descs_raw = read(descs, (count * desc_size) as usize)?;
    let infos_raw = read(infos, (count * info_size) as usize)?;
    let data_raw = read(data, data_size as usize)?;

    let state_var = layout.offset("prb_desc.state_var")? + counter;
    let text_lpos = layout.offset("prb_desc.text_blk_lpos")?;
    let lpos_begin = layout.offset("prb_data_blk_lpos.begin")?;
    let lpos_next = layout.offset("prb_data_blk_lpos.next")?;
    let seq_at = layout.offset("printk_info.seq")?;
    let ts_at = layout.offset("printk_info.ts_nsec")?;
    let len_at = layout.offset("printk_info.text_len")?;

    // The state bits are the top two of a `long`.
    let flags_shift: u32 = if w.wide { 62 } else { 30 };
    let id_mask: u64 = (1 << flags_shift) - 1;
    const COMMITTED: u64 = 1;
    const FINALIZED: u64 = 2;

    let mut out = Vec::new();
    // Records do not share ring bytes: more text than the ring holds is a corrupt ring.
    let mut text_total = 0u64;
    let mut id = tail_id;
    for _ in 0..=count {
        let index = id & (count - 1);
        let desc = index * desc_size;
        let sv = w.long(&descs_raw, desc + state_var);
        let state = sv >> flags_shift;
        if sv & id_mask == id & id_mask && (state == COMMITTED || state == FINALIZED) {
            let begin = w.long(&descs_raw, desc + text_lpos + lpos_begin);
            let next = w.long(&descs_raw, desc + text_lpos + lpos_next);
            let info = index * info_size;
            let text_len = u64::from(w.u16(&infos_raw, info + len_at));
            let text = if begin & 1 != 0 || next & 1 != 0 {
                String::new() // a data-less record
            } else {
                // A block that wraps is stored whole at the start of the ring.
                let start = if begin >> size_bits == next >> size_bits {
                    begin & (data_size - 1)
                } else {
                    0
                };
                text_total += text_len;
                if text_total > data_size {
                    return Err(unreadable("records hold more text than the ring"));
                }
                let from = (start + long) as usize;
                let to = from.saturating_add(text_len as usize).min(data_raw.len());
                String::from_utf8_lossy(data_raw.get(from..to).unwrap_or(&[])).into_owned()
            };
            out.push(Record {
                seq: w.u64(&infos_raw, info + seq_at),
                ts_nsec: w.u64(&infos_raw, info + ts_at),
                level: infos_raw
                    .get((info + len_at + 3) as usize)
                    .map_or(0, |b| b >> 5),
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
    let raw = read(buf, len as usize)?;
    // The header: ts_nsec, len, text_len, facility and level at least.
    let header = layout.size_at_least("printk_log", 14)?;
    let ts_at = layout.offset("printk_log.ts_nsec")?;
    let len_at = layout.offset("printk_log.len")?;
    let text_len_at = layout.offset("printk_log.text_len")?;
    let mut out = Vec::new();
    let mut idx = first;
    let mut seq = 0u64;
    // Every record is at least a header long: this bounds the walk on a corrupt buffer, and
    // every index below stays under len + MAX_FIELD.
    for _ in 0..=len / header {
        if idx == next || idx >= len {
            break;
        }
        let rec_len = u64::from(w.u16(&raw, idx + len_at));
        if rec_len == 0 {
            if idx == 0 {
                break;
            }
            idx = 0;
            continue;
        }
        let text_len = u64::from(w.u16(&raw, idx + text_len_at));
        let from = (idx + header) as usize;
        let to = from.saturating_add(text_len as usize).min(raw.len());
        out.push(Record {
            seq,
            ts_nsec: w.u64(&raw, idx + ts_at),
            level: raw
                .get((idx + text_len_at + 5) as usize)
                .map_or(0, |b| b >> 5),
            text: String::from_utf8_lossy(raw.get(from..to).unwrap_or(&[])).into_owned(),
        });
        seq += 1;
        idx += rec_len;
        if idx >= len {
            idx = 0;
        }
    }
    Ok(out)
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
                if addr >= *start && addr + len as u64 <= start + bytes.len() as u64 {
                    let at = (addr - start) as usize;
                    return Ok(bytes[at..at + len].to_vec());
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
        let len = (16 + text.len()).div_ceil(8) * 8;
        let mut out = Vec::new();
        out.extend_from_slice(&ts_nsec.to_le_bytes());
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
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
            (first_idx, (first_at as u32).to_le_bytes().to_vec()),
            (next_idx, (third.len() as u32).to_le_bytes().to_vec()),
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
        let lines: Vec<String> = records.iter().flat_map(|r| r.lines()).collect();
        assert_eq!(
            lines,
            [
                "[    1.500000] Linux version 4.19.0",
                "[    2.000001] a line",
                "[    2.000001] and its continuation",
                "[    3.000000] after the wrap",
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
