//! makedumpfile's kdump-compressed format (`KDUMP   `, and the older `DISKDUMP`).
//!
//! Layout, in blocks of `block_size` bytes: the `disk_dump_header` (block 0), the
//! `kdump_sub_header` (`sub_hdr_size` blocks), two bitmaps of equal size (`bitmap_blocks`
//! blocks together: pages present in memory, then pages dumped), then one 24-byte
//! `page_desc` per dumped page, then the page data. The header is the C struct as the
//! producer's compiler laid it out, so its offsets depend on the width of `long` (the dump's
//! machine), and the 64-bit sub-header fields on how that ABI aligns `long long`.

use std::sync::{Arc, OnceLock};

use super::elf_core::Notes;
use super::vmcoreinfo::{VmcoreInfo, MAX_VMCOREINFO};
use super::Gap;
use super::{machine_is_64bit, Core, Fields, Layout};
use crate::cache::PageCache;
use crate::decompress::{decompress, COMPRESSION_MASK};
use crate::errors::CoreFault;
use crate::mapping::Medium;

pub const DUMP_DH_COMPRESSED_ZLIB: u32 = 0x1;
pub const DUMP_DH_COMPRESSED_LZO: u32 = 0x2;
pub const DUMP_DH_COMPRESSED_SNAPPY: u32 = 0x4;
pub const DUMP_DH_COMPRESSED_INCOMPLETE: u32 = 0x8;
pub const DUMP_DH_COMPRESSED_ZSTD: u32 = 0x20;
pub const PAGE_DESC_SIZE: u64 = 24;
/// How many of the last page descriptors open reads to find where the page data ends.
const TAIL_DESCRIPTORS: u64 = 256;

const UTS_LEN: usize = 65;
const UTSNAME_OFFSET: usize = 12;
const MAX_BLOCK_SIZE: u32 = 1 << 20;
/// 2^52 page frames cover any physical address space a 64-bit machine can have.
const MAX_MAPNR: u64 = 1 << 52;

pub fn has_signature(head: &[u8]) -> bool {
    head.starts_with(b"KDUMP   ") || head.starts_with(b"DISKDUMP")
}

/// The producer's C ABI, which fixes the header's field offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abi {
    pub big_endian: bool,
    /// `long` is 8 bytes.
    pub wide: bool,
    /// `long long`/`off_t` are 8-aligned (all but i386).
    pub llong_align8: bool,
}

impl Abi {
    /// Offset of `disk_dump_header.status`; the int fields follow it.
    fn status_offset(&self) -> usize {
        // utsname ends at 12 + 6*65 = 402; `struct timeval` is two longs, long-aligned.
        if self.wide {
            408 + 16
        } else {
            404 + 8
        }
    }

    pub fn header_size(&self) -> usize {
        self.status_offset() + 40
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
    /// File offset of the second (dumpable) bitmap, and its length in bytes.
    pub dumpable_bitmap: (u64, u64),
    pub descriptors_offset: u64,
    pub dumped_pages: u64,
    pub truncated: bool,
    /// Built on the first page read, not at open.
    rank: OnceLock<Result<RankIndex, String>>,
    pages: PageCache,
}

/// Which page frames the dump holds, and each one's position in the descriptor table:
/// the dumpable bitmap as words, with a running count of set bits per block of words.
struct RankIndex {
    words: Vec<u64>,
    block_counts: Vec<u64>,
}

const WORDS_PER_BLOCK: usize = 8;

impl RankIndex {
    fn build(bitmap: &[u8], max_mapnr: u64) -> RankIndex {
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
            *last &= (1u64 << tail) - 1;
        }
        words.truncate(max_mapnr.div_ceil(64) as usize);
        let mut block_counts = Vec::with_capacity(words.len() / WORDS_PER_BLOCK + 1);
        let mut total = 0u64;
        for block in words.chunks(WORDS_PER_BLOCK) {
            block_counts.push(total);
            total += block.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
        }
        RankIndex {
            words,
            block_counts,
        }
    }

    /// The descriptor index of `pfn`, or None when the dump does not hold it.
    fn rank(&self, pfn: u64) -> Option<u64> {
        let word_at = usize::try_from(pfn / 64).ok()?;
        let bit = pfn % 64;
        let word = *self.words.get(word_at)?;
        if word & (1 << bit) == 0 {
            return None;
        }
        let block = word_at / WORDS_PER_BLOCK;
        let before_block = *self.block_counts.get(block)?;
        let in_block: u64 = self
            .words
            .get(block * WORDS_PER_BLOCK..word_at)?
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let in_word = u64::from((word & ((1 << bit) - 1)).count_ones());
        Some(before_block + in_block + in_word)
    }
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

/// Picks the byte order and `long` width under which the header makes sense.
fn detect_abi(head: &[u8], machine: &str) -> Result<Abi, CoreFault> {
    let version_le = Fields::new(head, false).u32(8).unwrap_or(0);
    let big_endian = !(1..=1000).contains(&version_le);
    let widths: &[bool] = match machine_is_64bit(machine) {
        Some(true) => &[true],
        Some(false) => &[false],
        None => &[true, false],
    };
    for &wide in widths {
        let abi = Abi {
            big_endian,
            wide,
            llong_align8: wide || !machine.starts_with('i'),
        };
        let f = Fields::new(head, big_endian);
        if f.u32(abi.status_offset() + 4)
            .is_some_and(plausible_block_size)
        {
            return Ok(abi);
        }
    }
    let abi = Abi {
        big_endian,
        wide: widths.first().copied().unwrap_or(true),
        llong_align8: true,
    };
    let block_size = Fields::new(head, big_endian)
        .u32(abi.status_offset() + 4)
        .unwrap_or(0);
    Err(invalid(format!("block_size {block_size}")))
}

/// Offsets of the sub-header fields we use, by ABI (see `struct kdump_sub_header`).
struct SubLayout {
    phys_base: usize,
    dump_level: usize,
    offset_vmcoreinfo: usize,
    size_vmcoreinfo: usize,
    offset_note: usize,
    size_note: usize,
    max_mapnr_64: usize,
    end_v3: usize,
    end_v4: usize,
    end_v6: usize,
}

impl SubLayout {
    fn new(abi: Abi) -> SubLayout {
        let long = if abi.wide { 8 } else { 4 };
        let ll_align = if abi.llong_align8 { 8 } else { 4 };
        let mut pos = 0usize;
        let mut field = |size: usize, align: usize| {
            pos = pos.div_ceil(align) * align;
            let at = pos;
            pos += size;
            at
        };
        let phys_base = field(long, long);
        let dump_level = field(4, 4);
        let _split = field(4, 4);
        let _start_pfn = field(long, long);
        let _end_pfn = field(long, long);
        let offset_vmcoreinfo = field(8, ll_align);
        let size_vmcoreinfo = field(long, long);
        let offset_note = field(8, ll_align);
        let size_note = field(long, long);
        let _offset_eraseinfo = field(8, ll_align);
        let _size_eraseinfo = field(long, long);
        let _start_pfn_64 = field(8, ll_align);
        let _end_pfn_64 = field(8, ll_align);
        let max_mapnr_64 = field(8, ll_align);
        SubLayout {
            phys_base,
            dump_level,
            offset_vmcoreinfo,
            size_vmcoreinfo,
            offset_note,
            size_note,
            max_mapnr_64,
            end_v3: size_vmcoreinfo + long,
            end_v4: size_note + long,
            end_v6: max_mapnr_64 + 8,
        }
    }
}

pub fn parse(medium: &dyn Medium) -> Result<KdumpCore, CoreFault> {
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
    let abi = detect_abi(&head, &machine)?;
    if head.len() < abi.header_size() {
        return Err(truncated("disk_dump_header"));
    }
    let f = Fields::new(&head, abi.big_endian);
    let get = |off: usize| f.u32(off).ok_or_else(|| truncated("disk_dump_header"));
    let header_version = get(8)?;
    let s = abi.status_offset();
    let status = get(s)?;
    let block_size = u64::from(get(s + 4)?);
    let sub_hdr_size = u64::from(get(s + 8)?);
    let bitmap_blocks = u64::from(get(s + 12)?);
    let max_mapnr_32 = u64::from(get(s + 16)?);
    let nr_cpus = get(s + 36)?;
    let release = head
        .get(UTSNAME_OFFSET + 2 * UTS_LEN..UTSNAME_OFFSET + 3 * UTS_LEN)
        .map(c_string)
        .unwrap_or_default();

    let mut dump = KdumpCore {
        abi,
        header_version,
        status,
        block_size,
        sub_hdr_size,
        bitmap_blocks,
        max_mapnr: max_mapnr_32,
        nr_cpus,
        machine,
        release,
        phys_base: None,
        dump_level: None,
        vmcoreinfo: VmcoreInfo::default(),
        dumpable_bitmap: (0, 0),
        descriptors_offset: 0,
        dumped_pages: 0,
        truncated: status & DUMP_DH_COMPRESSED_INCOMPLETE != 0,
        rank: OnceLock::new(),
        pages: PageCache::new(crate::cache::configured_pages()),
    };
    if sub_hdr_size > 1 << 20 {
        return Err(invalid(format!("sub_hdr_size {sub_hdr_size}")));
    }
    if header_version >= 1 {
        dump.read_sub_header(medium)?;
    }
    if dump.max_mapnr == 0 || dump.max_mapnr > MAX_MAPNR {
        return Err(invalid(format!("max_mapnr {}", dump.max_mapnr)));
    }
    dump.locate_bitmaps(medium)?;
    dump.check_descriptors(medium)?;
    Ok(dump)
}

impl KdumpCore {
    fn read_sub_header(&mut self, medium: &dyn Medium) -> Result<(), CoreFault> {
        let layout = SubLayout::new(self.abi);
        let needed = match self.header_version {
            1 | 2 => layout.dump_level + 4,
            3 => layout.end_v3,
            4 | 5 => layout.end_v4,
            _ => layout.end_v6,
        };
        if (needed as u64) > self.sub_hdr_size * self.block_size {
            return Err(invalid(format!(
                "sub_hdr_size {} is too small for header version {}",
                self.sub_hdr_size, self.header_version
            )));
        }
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
        if self.header_version >= 6 {
            let mapnr = u64_field(layout.max_mapnr_64)?;
            if mapnr != 0 {
                self.max_mapnr = mapnr;
            }
        }
        if self.header_version >= 3 {
            let offset = u64_field(layout.offset_vmcoreinfo)?;
            let size = field(layout.size_vmcoreinfo)?;
            if offset != 0 && size != 0 {
                if size > MAX_VMCOREINFO as u64 {
                    return Err(invalid(format!("size_vmcoreinfo {size}")));
                }
                let text = exact(medium, offset, size, "vmcoreinfo")?;
                self.vmcoreinfo = VmcoreInfo::parse(&text);
            }
        }
        if self.header_version >= 4 {
            let offset = u64_field(layout.offset_note)?;
            let size = field(layout.size_note)?;
            if offset != 0 && size != 0 {
                if size > 64 << 20 {
                    return Err(invalid(format!("size_note {size}")));
                }
                let raw = exact(medium, offset, size, "notes")?;
                for note in Notes::new(&raw, self.abi.big_endian) {
                    let note = note?;
                    if note.name == b"VMCOREINFO" && note.desc.len() <= MAX_VMCOREINFO {
                        self.vmcoreinfo.merge(VmcoreInfo::parse(note.desc));
                    }
                }
            }
        }
        Ok(())
    }

    fn locate_bitmaps(&mut self, medium: &dyn Medium) -> Result<(), CoreFault> {
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
        if self.bitmap_blocks > 2 * needed_blocks + 2 {
            return Err(invalid(format!(
                "bitmap of {} blocks does not fit max_mapnr {}",
                self.bitmap_blocks, self.max_mapnr
            )));
        }
        let start = (1 + self.sub_hdr_size) * self.block_size;
        let Some(end) = start.checked_add(bitmap_len) else {
            return Err(invalid("bitmap outside the file".into()));
        };
        if end > medium.size() {
            return Err(truncated("bitmap"));
        }
        // Only the bits below max_mapnr are meaningful.
        self.dumpable_bitmap = (start + half, self.max_mapnr.div_ceil(8));
        self.descriptors_offset = end;
        Ok(())
    }

    /// Counts the dumped pages and checks that the descriptor table is in the file; the
    /// last descriptor tells whether the page data was cut short.
    fn check_descriptors(&mut self, medium: &dyn Medium) -> Result<(), CoreFault> {
        let (offset, len) = self.dumpable_bitmap;
        let len = usize::try_from(len).map_err(|_| invalid("bitmap outside the file".into()))?;
        let bitmap = medium
            .exact_at(offset, len)
            .ok()
            .flatten()
            .ok_or_else(|| truncated("bitmap"))?;
        let full_bytes = (self.max_mapnr / 8) as usize;
        let counted = bitmap.get(..full_bytes).unwrap_or(&[]);
        let mut words = counted.chunks_exact(8);
        let mut count: u64 = words
            .by_ref()
            .map(|w| u64::from(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])).count_ones()))
            .sum();
        count += words
            .remainder()
            .iter()
            .map(|b| u64::from(b.count_ones()))
            .sum::<u64>();
        let tail_bits = self.max_mapnr % 8;
        if tail_bits != 0 {
            let last = bitmap.get(full_bytes).copied().unwrap_or(0);
            count += u64::from((last & ((1u8 << tail_bits) - 1)).count_ones());
        }
        self.dumped_pages = count;
        if count == 0 {
            return Ok(());
        }
        // The first descriptor, and the last few: page data is written in order, so the
        // highest data offset is among the last descriptors (the last one alone may be the
        // shared zero page at the start of the data).
        let first = exact(
            medium,
            self.descriptors_offset,
            PAGE_DESC_SIZE,
            "page descriptors",
        )?;
        let tail_count = count.min(TAIL_DESCRIPTORS);
        let tail_at = self.descriptors_offset + (count - tail_count) * PAGE_DESC_SIZE;
        let tail = exact(
            medium,
            tail_at,
            tail_count * PAGE_DESC_SIZE,
            "page descriptors",
        )?;
        let table_end = tail_at + tail_count * PAGE_DESC_SIZE;
        let mut data_end = 0u64;
        for raw in
            std::iter::once(first.as_slice()).chain(tail.chunks_exact(PAGE_DESC_SIZE as usize))
        {
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
        self.truncated |= data_end > medium.size();
        Ok(())
    }

    fn rank_index(&self, medium: &dyn Medium) -> Result<&RankIndex, Gap> {
        let built = self.rank.get_or_init(|| {
            let (offset, len) = self.dumpable_bitmap;
            let len = usize::try_from(len).map_err(|_| "bitmap too large".to_owned())?;
            let bitmap = medium
                .exact_at(offset, len)
                .ok()
                .flatten()
                .ok_or("bitmap unreadable")?;
            Ok(RankIndex::build(&bitmap, self.max_mapnr))
        });
        built.as_ref().map_err(|e| Gap::Corrupt(e.clone()))
    }

    /// The descriptor of page frame `pfn`: (data offset, data size, flags).
    fn descriptor(&self, medium: &dyn Medium, pfn: u64) -> Result<(u64, u64, u32), Gap> {
        let index = self.rank_index(medium)?.rank(pfn).ok_or(Gap::Missing)?;
        let at = index
            .checked_mul(PAGE_DESC_SIZE)
            .and_then(|rel| rel.checked_add(self.descriptors_offset))
            .ok_or(Gap::Missing)?;
        let raw = medium
            .exact_at(at, PAGE_DESC_SIZE as usize)
            .ok()
            .flatten()
            .ok_or(Gap::Truncated)?;
        let f = Fields::new(&raw, self.abi.big_endian);
        let (Some(offset), Some(size), Some(flags)) = (f.u64(0), f.u32(8), f.u32(12)) else {
            return Err(Gap::Truncated);
        };
        let size = u64::from(size);
        if offset == 0 || size == 0 || size > self.block_size {
            return Err(Gap::Corrupt(format!(
                "page descriptor of pfn {pfn:#x}: offset {offset:#x}, size {size}"
            )));
        }
        Ok((offset, size, flags))
    }

    /// Page frame `pfn`, decompressed (cached).
    pub fn page(&self, medium: &dyn Medium, pfn: u64) -> Result<Arc<[u8]>, Gap> {
        if let Some(page) = self.pages.get(pfn) {
            return Ok(page);
        }
        let (offset, size, flags) = self.descriptor(medium, pfn)?;
        let data = medium
            .exact_at(offset, size as usize)
            .ok()
            .flatten()
            .ok_or(Gap::Truncated)?;
        let mut page = vec![0u8; self.block_size as usize];
        if flags & COMPRESSION_MASK == 0 {
            if size != self.block_size {
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

    /// Where an uncompressed page lies in the file (for kvm_write). makedumpfile stores
    /// one page of zeros first in the data and points every zero page's descriptor at it:
    /// writing there would change all of them, so that page is refused.
    pub fn raw_page_offset(&self, medium: &dyn Medium, pfn: u64) -> Result<u64, Gap> {
        let (offset, size, flags) = self.descriptor(medium, pfn)?;
        if flags & COMPRESSION_MASK != 0 || size != self.block_size {
            return Err(Gap::Corrupt(format!("page of pfn {pfn:#x} is compressed")));
        }
        let data_start = self.descriptors_offset + self.dumped_pages * PAGE_DESC_SIZE;
        let shared_zero = offset == data_start
            && medium
                .exact_at(offset, size as usize)
                .ok()
                .flatten()
                .is_some_and(|p| p.iter().all(|&b| b == 0));
        if shared_zero {
            return Err(Gap::Corrupt(format!(
                "pfn {pfn:#x} is the dump's shared zero page; kvm_write refuses it"
            )));
        }
        Ok(offset)
    }

    pub fn forget_cached(&self) {
        self.pages.clear();
    }

    pub fn compression(&self) -> Option<String> {
        let names = [
            (DUMP_DH_COMPRESSED_ZLIB, "zlib"),
            (DUMP_DH_COMPRESSED_LZO, "lzo"),
            (DUMP_DH_COMPRESSED_SNAPPY, "snappy"),
            (DUMP_DH_COMPRESSED_ZSTD, "zstd"),
        ];
        let used: Vec<&str> = names
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

    pub fn into_core(mut self, medium: Arc<dyn Medium>, format: &'static str) -> Core {
        Core {
            format,
            compression: self.compression(),
            machine: (!self.machine.is_empty()).then(|| self.machine.clone()),
            page_size: self.vmcoreinfo.page_size().or(Some(self.block_size)),
            vmcoreinfo: std::mem::take(&mut self.vmcoreinfo),
            header_release: (!self.release.is_empty()).then(|| self.release.clone()),
            truncated: self.truncated,
            live: false,
            layout: Layout::Kdump(Box::new(self)),
            medium,
        }
    }
}
