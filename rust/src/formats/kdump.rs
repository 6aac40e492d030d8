//! makedumpfile's kdump-compressed format (`KDUMP   `, and the older `DISKDUMP`).
//!
//! Layout, in blocks of `block_size` bytes: the `disk_dump_header` (block 0), the
//! `kdump_sub_header` (`sub_hdr_size` blocks), two bitmaps of equal size (`bitmap_blocks`
//! blocks together: pages present in memory, then pages dumped), then one 24-byte
//! `page_desc` per dumped page, then the page data. The header is the C struct as the
//! producer's compiler laid it out, so its offsets depend on the width of `long` (the dump's
//! machine), and the 64-bit sub-header fields on how that ABI aligns `long long`.

use std::sync::{Arc, OnceLock};

use super::codec::{self, decompress, COMPRESSION_MASK};
use super::notes::{CpuNotes, Notes};
use super::vmcoreinfo::{VmcoreInfo, MAX_VMCOREINFO};
use super::{
    read_pieces, Address, Core, CoreFormat, Fields, FormatFacts, Gap, Stop, VmcoreinfoSource,
};
use crate::cache::PageCache;
use crate::errors::CoreFault;
use crate::mapping::Medium;
use crate::translate;

pub const DUMP_DH_COMPRESSED_INCOMPLETE: u32 = 0x8;
const PAGE_DESC_LEN: usize = 24;
pub const PAGE_DESC_SIZE: u64 = PAGE_DESC_LEN as u64;
/// How many of the last page descriptors open reads to find where the page data ends.
const TAIL_DESCRIPTORS: u64 = 256;

const UTS_LEN: usize = 65;
const UTSNAME_OFFSET: usize = 12;
const MAX_BLOCK_SIZE: u32 = 1 << 20;
/// 2^52 page frames cover any physical address space a 64-bit machine can have.
const MAX_MAPNR: u64 = 1 << 52;
/// makedumpfile writes versions 0 to 6; a larger one is another byte order's reading.
const MAX_HEADER_VERSION: u32 = 100;

pub fn has_signature(head: &[u8]) -> bool {
    head.starts_with(b"KDUMP   ") || head.starts_with(b"DISKDUMP")
}

/// The producer's C ABI, which fixes the header's field offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abi {
    pub big_endian: bool,
    /// `long` is 8 bytes.
    pub wide: bool,
    /// `long long`/`off_t` are 8-aligned (the machine record says; most machines).
    pub llong_align8: bool,
}

// utsname ends at 12 + 6*65 = 402; `struct timeval` is two longs, long-aligned; then
// `status` and the int fields after it, 40 bytes.
const STATUS_WIDE: usize = 408 + 16;
const STATUS_NARROW: usize = 404 + 8;
const HEADER_WIDE: usize = STATUS_WIDE + 40;
const HEADER_NARROW: usize = STATUS_NARROW + 40;

impl Abi {
    /// Offset of `disk_dump_header.status`; the int fields follow it.
    fn status_offset(&self) -> usize {
        if self.wide {
            STATUS_WIDE
        } else {
            STATUS_NARROW
        }
    }

    pub fn header_size(&self) -> usize {
        if self.wide {
            HEADER_WIDE
        } else {
            HEADER_NARROW
        }
    }
}

/// How an address splits into page frame and offset: `block_size` is a power of two
/// (open checks it), so by shift and mask, with no division on the read path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageGeometry {
    shift: u32,
    mask: u64,
    len: usize,
}

impl PageGeometry {
    fn new(block_size: u64) -> Option<PageGeometry> {
        if !block_size.is_power_of_two() {
            return None;
        }
        let shift = block_size.trailing_zeros();
        Some(PageGeometry {
            shift,
            mask: !(u64::MAX << shift),
            len: usize::try_from(block_size).ok()?,
        })
    }

    pub fn pfn(&self, addr: u64) -> u64 {
        addr >> self.shift
    }

    /// The offset of `addr` in its page and the bytes from there to the page's end.
    #[inline]
    pub fn within(&self, addr: u64) -> Option<(usize, usize)> {
        let within = usize::try_from(addr & self.mask).ok()?;
        Some((within, self.len.checked_sub(within)?))
    }
}

pub struct KdumpCore {
    pub abi: Abi,
    pub header_version: u32,
    pub status: u32,
    pub block_size: u64,
    pub sub_hdr_size: u64,
    pub bitmap_blocks: u64,
    pub max_mapnr: u64,
    pub nr_cpus: u32,
    pub machine: String,
    pub release: String,
    pub phys_base: Option<u64>,
    pub dump_level: Option<u32>,
    pub vmcoreinfo: VmcoreInfo,
    /// The NT_PRSTATUS descriptors of the sub-header's note area, in note order.
    pub cpu_notes: CpuNotes,
    /// The page frames `[start, end)` of a `--split` part: its descriptors cover only these.
    pub pfn_range: Option<(u64, u64)>,
    /// The headers with the split fields blanked: equal in every part of one split dump.
    pub shared_header: Vec<u8>,
    /// File offsets of the memory bitmap (pages that exist) and of the dumpable bitmap
    /// (pages written), and the length of each in bytes (bits below max_mapnr).
    pub memory_bitmap: u64,
    pub dumpable_bitmap: (u64, u64),
    pub descriptors_offset: u64,
    /// Pages this file holds (in its pfn range).
    pub dumped_pages: u64,
    pub truncated: bool,
    geometry: PageGeometry,
    /// Where the page data starts: the end of the descriptor table.
    data_start: u64,
    /// Built on the first page read, not at open.
    rank: OnceLock<Result<RankIndex, String>>,
    pages: PageCache,
    medium: Arc<dyn Medium>,
}

/// Which page frames the dump holds, and each one's position in the descriptor table:
/// the dumpable bitmap as words, with a running count of set bits per block of words.
struct RankIndex {
    words: Vec<u64>,
    block_counts: Vec<u64>,
    /// Set bits below the part's first page frame: its first descriptor's rank.
    base: u64,
}

const WORDS_PER_BLOCK: usize = 8;

impl RankIndex {
    fn build(bitmap: &[u8], max_mapnr: u64, start_pfn: u64) -> Result<RankIndex, String> {
        let mut words: Vec<u64> = bitmap
            .chunks(8)
            .map(|chunk| {
                let mut raw = [0u8; 8];
                raw.iter_mut().zip(chunk).for_each(|(dst, src)| *dst = *src);
                u64::from_le_bytes(raw)
            })
            .collect();
        // Bits at and above max_mapnr are not pages.
        let tail = (max_mapnr % 64) as u32;
        if let (Some(last), true) = (words.last_mut(), tail != 0) {
            *last &= !(u64::MAX << tail);
        }
        // A bound: past usize there is nothing to cut.
        words.truncate(usize::try_from(max_mapnr.div_ceil(64)).unwrap_or(usize::MAX));
        let mut block_counts =
            Vec::with_capacity(words.len().div_ceil(WORDS_PER_BLOCK).saturating_add(1));
        let mut total = 0u64;
        for block in words.chunks(WORDS_PER_BLOCK) {
            block_counts.push(total);
            total = total
                .checked_add(block.iter().map(|w| u64::from(w.count_ones())).sum::<u64>())
                .ok_or("bitmap too large")?;
        }
        // The count at the end, so a pfn at the end of the last block has its entry.
        block_counts.push(total);
        let mut index = RankIndex {
            words,
            block_counts,
            base: 0,
        };
        index.base = index.count_below(start_pfn).ok_or("bitmap too large")?;
        Ok(index)
    }

    /// Set bits below `pfn` (all of them, for a pfn past the bitmap); None only where the
    /// count does not fit (never: it is at most the bitmap's bits).
    fn count_below(&self, pfn: u64) -> Option<u64> {
        // Past the bitmap: every word, and no bit of the word after it.
        let word_at =
            usize::try_from(pfn / 64).map_or(self.words.len(), |w| w.min(self.words.len()));
        let block = word_at / WORDS_PER_BLOCK;
        let before_block = self.block_counts.get(block).copied().unwrap_or(0);
        let in_block: u64 = self
            .words
            .get(word_at & !(WORDS_PER_BLOCK - 1)..word_at)
            .unwrap_or(&[])
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let word = self.words.get(word_at).copied().unwrap_or(0);
        let in_word = u64::from((word & !(u64::MAX << (pfn % 64))).count_ones());
        before_block.checked_add(in_block)?.checked_add(in_word)
    }

    /// The descriptor index of `pfn` in this file, or None when the dump does not hold it.
    fn rank(&self, pfn: u64) -> Option<u64> {
        let word = *self.words.get(usize::try_from(pfn / 64).ok()?)?;
        if word & (1 << (pfn % 64)) == 0 {
            return None;
        }
        self.count_below(pfn)?.checked_sub(self.base)
    }
}

// The block of a word is found by masking its index.
const _: () = assert!(WORDS_PER_BLOCK.is_power_of_two());

/// Set bits of `bitmap` (little-endian bit order) in `[from, to)`; None only where the count
/// does not fit (never: it is at most the bitmap's bits).
fn count_bits(bitmap: &[u8], from: u64, to: u64) -> Option<u64> {
    let bit_set = |bit: u64| {
        let byte = usize::try_from(bit / 8)
            .ok()
            .and_then(|at| bitmap.get(at))
            .copied()
            .unwrap_or(0);
        u64::from(byte >> (bit % 8) & 1)
    };
    // Bits up to the first byte boundary, whole bytes, then the bits of the last byte.
    let whole_to = to & !7;
    let head_to = from.checked_next_multiple_of(8).map_or(to, |b| b.min(to));
    // At most 7 bits each.
    let mut count: u64 = (from..head_to).map(bit_set).sum();
    if head_to < whole_to {
        let byte_at = |bit: u64| usize::try_from(bit / 8).unwrap_or(usize::MAX);
        let bytes = bitmap
            .get(byte_at(head_to)..byte_at(whole_to))
            .unwrap_or(&[]);
        let mut words = bytes.chunks_exact(8);
        for w in words.by_ref() {
            let word = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
            count = count.checked_add(u64::from(word.count_ones()))?;
        }
        for b in words.remainder() {
            count = count.checked_add(u64::from(b.count_ones()))?;
        }
    }
    let tail_from = head_to.max(whole_to);
    count.checked_add((tail_from..to).map(bit_set).sum())
}

/// `n` bytes of `bytes` from `from`, where it holds them.
fn span(bytes: &[u8], from: usize, n: usize) -> Option<&[u8]> {
    bytes.get(from..)?.get(..n)
}

fn truncated(what: &str) -> CoreFault {
    CoreFault::Truncated(what.to_owned())
}

fn invalid(what: String) -> CoreFault {
    CoreFault::Invalid(what)
}

fn exact(medium: &dyn Medium, offset: u64, len: u64, what: &str) -> Result<Vec<u8>, CoreFault> {
    let len = usize::try_from(len).map_err(|_| invalid(format!("{what} outside the file")))?;
    match medium.exact_at(offset, len) {
        Ok(Some(bytes)) => Ok(bytes.into_owned()),
        _ => Err(truncated(what)),
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or(&[])).into_owned()
}

fn plausible_block_size(size: u32) -> bool {
    size.is_power_of_two() && (512..=MAX_BLOCK_SIZE).contains(&size)
}

/// The `disk_dump_header` fields after utsname, as one ABI reads them.
struct HeaderFields {
    header_version: u32,
    status: u32,
    block_size: u64,
    sub_hdr_size: u64,
    bitmap_blocks: u64,
    max_mapnr_32: u64,
    /// None in a header cut before it (open then says the header is truncated).
    nr_cpus: Option<u32>,
}

impl HeaderFields {
    fn read(head: &[u8], abi: Abi) -> Option<HeaderFields> {
        let f = Fields::new(head, abi.big_endian);
        let s = abi.status_offset();
        let int = |at: usize| f.u32(s.checked_add(at)?);
        Some(HeaderFields {
            header_version: f.u32(8)?,
            status: int(0)?,
            block_size: u64::from(int(4)?),
            sub_hdr_size: u64::from(int(8)?),
            bitmap_blocks: u64::from(int(12)?),
            max_mapnr_32: u64::from(int(16)?),
            nr_cpus: int(36),
        })
    }

    /// Does the header make sense under this ABI? (libkdumpfile's `try_header`, plus a
    /// sub-header where the version has one.) A 32-bit header read with 64-bit offsets puts
    /// max_mapnr where block_size belongs; a power of two passes as a block size, but the
    /// fields after it then fail.
    fn consistent(&self) -> bool {
        let Ok(block_size) = u32::try_from(self.block_size) else {
            return false;
        };
        plausible_block_size(block_size)
            && self.header_version <= MAX_HEADER_VERSION
            && (self.header_version == 0 || self.sub_hdr_size > 0)
            && self.bitmap_blocks > 0
            && self
                .bitmap_blocks
                .saturating_mul(self.block_size)
                .saturating_mul(8)
                >= self.max_mapnr_32
    }
}

/// Picks the byte order and `long` width under which the header makes sense: the machine
/// named in utsname fixes the width where we know it; the byte order is tried both ways.
fn detect_abi(head: &[u8], machine: &str) -> Result<Abi, CoreFault> {
    let record = translate::machine(machine);
    let widths: &[bool] = match record {
        Some(m) if m.wide => &[true],
        Some(_) => &[false],
        None => &[true, false],
    };
    let mut first = None;
    for big_endian in [false, true] {
        for &wide in widths {
            let abi = Abi {
                big_endian,
                wide,
                llong_align8: wide || record.is_none_or(|m| m.long_long_align8),
            };
            let fields = HeaderFields::read(head, abi);
            if fields.as_ref().is_some_and(HeaderFields::consistent) {
                return Ok(abi);
            }
            first.get_or_insert((abi, fields));
        }
    }
    let block_size = first
        .and_then(|(_, fields)| fields)
        .map_or(0, |f| f.block_size);
    Err(invalid(format!("block_size {block_size}")))
}

/// Offsets of the sub-header fields we use, by ABI (see `struct kdump_sub_header`), and
/// the size each header version defines.
struct SubLayout {
    phys_base: usize,
    dump_level: usize,
    split: usize,
    start_pfn: usize,
    end_pfn: usize,
    offset_vmcoreinfo: usize,
    size_vmcoreinfo: usize,
    offset_note: usize,
    size_note: usize,
    start_pfn_64: usize,
    end_pfn_64: usize,
    max_mapnr_64: usize,
    long: usize,
    /// `size_for` of versions 1, 2, 3, 4 and 5, 6 and later: the end of the last field
    /// each defines.
    version_ends: [usize; 5],
}

impl SubLayout {
    // Offsets of a fixed C struct: 14 fields of at most 8 bytes, each padded to at most 8:
    // `pos` stays below 14 * 16, far from overflow.
    #[allow(clippy::arithmetic_side_effects)]
    fn new(abi: Abi) -> SubLayout {
        let long = if abi.wide { 8 } else { 4 };
        let ll_align = if abi.llong_align8 { 8 } else { 4 };
        let mut pos = 0usize;
        // (offset, end) of the next field.
        let mut field = |size: usize, align: usize| {
            pos = pos.div_ceil(align) * align;
            let at = pos;
            pos += size;
            (at, pos)
        };
        let (phys_base, _) = field(long, long);
        let (dump_level, v1_end) = field(4, 4);
        let (split, _) = field(4, 4);
        let (start_pfn, _) = field(long, long);
        let (end_pfn, v2_end) = field(long, long);
        let (offset_vmcoreinfo, _) = field(8, ll_align);
        let (size_vmcoreinfo, v3_end) = field(long, long);
        let (offset_note, _) = field(8, ll_align);
        let (size_note, v5_end) = field(long, long);
        let _offset_eraseinfo = field(8, ll_align);
        let _size_eraseinfo = field(long, long);
        let (start_pfn_64, _) = field(8, ll_align);
        let (end_pfn_64, _) = field(8, ll_align);
        let (max_mapnr_64, v6_end) = field(8, ll_align);
        SubLayout {
            phys_base,
            dump_level,
            split,
            start_pfn,
            end_pfn,
            offset_vmcoreinfo,
            size_vmcoreinfo,
            offset_note,
            size_note,
            start_pfn_64,
            end_pfn_64,
            max_mapnr_64,
            long,
            version_ends: [v1_end, v2_end, v3_end, v5_end, v6_end],
        }
    }

    /// Bytes of the sub-header a version defines.
    fn size_for(&self, version: u32) -> usize {
        let [v1, v2, v3, v5, v6] = self.version_ends;
        match version {
            0 => 0,
            1 => v1,
            2 => v2,
            3 => v3,
            4 | 5 => v5,
            _ => v6,
        }
    }

    /// The split fields, which differ between the parts of one dump.
    fn split_fields(&self, version: u32) -> Vec<(usize, usize)> {
        let mut fields = vec![(self.start_pfn, self.long), (self.end_pfn, self.long)];
        if version >= 6 {
            fields.extend([(self.start_pfn_64, 8), (self.end_pfn_64, 8)]);
        }
        fields
    }
}

/// Reads and validates a kdump file; builds no index.
pub fn open(medium: Arc<dyn Medium>) -> Result<KdumpCore, CoreFault> {
    // The largest header layout (64-bit) is 464 bytes; read what is there.
    let head = medium
        .bytes_at(0, 464)
        .map_err(|_| truncated("disk_dump_header"))?
        .into_owned();
    let machine_field = head.get(UTSNAME_OFFSET + 4 * UTS_LEN..UTSNAME_OFFSET + 5 * UTS_LEN);
    let machine = machine_field.map(c_string).unwrap_or_default();
    // The 32-bit layout is the shorter one: below it no layout can be judged.
    let smallest = Abi {
        big_endian: false,
        wide: false,
        llong_align8: false,
    }
    .header_size();
    if head.len() < smallest {
        return Err(truncated("disk_dump_header"));
    }
    let mut abi = detect_abi(&head, &machine)?;
    if head.len() < abi.header_size() {
        return Err(truncated("disk_dump_header"));
    }
    let fields = HeaderFields::read(&head, abi).ok_or_else(|| truncated("disk_dump_header"))?;
    let release = head
        .get(UTSNAME_OFFSET + 2 * UTS_LEN..UTSNAME_OFFSET + 3 * UTS_LEN)
        .map(c_string)
        .unwrap_or_default();
    if !abi.wide && translate::machine(&machine).is_none() {
        abi.llong_align8 = !packed_sub_header(medium.as_ref(), abi, &fields);
    }
    // detect_abi took only a power of two from 512 to 1 MiB.
    let geometry = PageGeometry::new(fields.block_size)
        .ok_or_else(|| invalid(format!("block_size {}", fields.block_size)))?;

    let mut dump = KdumpCore {
        abi,
        header_version: fields.header_version,
        status: fields.status,
        block_size: fields.block_size,
        sub_hdr_size: fields.sub_hdr_size,
        bitmap_blocks: fields.bitmap_blocks,
        max_mapnr: fields.max_mapnr_32,
        nr_cpus: fields.nr_cpus.unwrap_or(0),
        machine,
        release,
        phys_base: None,
        dump_level: None,
        vmcoreinfo: VmcoreInfo::default(),
        cpu_notes: CpuNotes::default(),
        pfn_range: None,
        shared_header: head.get(..abi.header_size()).unwrap_or(&[]).to_vec(),
        memory_bitmap: 0,
        dumpable_bitmap: (0, 0),
        descriptors_offset: 0,
        dumped_pages: 0,
        truncated: false,
        geometry,
        data_start: 0,
        rank: OnceLock::new(),
        pages: PageCache::new(crate::cache::configured_pages()),
        medium,
    };
    if dump.sub_hdr_size > 1 << 20 {
        return Err(invalid(format!("sub_hdr_size {}", dump.sub_hdr_size)));
    }
    if dump.header_version >= 1 {
        dump.read_sub_header()?;
    }
    if dump.max_mapnr == 0 || dump.max_mapnr > MAX_MAPNR {
        return Err(invalid(format!("max_mapnr {}", dump.max_mapnr)));
    }
    if let Some((start, end)) = dump.pfn_range {
        if start >= end || end > dump.max_mapnr {
            return Err(invalid(format!(
                "split part range {start:#x}-{end:#x} (max_mapnr {:#x})",
                dump.max_mapnr
            )));
        }
    }
    dump.locate_bitmaps()?;
    dump.check_descriptors()?;
    Ok(dump)
}

/// For a 32-bit dump of a machine we do not know: is the sub-header laid out with `long
/// long` 4-aligned rather than 8-aligned? libkdumpfile's test: the packed reading of
/// offset_vmcoreinfo is absent or points into the sub-header's own blocks.
fn packed_sub_header(medium: &dyn Medium, abi: Abi, fields: &HeaderFields) -> bool {
    if fields.header_version < 3 {
        return true;
    }
    let packed = SubLayout::new(Abi {
        llong_align8: false,
        ..abi
    });
    // Up to size_vmcoreinfo (a 4-byte long here): what version 3 defines.
    let Ok(Some(raw)) = medium.exact_at(fields.block_size, packed.size_for(3)) else {
        return false;
    };
    let f = Fields::new(&raw, abi.big_endian);
    let offset = f.u64(packed.offset_vmcoreinfo).unwrap_or(0);
    let size = u64::from(f.u32(packed.size_vmcoreinfo).unwrap_or(0));
    let payload = fields
        .block_size
        .saturating_mul(fields.sub_hdr_size.saturating_add(1));
    (offset == 0 && size == 0)
        || (offset > fields.block_size && offset.saturating_add(size) <= payload)
}

impl KdumpCore {
    fn read_sub_header(&mut self) -> Result<(), CoreFault> {
        let layout = SubLayout::new(self.abi);
        let needed = layout.size_for(self.header_version);
        if (needed as u64) > self.sub_hdr_size.saturating_mul(self.block_size) {
            return Err(invalid(format!(
                "sub_hdr_size {} is too small for header version {}",
                self.sub_hdr_size, self.header_version
            )));
        }
        let medium = Arc::clone(&self.medium);
        let medium = medium.as_ref();
        let raw = exact(medium, self.block_size, needed as u64, "kdump_sub_header")?;
        let f = Fields::new(&raw, self.abi.big_endian);
        let wide = self.abi.wide;
        let field = |off: usize| {
            f.word(off, wide)
                .ok_or_else(|| truncated("kdump_sub_header"))
        };
        let u64_field = |off: usize| f.u64(off).ok_or_else(|| truncated("kdump_sub_header"));
        self.phys_base = Some(field(layout.phys_base)?);
        self.dump_level = f.u32(layout.dump_level);
        if self.header_version >= 2 && f.u32(layout.split).unwrap_or(0) != 0 {
            self.pfn_range = Some(if self.header_version >= 6 {
                (
                    u64_field(layout.start_pfn_64)?,
                    u64_field(layout.end_pfn_64)?,
                )
            } else {
                (field(layout.start_pfn)?, field(layout.end_pfn)?)
            });
        }
        let mut shared = raw.clone();
        for (at, len) in layout.split_fields(self.header_version) {
            if let Some(bytes) = at.checked_add(len).and_then(|end| shared.get_mut(at..end)) {
                bytes.fill(0);
            }
        }
        self.shared_header.extend_from_slice(&shared);
        if self.header_version >= 6 {
            let mapnr = u64_field(layout.max_mapnr_64)?;
            if mapnr != 0 {
                self.max_mapnr = mapnr;
            }
        }
        let mut text = Vec::new();
        if self.header_version >= 3 {
            let offset = u64_field(layout.offset_vmcoreinfo)?;
            let size = field(layout.size_vmcoreinfo)?;
            if offset != 0 && size != 0 {
                if size > MAX_VMCOREINFO as u64 {
                    return Err(invalid(format!("size_vmcoreinfo {size}")));
                }
                text = exact(medium, offset, size, "vmcoreinfo")?;
            }
        }
        let mut notes = Vec::new();
        if self.header_version >= 4 {
            let offset = u64_field(layout.offset_note)?;
            let size = field(layout.size_note)?;
            if offset != 0 && size != 0 {
                if size > 64 << 20 {
                    return Err(invalid(format!("size_note {size}")));
                }
                notes = exact(medium, offset, size, "notes")?;
            }
        }
        let mut sources: Vec<&[u8]> = vec![&text];
        for note in Notes::new(&notes, self.abi.big_endian) {
            let note = note?;
            if note.name == b"VMCOREINFO" && note.desc.len() <= MAX_VMCOREINFO {
                sources.push(note.desc);
            }
        }
        self.vmcoreinfo = VmcoreInfo::parse_all(sources);
        self.cpu_notes = CpuNotes::new(vec![notes], self.abi.big_endian);
        Ok(())
    }

    fn locate_bitmaps(&mut self) -> Result<(), CoreFault> {
        let bitmap_len = self.bitmap_blocks.saturating_mul(self.block_size);
        let half = bitmap_len / 2;
        if half.saturating_mul(8) < self.max_mapnr {
            return Err(invalid(format!(
                "bitmap of {} blocks is too small for max_mapnr {}",
                self.bitmap_blocks, self.max_mapnr
            )));
        }
        // Producers size each half for max_mapnr, rounded up to whole blocks; a bitmap
        // much larger than that is a bad header field, not a file cut short.
        let needed_blocks = self.max_mapnr.div_ceil(8).div_ceil(self.block_size);
        if self.bitmap_blocks > needed_blocks.saturating_mul(2).saturating_add(2) {
            return Err(invalid(format!(
                "bitmap of {} blocks does not fit max_mapnr {}",
                self.bitmap_blocks, self.max_mapnr
            )));
        }
        let outside = || invalid("bitmap outside the file".into());
        let start = self
            .sub_hdr_size
            .checked_add(1)
            .and_then(|blocks| blocks.checked_mul(self.block_size))
            .ok_or_else(outside)?;
        let end = start.checked_add(bitmap_len).ok_or_else(outside)?;
        if end > self.medium.size() {
            return Err(truncated("bitmap"));
        }
        // Only the bits below max_mapnr are meaningful.
        self.memory_bitmap = start;
        self.dumpable_bitmap = (
            start.checked_add(half).ok_or_else(outside)?,
            self.max_mapnr.div_ceil(8),
        );
        self.descriptors_offset = end;
        self.data_start = end;
        Ok(())
    }

    /// This file's page frames: a split part's range, else all of them.
    fn own_range(&self) -> (u64, u64) {
        self.pfn_range.unwrap_or((0, self.max_mapnr))
    }

    /// Counts the dumped pages and checks that the descriptor table is in the file; the
    /// last descriptor tells whether the page data was cut short.
    fn check_descriptors(&mut self) -> Result<(), CoreFault> {
        let (offset, len) = self.dumpable_bitmap;
        let len = usize::try_from(len).map_err(|_| invalid("bitmap outside the file".into()))?;
        let bitmap = self
            .medium
            .exact_at(offset, len)
            .ok()
            .flatten()
            .ok_or_else(|| truncated("bitmap"))?;
        let (start, end) = self.own_range();
        let count =
            count_bits(&bitmap, start, end).ok_or_else(|| invalid("bitmap too large".into()))?;
        drop(bitmap);
        self.dumped_pages = count;
        if count == 0 {
            return Ok(());
        }
        let medium = self.medium.as_ref();
        // The first descriptor, and the last few: page data is written in order, so the
        // highest data offset is among the last descriptors (the last one alone may be the
        // shared zero page at the start of the data; an incomplete dump's are zero).
        let first = exact(
            medium,
            self.descriptors_offset,
            PAGE_DESC_SIZE,
            "page descriptors",
        )?;
        let outside = || invalid("page descriptors outside the file".into());
        let descriptors = |n: u64| n.checked_mul(PAGE_DESC_SIZE).ok_or_else(outside);
        // The descriptors before the last TAIL_DESCRIPTORS (none if there are fewer), then
        // those.
        let tail_len = descriptors(count.min(TAIL_DESCRIPTORS))?;
        let tail_at = self
            .descriptors_offset
            .checked_add(descriptors(count.saturating_sub(TAIL_DESCRIPTORS))?)
            .ok_or_else(outside)?;
        let tail = exact(medium, tail_at, tail_len, "page descriptors")?;
        let table_end = tail_at.checked_add(tail_len).ok_or_else(outside)?;
        self.data_start = table_end;
        let mut data_end = 0u64;
        for raw in std::iter::once(first.as_slice()).chain(tail.chunks_exact(PAGE_DESC_LEN)) {
            let f = Fields::new(raw, self.abi.big_endian);
            let (Some(off), Some(size)) = (f.u64(0), f.u32(8)) else {
                return Err(truncated("page descriptors"));
            };
            if off < table_end && off != 0 {
                return Err(invalid(format!(
                    "page descriptor points into the headers ({off:#x})"
                )));
            }
            data_end = data_end.max(off.saturating_add(u64::from(size)));
        }
        self.truncated = data_end > medium.size();
        Ok(())
    }

    fn rank_index(&self) -> Result<&RankIndex, Gap> {
        let built = self.rank.get_or_init(|| {
            let (offset, len) = self.dumpable_bitmap;
            let len = usize::try_from(len).map_err(|_| "bitmap too large".to_owned())?;
            let bitmap = self
                .medium
                .exact_at(offset, len)
                .ok()
                .flatten()
                .ok_or("bitmap unreadable")?;
            RankIndex::build(&bitmap, self.max_mapnr, self.own_range().0)
        });
        built.as_ref().map_err(|e| Gap::Corrupt(e.clone()))
    }

    /// Why the dump holds no page `pfn`: filtered out if it exists (memory bitmap), else
    /// not in the dump at all.
    fn why_absent(&self, pfn: u64) -> Gap {
        let byte = self
            .memory_bitmap
            .checked_add(pfn / 8)
            .and_then(|at| self.medium.exact_at(at, 1).ok().flatten())
            .and_then(|b| b.first().copied())
            .unwrap_or(0);
        if byte >> (pfn % 8) & 1 != 0 {
            Gap::Excluded
        } else {
            Gap::NotInDump
        }
    }

    /// The descriptor of page frame `pfn`: (data offset, data size, flags).
    fn descriptor(&self, pfn: u64) -> Result<(u64, u32, u32), Gap> {
        if pfn >= self.max_mapnr {
            return Err(Gap::NotInDump);
        }
        let (start, end) = self.own_range();
        if !(start..end).contains(&pfn) {
            // Another part's pages: this part's bitmaps are not looked at.
            return Err(Gap::OtherPart);
        }
        let Some(index) = self.rank_index()?.rank(pfn) else {
            return Err(self.why_absent(pfn));
        };
        let at = index
            .checked_mul(PAGE_DESC_SIZE)
            .and_then(|rel| rel.checked_add(self.descriptors_offset))
            .ok_or(Gap::NotInDump)?;
        let raw = self
            .medium
            .exact_at(at, PAGE_DESC_LEN)
            .ok()
            .flatten()
            .ok_or(Gap::Truncated)?;
        let f = Fields::new(&raw, self.abi.big_endian);
        let (Some(offset), Some(size), Some(flags)) = (f.u64(0), f.u32(8), f.u32(12)) else {
            return Err(Gap::Truncated);
        };
        if offset == 0 {
            // makedumpfile that ran out of space leaves the rest of the table zero.
            return Err(Gap::Incomplete);
        }
        if size == 0 || u64::from(size) > self.block_size {
            return Err(Gap::Corrupt(format!(
                "page descriptor of pfn {pfn:#x}: offset {offset:#x}, size {size}"
            )));
        }
        Ok((offset, size, flags))
    }

    /// Page frame `pfn`, decompressed (cached).
    fn page(&self, pfn: u64) -> Result<Arc<[u8]>, Gap> {
        if let Some(page) = self.pages.get(pfn) {
            return Ok(page);
        }
        let (offset, size, flags) = self.descriptor(pfn)?;
        let data = self
            .medium
            .exact_at(offset, size as usize)
            .ok()
            .flatten()
            .ok_or(Gap::Truncated)?;
        let mut page = vec![0u8; self.geometry.len];
        if flags & COMPRESSION_MASK == 0 {
            if u64::from(size) != self.block_size {
                return Err(Gap::Corrupt(format!(
                    "raw page of pfn {pfn:#x} has {size} bytes"
                )));
            }
            page.copy_from_slice(&data);
        } else {
            decompress(flags, &data, &mut page)
                .map_err(|e| Gap::Corrupt(format!("pfn {pfn:#x}: {e}")))?;
        }
        let page: Arc<[u8]> = Arc::from(page);
        self.pages.insert(pfn, Arc::clone(&page));
        Ok(page)
    }

    /// The bytes a raw page cut by the end of the file still has (a compressed page cut
    /// short has none that can be decoded).
    fn cut_raw_page(&self, pfn: u64) -> Vec<u8> {
        match self.descriptor(pfn) {
            Ok((offset, size, flags)) if flags & COMPRESSION_MASK == 0 => self
                .medium
                .bytes_at(offset, size as usize)
                .map(|b| b.into_owned())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Where an uncompressed page lies in the file (for kvm_write). makedumpfile stores
    /// one page of zeros first in the data and points every zero page's descriptor at it:
    /// writing there would change all of them, so that page is refused.
    fn raw_page_offset(&self, pfn: u64) -> Result<u64, Gap> {
        let (offset, size, flags) = self.descriptor(pfn)?;
        if flags & COMPRESSION_MASK != 0 || u64::from(size) != self.block_size {
            return Err(Gap::Corrupt(format!("page of pfn {pfn:#x} is compressed")));
        }
        let shared_zero = offset == self.data_start
            && self
                .medium
                .exact_at(offset, size as usize)
                .ok()
                .flatten()
                .is_some_and(|p| p.iter().all(|&b| b == 0));
        if shared_zero {
            return Err(Gap::Corrupt(format!(
                "pfn {pfn:#x} is the dump's shared zero page; kvm_write refuses it"
            )));
        }
        if offset.saturating_add(u64::from(size)) > self.medium.size() {
            return Err(Gap::Truncated);
        }
        Ok(offset)
    }

    pub fn compression(&self) -> Option<String> {
        let used: Vec<&str> = codec::NAMES
            .iter()
            .filter(|(bit, _)| self.status & bit != 0)
            .map(|&(_, name)| name)
            .collect();
        match used.as_slice() {
            [] => None,
            [one] => Some((*one).to_owned()),
            _ => Some("mixed".to_owned()),
        }
    }

    pub fn incomplete(&self) -> bool {
        self.status & DUMP_DH_COMPRESSED_INCOMPLETE != 0
    }

    /// The machine named in the header (by its usual name), unless the producer wrote none.
    pub fn header_machine(&self) -> Option<String> {
        if let Some(machine) = translate::machine(&self.machine) {
            return Some(machine.name.to_owned());
        }
        (!self.machine.is_empty() && self.machine != "Unknown").then(|| self.machine.clone())
    }

    pub fn into_core(mut self, format: &'static str) -> Core {
        let vmcoreinfo = std::mem::take(&mut self.vmcoreinfo);
        Core {
            format,
            compression: self.compression(),
            machine: self.header_machine(),
            page_size: vmcoreinfo.page_size().or(Some(self.block_size)),
            vmcoreinfo_source: (!vmcoreinfo.is_empty()).then_some(VmcoreinfoSource::KdumpHeader),
            vmcoreinfo,
            header_release: (!self.release.is_empty()).then(|| self.release.clone()),
            truncated: self.truncated,
            incomplete: self.incomplete(),
            live: false,
            big_endian: self.abi.big_endian,
            writable: format == "kdump" && self.compression().is_none(),
            body: Box::new(self),
        }
    }

    pub fn geometry(&self) -> PageGeometry {
        self.geometry
    }

    /// Takes the VMCOREINFO out (a split set keeps one copy for all parts).
    pub fn take_vmcoreinfo(&mut self) -> VmcoreInfo {
        std::mem::take(&mut self.vmcoreinfo)
    }
}

impl CoreFormat for KdumpCore {
    fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), Stop> {
        let geometry = self.geometry;
        read_pieces(paddr, buf, |at, rest| {
            let pfn = geometry.pfn(at);
            let (within, left) = geometry.within(at).ok_or((0, Gap::NotInDump))?;
            let n = rest.len().min(left);
            let dst = rest.get_mut(..n).unwrap_or(&mut []);
            match self.page(pfn) {
                Ok(page) => dst.copy_from_slice(span(&page, within, n).unwrap_or(&[])),
                Err(Gap::Truncated) => {
                    let cut = self.cut_raw_page(pfn);
                    let have = cut.len().saturating_sub(within).min(n);
                    dst.get_mut(..have)
                        .unwrap_or(&mut [])
                        .copy_from_slice(span(&cut, within, have).unwrap_or(&[]));
                    if have < n {
                        return Err((have, Gap::Truncated));
                    }
                }
                Err(gap) => return Err((0, gap)),
            }
            Ok(n)
        })
    }

    fn write_extent(&self, addr: Address, want: usize) -> Result<(u64, usize), Gap> {
        let Address::Physical(pa) = addr else {
            return Err(Gap::NotInDump);
        };
        let page = self.raw_page_offset(self.geometry.pfn(pa))?;
        let (within, left) = self.geometry.within(pa).ok_or(Gap::NotInDump)?;
        // raw_page_offset checked that the whole page lies in the file.
        let offset = page.checked_add(within as u64).ok_or(Gap::Truncated)?;
        Ok((offset, want.min(left)))
    }

    fn forget_cached(&self) {
        self.pages.clear();
    }

    fn facts(&self) -> FormatFacts {
        FormatFacts {
            dump_level: self.dump_level,
            dumped_pages: Some(self.dumped_pages),
            pfn_range: self.pfn_range,
            parts: 1,
        }
    }

    fn cpu_notes(&self) -> &[Vec<u8>] {
        self.cpu_notes.get()
    }

    fn header_phys_base(&self) -> Option<u64> {
        self.phys_base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_counts_over_any_range() {
        let bitmap = [
            0b1010_1010u8,
            0xff,
            0x0f,
            0,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            1,
        ];
        let naive = |from: u64, to: u64| {
            (from..to)
                .filter(|&b| bitmap[(b / 8) as usize] >> (b % 8) & 1 != 0)
                .count() as u64
        };
        for from in 0..88 {
            for to in from..88 {
                assert_eq!(
                    count_bits(&bitmap, from, to),
                    Some(naive(from, to)),
                    "{from}..{to}"
                );
            }
        }
    }

    #[test]
    fn rank_counts_from_the_part_start() {
        let bitmap = vec![0xffu8; 128];
        let index = RankIndex::build(&bitmap, 1024, 600).unwrap();
        assert_eq!(index.rank(600), Some(0));
        assert_eq!(index.rank(601), Some(1));
        assert_eq!(index.rank(599), None);
        assert_eq!(index.count_below(1024), Some(1024));
        assert_eq!(index.count_below(5000), Some(1024));
    }
}
