//! aarch64: the kernel image by `kimage_voffset` (pa = va − kimage_voffset), everything else
//! (linear map, vmalloc, modules, vmemmap) by the kernel's own tables from `swapper_pg_dir`,
//! whose physical address is its image address − kimage_voffset, so the walk never needs a
//! translation to start. 4, 16 and 64 KiB granules, 2 to 5 levels, block descriptors, 52-bit
//! output addresses (FEAT_LPA with 64 KiB pages, FEAT_LPA2 with 4 and 16 KiB pages).
//! Translations are remembered per handle (a small TLB).
//!
//! Which VA size the walk indexes with follows the kernel's own software walk
//! (arch/arm64/include/asm/pgtable.h, pgtable-hwdef.h, assembler.h), not VMCOREINFO's
//! `VA_BITS` alone:
//! - 64 KiB pages, 52-bit kernel on 48-bit hardware: `swapper_pg_dir` keeps the 52-bit layout
//!   (`pgd_index` masks with the configured `PTRS_PER_PGD`) and the kernel points TTBR1 at
//!   `swapper_pg_dir + TTBR1_BADDR_4852_OFFSET` (`offset_ttbr1`), so kernel addresses index
//!   the top table with the configured `VA_BITS`; all ones in VA[51:48] land in that window.
//! - 4 and 16 KiB pages (52-bit needs FEAT_LPA2, Linux 6.9+): without LPA2 the kernel folds
//!   a level at run time; `p4d_to_folded_pud`/`pgd_to_folded_p4d` index the page that holds
//!   `swapper_pg_dir` with the next level's index, which is a walk from its start with the
//!   actual VA size (64 − `TCR_EL1_T1SZ`), one level fewer. The descriptor format follows
//!   the same choice: bits [9:8] are PA[51:50] only with TCR_EL1.DS, which the kernel sets
//!   with 52-bit VAs (`lpa2_is_enabled()`); otherwise they are shareability, even though
//!   `MAX_PHYSMEM_BITS` says 52.
//!
//! The linear map is walked too, not computed from `PHYS_OFFSET`: the tables say what the
//! kernel could actually reach (pages it unmapped from the linear map, such as the crash
//! kernel's reservation, secretmem or DEBUG_PAGEALLOC, do not translate), and the walk needs
//! none of the layout's history (the 5.4 flip, 52-bit `PAGE_OFFSET`, `VA_BITS_MIN`). The
//! formula is the fallback when no `swapper_pg_dir` is known.
//!
//! Not handled: Linux 5.0–5.3 with `CONFIG_ARM64_USER_VA_BITS_52` (64 KiB pages, 48-bit kernel
//! VAs, a 52-bit-sized `swapper_pg_dir`) reports `VA_BITS=48` and nothing that tells it apart.

use std::ops::Range;

use super::{Fault, KernelLayout, Tlb, Translate};
use crate::formats::vmcoreinfo::VmcoreInfo;
use crate::formats::Gap;

/// Descriptor bit 0: the entry maps something (or points to a table).
const VALID: u64 = 1;
/// Descriptor bits [1:0]: 0b11 is a table above the last level and a page at it.
const TYPE_MASK: u64 = 0b11;
const TYPE_TABLE_OR_PAGE: u64 = 0b11;
/// 0b01 is a block where the granule allows one at that level (reserved at the last level).
const TYPE_BLOCK: u64 = 0b01;
/// Output-address bits [47:0] of the 48-bit descriptor formats (before the granule's mask).
const OA_48: u64 = (1 << 48) - 1;
/// Output-address bits [49:0] of the FEAT_LPA2 format.
const OA_50: u64 = (1 << 50) - 1;

/// What a VMCOREINFO (or a caller that knows better) says about the kernel's address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aarch64Params {
    /// 4096, 16384 or 65536 (VMCOREINFO `PAGESIZE`).
    pub page_size: u64,
    /// `NUMBER(VA_BITS)`: the kernel's configured VA size.
    pub va_bits: u32,
    /// 64 − `NUMBER(TCR_EL1_T1SZ)` where present (Linux 5.9+): the VA size in use.
    pub va_bits_actual: Option<u32>,
    /// `NUMBER(MAX_PHYSMEM_BITS)`, default 48; 52 enables 52-bit output addresses with 64 KiB
    /// pages (with 4 and 16 KiB pages a 52-bit walk VA size decides, see above).
    pub pa_bits: u32,
    /// `NUMBER(kimage_voffset)`: image pa = va − kimage_voffset.
    pub kimage_voffset: u64,
    /// `NUMBER(PHYS_OFFSET)` (memstart_addr, may be "negative" as u64). Used only when there
    /// is no `root_va` to walk from: the linear map then translates by the kernel's formula.
    pub phys_offset: u64,
    /// Runtime VA of `swapper_pg_dir` (its pa = va − kimage_voffset).
    pub root_va: Option<u64>,
    /// Kernel image VA range translated by the kimage_voffset formula (may be empty).
    pub image: Range<u64>,
}

/// Where a descriptor keeps output-address bits above bit 47.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OaFormat {
    /// Bits [47:page_shift] only.
    Bits48,
    /// FEAT_LPA, 64 KiB granule: OA[51:48] in descriptor bits [15:12].
    Lpa,
    /// FEAT_LPA2 (TCR_EL1.DS = 1), 4 and 16 KiB granules: OA[49:page_shift] in place and
    /// OA[51:50] in descriptor bits [9:8], which are the shareability field otherwise.
    Lpa2,
}

/// The linear map by formula (`__lm_to_phys`), for a dump that names no table to walk.
#[derive(Debug, Clone, Copy)]
struct LinearMap {
    /// `PAGE_OFFSET`: the lowest linear address, which maps `PHYS_OFFSET`.
    page_offset: u64,
    /// The highest linear address (inclusive: before Linux 5.4 the map ends at 2^64 − 1).
    last: u64,
    phys_offset: u64,
}

impl LinearMap {
    fn to_phys(self, va: u64) -> Option<u64> {
        (self.page_offset..=self.last).contains(&va).then(|| {
            va.wrapping_sub(self.page_offset)
                .wrapping_add(self.phys_offset)
        })
    }
}

pub struct Aarch64 {
    page_shift: u32,
    /// The VA size the walk indexes with; fixes the level count and the top table's size.
    walk_bits: u32,
    /// The VA size TTBR1 covers at run time: kernel addresses have bits [63:kernel_bits] set.
    kernel_bits: u32,
    levels: u8,
    oa_format: OaFormat,
    kimage_voffset: u64,
    /// Physical address of `swapper_pg_dir`.
    root: Option<u64>,
    image: Range<u64>,
    linear: Option<LinearMap>,
    tlb: Tlb,
}

/// The VA sizes arch/arm64/Kconfig offers per granule (page shift).
fn supported_va_bits(page_shift: u32, va_bits: u32) -> bool {
    matches!(
        (page_shift, va_bits),
        (12, 39 | 48 | 52) | (14, 36 | 47 | 48 | 52) | (16, 42 | 48 | 52)
    )
}

impl Aarch64 {
    /// None for an unsupported granule/VA combination, or a run-time VA size the kernel
    /// never falls back to from the configured one.
    pub fn new(params: Aarch64Params) -> Option<Aarch64> {
        let page_shift = match params.page_size {
            4096 => 12,
            16384 => 14,
            65536 => 16,
            _ => return None,
        };
        let configured = params.va_bits;
        let actual = params.va_bits_actual.unwrap_or(configured);
        // Without FEAT_LVA/LPA2 a 52-bit kernel runs with 48-bit VAs, 47-bit with 16 KiB
        // pages (arm64 VA_BITS_MIN); no other mismatch exists.
        let fallback = if page_shift == 14 { 47 } else { 48 };
        if actual != configured && !(configured == 52 && actual == fallback) {
            return None;
        }
        let walk_bits = if page_shift == 16 { configured } else { actual };
        if !supported_va_bits(page_shift, walk_bits) {
            return None;
        }
        let bits_per_level = page_shift - 3;
        let levels = (walk_bits - page_shift).div_ceil(bits_per_level);
        let oa_format = if page_shift == 16 {
            if params.pa_bits == 52 {
                OaFormat::Lpa
            } else {
                OaFormat::Bits48
            }
        } else if walk_bits == 52 {
            // A 4/16 KiB granule reaches 52-bit VAs only with TCR_EL1.DS set, and DS switches
            // the descriptor format whatever MAX_PHYSMEM_BITS says; a 52-bit-PA kernel on
            // hardware without LPA2 keeps DS clear and bits [9:8] are shareability.
            OaFormat::Lpa2
        } else {
            OaFormat::Bits48
        };
        let root = params
            .root_va
            .map(|va| va.wrapping_sub(params.kimage_voffset));
        let linear = match root {
            Some(_) => None,
            None => linear_map(&params, page_shift),
        };
        Some(Aarch64 {
            page_shift,
            walk_bits,
            kernel_bits: actual,
            levels: u8::try_from(levels).ok()?,
            oa_format,
            kimage_voffset: params.kimage_voffset,
            root,
            image: params.image,
            linear,
            tlb: Tlb::new(),
        })
    }

    /// Built from VMCOREINFO; None where it lacks what a walk needs (`kimage_voffset`,
    /// `VA_BITS`, `PAGESIZE`), or names neither `swapper_pg_dir` nor `PHYS_OFFSET`.
    pub fn from_vmcoreinfo(info: &VmcoreInfo, image: Range<u64>) -> Option<Aarch64> {
        Aarch64::from_layout(info, image, None)
    }

    /// As `from_vmcoreinfo`, with `swapper_pg_dir` from the exec file where VMCOREINFO
    /// lacks it.
    fn from_layout(
        info: &VmcoreInfo,
        image: Range<u64>,
        exec_root: Option<u64>,
    ) -> Option<Aarch64> {
        let va_bits = u32::try_from(info.number("VA_BITS")?).ok()?;
        let va_bits_actual = info
            .number("TCR_EL1_T1SZ")
            .and_then(|t1sz| u32::try_from(t1sz).ok())
            .and_then(|t1sz| 64u32.checked_sub(t1sz));
        let pa_bits = info
            .number("MAX_PHYSMEM_BITS")
            .and_then(|bits| u32::try_from(bits).ok())
            .unwrap_or(48);
        let root_va = info.symbol("swapper_pg_dir").or(exec_root);
        // Both arrived with kimage_voffset (Linux 4.12); PHYS_OFFSET matters only without a
        // table to walk, so a missing one is harmless while swapper_pg_dir is there.
        let phys_offset = match (info.number("PHYS_OFFSET"), root_va) {
            (Some(offset), _) => offset as u64,
            (None, Some(_)) => 0,
            (None, None) => return None,
        };
        Aarch64::new(Aarch64Params {
            page_size: info.page_size()?,
            va_bits,
            va_bits_actual,
            pa_bits,
            kimage_voffset: info.number("kimage_voffset")? as u64,
            phys_offset,
            root_va,
            image,
        })
    }

    /// Output-address bits of a table, block or page descriptor, aligned to the granule.
    fn output_address(&self, desc: u64) -> u64 {
        let granule = !((1u64 << self.page_shift) - 1);
        match self.oa_format {
            OaFormat::Bits48 => desc & OA_48 & granule,
            OaFormat::Lpa => (desc & OA_48 & granule) | ((desc >> 12) & 0xf) << 48,
            OaFormat::Lpa2 => (desc & OA_50 & granule) | ((desc >> 8) & 0x3) << 50,
        }
    }

    /// Whether a block descriptor may sit in a table whose entries map 2^`shift` bytes.
    fn block_allowed(&self, shift: u32) -> bool {
        match (self.page_shift, shift) {
            // 2 MiB and 1 GiB; 512 GiB (level 0) only with LPA2.
            (12, 21 | 30) => true,
            (12, 39) => self.oa_format == OaFormat::Lpa2,
            // 32 MiB; 64 GiB (level 1) only with LPA2.
            (14, 25) => true,
            (14, 36) => self.oa_format == OaFormat::Lpa2,
            // 512 MiB; 4 TiB (level 1) only with 52-bit output addresses.
            (16, 29) => true,
            (16, 42) => self.oa_format == OaFormat::Lpa,
            _ => false,
        }
    }

    fn walk(
        &self,
        root: u64,
        va: u64,
        read_entry: &dyn Fn(u64) -> Result<u64, Gap>,
    ) -> Result<u64, Fault> {
        let bits_per_level = self.page_shift - 3;
        let mut table = root;
        for below in (0..u32::from(self.levels)).rev() {
            let shift = self.page_shift + below * bits_per_level;
            // The top table may hold fewer entries than a page's worth.
            let index_bits = if below + 1 == u32::from(self.levels) {
                self.walk_bits - shift
            } else {
                bits_per_level
            };
            let index = (va >> shift) & ((1u64 << index_bits) - 1);
            let desc = read_entry(table.wrapping_add(index * 8)).map_err(Fault::Table)?;
            if desc & VALID == 0 {
                return Err(Fault::NotMapped);
            }
            let address = self.output_address(desc);
            let span = (1u64 << shift) - 1;
            match (desc & TYPE_MASK, below) {
                (TYPE_TABLE_OR_PAGE, 0) => return Ok(address | (va & span)),
                (TYPE_TABLE_OR_PAGE, _) => table = address,
                (TYPE_BLOCK, _) if below > 0 && self.block_allowed(shift) => {
                    return Ok((address & !span) | (va & span));
                }
                // A block where the granule allows none, or 0b01 at the last level: the
                // MMU faults on it.
                _ => return Err(Fault::NotMapped),
            }
        }
        Err(Fault::NotMapped)
    }
}

/// The kernel's `__lm_to_phys` layout, told apart by where the image sits: since Linux 5.4
/// (commit 14c127c957c1, "flip the kernel VA space") the linear map is the bottom half of the
/// kernel VA range from `-(1 << VA_BITS)` and the image is in the top half; before, the
/// linear map was the top half and the image below it. No image to tell by: no formula.
fn linear_map(params: &Aarch64Params, page_shift: u32) -> Option<LinearMap> {
    let va_bits = params.va_bits;
    if params.image.is_empty() || !(2..64).contains(&va_bits) {
        return None;
    }
    let top_half = u64::MAX << (va_bits - 1);
    let (page_offset, last) = if params.image.start >= top_half {
        // PAGE_END is _PAGE_END(VA_BITS_MIN): a 52-bit kernel keeps its linear map inside
        // what a 48-bit (47-bit with 16 KiB pages) fallback can address.
        let va_bits_min = match (va_bits, page_shift) {
            (52, 14) => 47,
            (52, _) => 48,
            (bits, _) => bits,
        };
        (
            u64::MAX << va_bits,
            (u64::MAX << (va_bits_min - 1)).wrapping_sub(1),
        )
    } else {
        (top_half, u64::MAX)
    };
    Some(LinearMap {
        page_offset,
        last,
        phys_offset: params.phys_offset,
    })
}

/// The translator of an aarch64 dump: image range from the exec file's `_text`/`_end`
/// (relocated), the rest from VMCOREINFO.
pub fn build(layout: &KernelLayout<'_>) -> Option<Box<dyn Translate>> {
    let image = layout.image.clone().unwrap_or(0..0);
    let translator = Aarch64::from_layout(layout.vmcoreinfo, image, layout.exec_root)?;
    Some(Box::new(translator))
}

impl Translate for Aarch64 {
    fn forget_cached(&self) {
        self.tlb.clear();
    }

    fn translate(
        &self,
        va: u64,
        read_entry: &dyn Fn(u64) -> Result<u64, Gap>,
    ) -> Result<u64, Fault> {
        // Only TTBR1 (kernel) addresses: bits [63:kernel_bits] all ones.
        if va >> self.kernel_bits != u64::MAX >> self.kernel_bits {
            return Err(Fault::NotMapped);
        }
        if self.image.contains(&va) {
            return Ok(va.wrapping_sub(self.kimage_voffset));
        }
        let Some(root) = self.root else {
            return self
                .linear
                .and_then(|linear| linear.to_phys(va))
                .ok_or(Fault::NotMapped);
        };
        self.tlb
            .translate(va, self.page_shift, || self.walk(root, va, read_entry))
    }

    fn pgtable_levels(&self) -> u8 {
        self.levels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::{HashMap, HashSet};

    /// The real dump's (arm64 6.1, 4 KiB pages, 48-bit VAs) kimage_voffset and PHYS_OFFSET.
    const VOFFSET: u64 = 0xffff_d620_13c0_0000;
    const PHYS_OFFSET: u64 = 0xffff_d1bc_4000_0000;
    /// Where the tests put swapper_pg_dir in physical memory.
    const ROOT_PA: u64 = 0x4145_8000;

    /// Leaf attributes a kernel sets (AF, nG, GP, DBM, Contiguous, PXN, UXN) and, outside
    /// LPA2, inner shareability in bits [9:8]: none of them may leak into an address.
    const LEAF_ATTRS: u64 = 1 << 10 | 1 << 11 | 0x1f << 50;
    const SH_INNER: u64 = 0b11 << 8;
    /// Table attributes (PXNTable, UXNTable, APTable, NSTable).
    const TABLE_ATTRS: u64 = 0x1f << 59;
    const PAGE: u64 = 0b11;
    const BLOCK: u64 = 0b01;

    fn params(page_size: u64, va_bits: u32, actual: Option<u32>, pa_bits: u32) -> Aarch64Params {
        Aarch64Params {
            page_size,
            va_bits,
            va_bits_actual: actual,
            pa_bits,
            kimage_voffset: VOFFSET,
            phys_offset: PHYS_OFFSET,
            root_va: Some(ROOT_PA.wrapping_add(VOFFSET)),
            image: 0..0,
        }
    }

    fn translator(page_size: u64, va_bits: u32, actual: Option<u32>, pa_bits: u32) -> Aarch64 {
        Aarch64::new(params(page_size, va_bits, actual, pa_bits)).unwrap()
    }

    /// The layout a test expects, worked out independently of the translator.
    #[derive(Clone, Copy)]
    struct Layout {
        page_shift: u32,
        walk_bits: u32,
        format: OaFormat,
    }

    impl Layout {
        fn page_size(&self) -> u64 {
            1 << self.page_shift
        }

        fn levels(&self) -> u32 {
            (self.walk_bits - self.page_shift).div_ceil(self.page_shift - 3)
        }

        /// log2 of what one entry maps, `below` levels above the last.
        fn shift(&self, below: u32) -> u32 {
            self.page_shift + below * (self.page_shift - 3)
        }

        fn index(&self, va: u64, below: u32) -> u64 {
            let bits = if below + 1 == self.levels() {
                self.walk_bits - self.shift(below)
            } else {
                self.page_shift - 3
            };
            (va >> self.shift(below)) & ((1 << bits) - 1)
        }

        /// A physical address as descriptor bits.
        fn encode(&self, pa: u64) -> u64 {
            match self.format {
                OaFormat::Bits48 => {
                    assert!(pa < 1 << 48);
                    pa
                }
                OaFormat::Lpa => (pa & 0x0000_ffff_ffff_0000) | ((pa >> 48) & 0xf) << 12,
                OaFormat::Lpa2 => (pa & ((1 << 50) - 1)) | ((pa >> 50) & 0x3) << 8,
            }
        }

        fn leaf_attrs(&self) -> u64 {
            match self.format {
                OaFormat::Lpa2 => LEAF_ATTRS,
                _ => LEAF_ATTRS | SH_INNER,
            }
        }
    }

    /// A physical memory of page tables: written entries, and table pages that read as zero
    /// elsewhere; anything else is not in the dump. Counts reads.
    struct Memory {
        layout: Layout,
        entries: HashMap<u64, u64>,
        tables: HashSet<u64>,
        /// Table a table descriptor at this address points to.
        children: HashMap<u64, u64>,
        next_table: u64,
        reads: Cell<usize>,
    }

    impl Memory {
        fn new(layout: Layout, tables_at: u64) -> Memory {
            let mut tables = HashSet::new();
            tables.insert(ROOT_PA & !(layout.page_size() - 1));
            Memory {
                layout,
                entries: HashMap::new(),
                tables,
                children: HashMap::new(),
                next_table: tables_at,
                reads: Cell::new(0),
            }
        }

        fn read(&self, pa: u64) -> Result<u64, Gap> {
            self.reads.set(self.reads.get() + 1);
            if let Some(&entry) = self.entries.get(&pa) {
                return Ok(entry);
            }
            if self.tables.contains(&(pa & !(self.layout.page_size() - 1))) {
                return Ok(0);
            }
            Err(Gap::NotInDump)
        }

        /// Maps `va` to `pa` with a descriptor of type `kind` in the table whose entries map
        /// 2^`leaf_shift` bytes, making the tables above it as needed.
        fn map(&mut self, va: u64, pa: u64, leaf_shift: u32, kind: u64) {
            let layout = self.layout;
            let mut table = ROOT_PA;
            for below in (0..layout.levels()).rev() {
                let slot = table + layout.index(va, below) * 8;
                if layout.shift(below) == leaf_shift {
                    let desc = layout.encode(pa) | layout.leaf_attrs() | kind;
                    self.entries.insert(slot, desc);
                    return;
                }
                table = match self.children.get(&slot) {
                    Some(&child) => child,
                    None => {
                        let child = self.next_table;
                        self.next_table += layout.page_size();
                        self.tables.insert(child);
                        self.children.insert(slot, child);
                        self.entries
                            .insert(slot, layout.encode(child) | TABLE_ATTRS | 0b11);
                        child
                    }
                };
            }
            panic!("no level maps 2^{leaf_shift} bytes");
        }

        fn map_page(&mut self, va: u64, pa: u64) {
            self.map(va, pa, self.layout.page_shift, PAGE);
        }

        /// Translates and returns how many entries the walk read.
        fn translate(&self, t: &Aarch64, va: u64) -> (Result<u64, Fault>, usize) {
            let before = self.reads.get();
            let result = t.translate(va, &|pa| self.read(pa));
            (result, self.reads.get() - before)
        }
    }

    /// Every granule with every VA size it allows: pages at the bottom, middle and top of the
    /// kernel range translate in `levels` reads, with 52-bit output addresses (tables and
    /// pages above 2^48, or 2^50 for LPA2) where the format carries them.
    #[test]
    fn each_granule_and_va_size_walks_to_pages() {
        // Page size, VA_BITS, actual VA size, MAX_PHYSMEM_BITS, levels, descriptor format.
        type Case = (u64, u32, Option<u32>, u32, u8, OaFormat);
        let cases: &[Case] = &[
            (4096, 39, None, 48, 3, OaFormat::Bits48),
            (4096, 48, Some(48), 48, 4, OaFormat::Bits48),
            (4096, 52, Some(52), 52, 5, OaFormat::Lpa2),
            (16384, 36, None, 48, 2, OaFormat::Bits48),
            (16384, 47, Some(47), 48, 3, OaFormat::Bits48),
            (16384, 48, Some(48), 48, 4, OaFormat::Bits48),
            (16384, 52, Some(52), 52, 4, OaFormat::Lpa2),
            (65536, 42, Some(42), 48, 2, OaFormat::Bits48),
            (65536, 48, Some(48), 48, 3, OaFormat::Bits48),
            (65536, 52, Some(52), 52, 3, OaFormat::Lpa),
        ];
        for &(page_size, va_bits, actual, pa_bits, levels, format) in cases {
            let what = format!("{page_size}/{va_bits}");
            let t = translator(page_size, va_bits, actual, pa_bits);
            assert_eq!(t.pgtable_levels(), levels, "{what}");
            let layout = Layout {
                page_shift: page_size.trailing_zeros(),
                walk_bits: va_bits,
                format,
            };
            assert_eq!(layout.levels(), u32::from(levels), "{what}");
            // Tables and pages above 2^48 (64K) or with PA[51:50] and PA[49:48] set (LPA2).
            let (tables_at, pages_at) = match format {
                OaFormat::Bits48 => (0x7000_0000, 0x0000_8765_4320_0000),
                OaFormat::Lpa => (0x000f_0000_0000_0000, 0x000a_1234_5670_0000),
                OaFormat::Lpa2 => (0x000d_0000_0000_0000, 0x000e_1234_5670_0000),
            };
            let mut mem = Memory::new(layout, tables_at);
            let lowest = u64::MAX << va_bits;
            let highest = !(page_size - 1);
            let middle = lowest + (1 << (va_bits - 2)) + 7 * page_size;
            for (n, va) in [lowest, middle, highest].into_iter().enumerate() {
                mem.map_page(va, pages_at + n as u64 * page_size);
            }
            for (n, va) in [lowest, middle, highest].into_iter().enumerate() {
                let pa = pages_at + n as u64 * page_size;
                let (result, reads) = mem.translate(&t, va + 0x123);
                assert_eq!(result, Ok(pa + 0x123), "{what} {va:#x}");
                assert_eq!(reads, usize::from(levels), "{what} {va:#x}");
                // Cached: no reads for another byte of the page.
                let (result, reads) = mem.translate(&t, va + (page_size - 1));
                assert_eq!((result, reads), (Ok(pa + (page_size - 1)), 0), "{what}");
            }
            // A zero entry in a table that is there.
            let (result, _) = mem.translate(&t, lowest + page_size);
            assert_eq!(result, Err(Fault::NotMapped), "{what}");
            // Below the kernel's range, and user addresses: not translated, nothing read.
            for va in [
                lowest - 1,
                lowest - page_size,
                0,
                0x1000,
                (1 << va_bits) - 1,
            ] {
                assert_eq!(mem.translate(&t, va), (Err(Fault::NotMapped), 0), "{what}");
            }
        }
    }

    /// Block descriptors at every level that allows them map their whole span.
    #[test]
    fn blocks_at_each_level_that_allows_them() {
        let cases: &[(u64, u32, u32, u32, OaFormat)] = &[
            (4096, 48, 48, 30, OaFormat::Bits48), // 1 GiB, level 1
            (4096, 48, 48, 21, OaFormat::Bits48), // 2 MiB, level 2
            (4096, 39, 48, 30, OaFormat::Bits48), // 1 GiB in the top table
            (4096, 52, 52, 39, OaFormat::Lpa2),   // 512 GiB, level 0 (LPA2)
            (4096, 52, 52, 30, OaFormat::Lpa2),
            (16384, 47, 48, 25, OaFormat::Bits48), // 32 MiB, level 2
            (16384, 36, 48, 25, OaFormat::Bits48), // 32 MiB in the top table
            (16384, 52, 52, 36, OaFormat::Lpa2),   // 64 GiB, level 1 (LPA2)
            (65536, 48, 48, 29, OaFormat::Bits48), // 512 MiB, level 2
            (65536, 42, 48, 29, OaFormat::Bits48), // 512 MiB in the top table
            (65536, 52, 52, 42, OaFormat::Lpa),    // 4 TiB, level 1 (52-bit PA)
            (65536, 52, 52, 29, OaFormat::Lpa),
        ];
        for &(page_size, va_bits, pa_bits, shift, format) in cases {
            let what = format!("{page_size}/{va_bits} 2^{shift}");
            let t = translator(page_size, va_bits, None, pa_bits);
            let layout = Layout {
                page_shift: page_size.trailing_zeros(),
                walk_bits: va_bits,
                format,
            };
            let span = 1u64 << shift;
            let block_pa = match format {
                OaFormat::Bits48 => 0x0000_4000_0000_0000,
                _ => 0x000c_0000_0000_0000,
            };
            let mut mem = Memory::new(layout, 0x7000_0000);
            let va = (u64::MAX << va_bits) + 3 * span;
            mem.map(va, block_pa, shift, BLOCK);
            let expected_reads =
                layout.levels() - (shift - layout.page_shift) / (layout.page_shift - 3);
            for offset in [0, 0x123, span / 2 + 0x4567, span - 1] {
                let (result, reads) = mem.translate(&t, va + offset);
                assert_eq!(result, Ok(block_pa + offset), "{what} +{offset:#x}");
                if offset == 0 {
                    assert_eq!(reads, expected_reads as usize, "{what}");
                }
            }
            // The next block is not mapped.
            assert_eq!(
                mem.translate(&t, va + span).0,
                Err(Fault::NotMapped),
                "{what}"
            );
        }
    }

    /// A block descriptor where the granule has none, or 0b01 at the last level, faults.
    #[test]
    fn blocks_where_the_granule_allows_none_are_not_mapped() {
        let cases: &[(u64, u32, u32, u32)] = &[
            (4096, 48, 48, 39),  // level 0 without LPA2
            (16384, 48, 48, 36), // level 1 without LPA2
            (16384, 47, 48, 36), // the same in the top table
            (16384, 48, 48, 47), // level 0
            (65536, 48, 48, 42), // level 1 without 52-bit PA
            (4096, 48, 48, 12),  // the last level
            (16384, 47, 48, 14),
            (65536, 48, 48, 16),
            (65536, 52, 52, 16),
        ];
        for &(page_size, va_bits, pa_bits, shift) in cases {
            let what = format!("{page_size}/{va_bits} 2^{shift}");
            let t = translator(page_size, va_bits, None, pa_bits);
            let format = if pa_bits == 52 {
                OaFormat::Lpa
            } else {
                OaFormat::Bits48
            };
            let layout = Layout {
                page_shift: page_size.trailing_zeros(),
                walk_bits: va_bits,
                format,
            };
            let mut mem = Memory::new(layout, 0x7000_0000);
            let va = u64::MAX << va_bits;
            mem.map(va, 0x4000_0000_0000 & !((1 << shift) - 1), shift, BLOCK);
            assert_eq!(mem.translate(&t, va).0, Err(Fault::NotMapped), "{what}");
        }
    }

    /// Descriptor bits to output addresses, worked by hand for each format.
    #[test]
    fn output_address_formats() {
        let plain = translator(4096, 48, None, 48);
        // Shareability, AF, nG and the upper attributes are not address bits.
        assert_eq!(
            plain.output_address(0x0060_1234_5678_9f03 | 0xfff0_0000_0000_0000),
            0x1234_5678_9000
        );
        let lpa = translator(65536, 52, None, 52);
        // OA[51:48] = desc[15:12] = 0xb.
        assert_eq!(
            lpa.output_address(0x0040_8765_4321_b703),
            0x000b_8765_4321_0000
        );
        // The same granule with 48-bit PAs: bits [15:12] are not address bits.
        let lpa_off = translator(65536, 48, None, 48);
        assert_eq!(
            lpa_off.output_address(0x0000_8765_4321_b703),
            0x8765_4321_0000
        );
        let lpa2 = translator(4096, 52, Some(52), 52);
        // OA[49:12] in place (bits 49:48 = 0b11), OA[51:50] = desc[9:8] = 0b10.
        assert_eq!(
            lpa2.output_address(0x0007_1234_5678_9e03),
            0x000b_1234_5678_9000
        );
        let lpa2_16k = translator(16384, 52, Some(52), 52);
        assert_eq!(
            lpa2_16k.output_address(0x0002_1234_5678_c103),
            0x0006_1234_5678_c000
        );
    }

    /// arm64 6.9+ built for 52-bit VAs with 4 KiB pages on hardware without LPA2: 48-bit
    /// VAs, PUD folded at run time, so the walk is 4 levels from the start of swapper_pg_dir
    /// with 48-bit indices, and desc[9:8] are shareability, not PA[51:50], though
    /// MAX_PHYSMEM_BITS is 52. Indices worked by hand.
    #[test]
    fn lpa2_kernel_on_48_bit_hardware() {
        let t = translator(4096, 52, Some(48), 52);
        assert_eq!(t.pgtable_levels(), 4);
        let va = 0xffff_8000_1234_5678u64;
        let (l0, l1, l2) = (0x5000_0000u64, 0x5000_1000u64, 0x5000_2000u64);
        let mut mem = HashMap::new();
        mem.insert(ROOT_PA + 0x100 * 8, l0 | SH_INNER | PAGE);
        mem.insert(l0, l1 | PAGE);
        mem.insert(l1 + 0x91 * 8, l2 | PAGE);
        mem.insert(l2 + 0x145 * 8, 0x8_7654_3000 | LEAF_ATTRS | SH_INNER | PAGE);
        let read = |pa: u64| mem.get(&pa).copied().ok_or(Gap::NotInDump);
        assert_eq!(t.translate(va, &read), Ok(0x8_7654_3678));
        // Above 48 bits is not a kernel address on this machine.
        assert_eq!(
            t.translate(0xfff0_0000_0000_0000, &read),
            Err(Fault::NotMapped)
        );
    }

    /// 16 KiB pages, 52-bit kernel on hardware without LPA2: 47-bit VAs, 3 levels.
    #[test]
    fn lpa2_kernel_with_16k_pages_on_47_bit_hardware() {
        let t = translator(16384, 52, Some(47), 52);
        assert_eq!(t.pgtable_levels(), 3);
        let layout = Layout {
            page_shift: 14,
            walk_bits: 47,
            format: OaFormat::Bits48,
        };
        let mut mem = Memory::new(layout, 0x7000_0000);
        let va = 0xffff_8000_0800_c000u64;
        mem.map_page(va, 0x1_2345_8000);
        assert_eq!(mem.translate(&t, va + 5), (Ok(0x1_2345_8005), 3));
        assert_eq!(
            mem.translate(&t, 0xffff_7fff_ffff_c000),
            (Err(Fault::NotMapped), 0)
        );
    }

    /// 64 KiB pages, 52-bit kernel on 48-bit hardware: swapper_pg_dir keeps its 52-bit
    /// layout (TTBR1 points 0x3c0 entries in), so the top index uses VA[51:42]: all ones
    /// in VA[51:48] for a kernel address. Indices worked by hand.
    #[test]
    fn lva_kernel_with_64k_pages_on_48_bit_hardware() {
        let t = translator(65536, 52, Some(48), 48);
        assert_eq!(t.pgtable_levels(), 3);
        let va = 0xffff_fc00_1234_5678u64;
        let (l2, l3) = (0x5000_0000u64, 0x5001_0000u64);
        let mut mem = HashMap::new();
        mem.insert(ROOT_PA + 0x3ff * 8, l2 | PAGE);
        mem.insert(l2, l3 | PAGE);
        mem.insert(
            l3 + 0x1234 * 8,
            0x9_8765_0000 | LEAF_ATTRS | SH_INNER | PAGE,
        );
        let read = |pa: u64| mem.get(&pa).copied().ok_or(Gap::NotInDump);
        assert_eq!(t.translate(va, &read), Ok(0x9_8765_5678));
        // A kernel address for 52 bits but not for the 48 the hardware uses.
        assert_eq!(
            t.translate(0xfff0_0000_0000_0000, &read),
            Err(Fault::NotMapped)
        );
        // The lowest 48-bit kernel address indexes entry 0x3c0, not 0.
        let lowest = 0xffff_0000_0000_0000u64;
        let mut mem = HashMap::new();
        mem.insert(ROOT_PA + 0x3c0 * 8, l2 | PAGE);
        mem.insert(l2, l3 | PAGE);
        mem.insert(l3, 0x4000_0000 | PAGE);
        let read = |pa: u64| mem.get(&pa).copied().ok_or(Gap::NotInDump);
        assert_eq!(t.translate(lowest + 8, &read), Ok(0x4000_0008));
    }

    /// 4 KiB, 48-bit, worked by hand: the first read is swapper_pg_dir's image address minus
    /// kimage_voffset, then one table per level.
    #[test]
    fn walk_starts_at_swapper_pg_dir_by_kimage_voffset() {
        let t = translator(4096, 48, Some(48), 48);
        let va = 0xffff_8000_1234_5678u64;
        let reads = std::cell::RefCell::new(Vec::new());
        let tables = [0x5000_0000u64, 0x5000_1000, 0x5000_2000];
        let read = |pa: u64| {
            reads.borrow_mut().push(pa);
            Ok(match pa {
                pa if pa == ROOT_PA + 0x100 * 8 => tables[0] | PAGE,
                pa if pa == tables[0] => tables[1] | PAGE,
                pa if pa == tables[1] + 0x91 * 8 => tables[2] | PAGE,
                pa if pa == tables[2] + 0x145 * 8 => 0x7654_3000 | PAGE,
                _ => 0,
            })
        };
        assert_eq!(t.translate(va, &read), Ok(0x7654_3678));
        assert_eq!(
            *reads.borrow(),
            [
                ROOT_PA + 0x800,
                tables[0],
                tables[1] + 0x91 * 8,
                tables[2] + 0x145 * 8
            ]
        );
    }

    #[test]
    fn a_missing_table_is_a_table_fault_with_its_gap() {
        let t = translator(4096, 48, None, 48);
        let va = 0xffff_8000_0800_0000u64;
        // Nothing at all, not even swapper_pg_dir.
        let nothing = |_: u64| Err(Gap::NotInDump);
        assert_eq!(t.translate(va, &nothing), Err(Fault::Table(Gap::NotInDump)));
        // A table further down that the dump lacks, is cut off in, or cannot decode.
        let layout = Layout {
            page_shift: 12,
            walk_bits: 48,
            format: OaFormat::Bits48,
        };
        let mut mem = Memory::new(layout, 0x7000_0000);
        mem.map_page(va, 0x4000_0000);
        let pte_table = mem.next_table - 0x1000;
        mem.tables.remove(&pte_table);
        mem.entries.retain(|&pa, _| pa & !0xfff != pte_table);
        assert_eq!(mem.translate(&t, va).0, Err(Fault::Table(Gap::NotInDump)));
        for gap in [Gap::Truncated, Gap::Corrupt("bad block".into())] {
            let t = translator(4096, 48, None, 48);
            let read = |pa: u64| {
                if pa & !0xfff == pte_table {
                    Err(gap.clone())
                } else {
                    mem.read(pa)
                }
            };
            assert_eq!(t.translate(va, &read), Err(Fault::Table(gap.clone())));
        }
    }

    #[test]
    fn invalid_descriptors_are_not_mapped() {
        let layout = Layout {
            page_shift: 12,
            walk_bits: 48,
            format: OaFormat::Bits48,
        };
        let va = 0xffff_8000_0800_0000u64;
        // Bit 0 clear at each level in turn, whatever else is set.
        for level in 0..4 {
            for invalid in [0, 0b10, 0xffff_ffff_ffff_fffe, 0x4000_0000 | LEAF_ATTRS] {
                let t = translator(4096, 48, None, 48);
                let mut mem = Memory::new(layout, 0x7000_0000);
                mem.map_page(va, 0x4000_0000);
                let mut slot = ROOT_PA + layout.index(va, 3) * 8;
                for below in (4 - level..4).rev() {
                    slot = mem.children[&slot] + layout.index(va, below - 1) * 8;
                }
                mem.entries.insert(slot, invalid);
                assert_eq!(
                    mem.translate(&t, va).0,
                    Err(Fault::NotMapped),
                    "level {level} {invalid:#x}"
                );
            }
        }
    }

    #[test]
    fn non_kernel_addresses_are_not_mapped() {
        for (page_size, va_bits) in [
            (4096, 39),
            (4096, 48),
            (16384, 47),
            (65536, 42),
            (65536, 52),
        ] {
            let t = translator(page_size, va_bits, None, 48);
            let read = |_: u64| -> Result<u64, Gap> { panic!("no read for a non-kernel address") };
            for va in [
                0,
                0x0000_ffff_f000_0000 & ((1 << va_bits) - 1),
                (u64::MAX << va_bits) - 1,
                0x8000_0000_0000_0000,
                0x7fff_ffff_ffff_ffff,
                (u64::MAX << va_bits) ^ (1 << 60),
            ] {
                assert_eq!(t.translate(va, &read), Err(Fault::NotMapped), "{va:#x}");
            }
        }
    }

    #[test]
    fn image_addresses_translate_by_kimage_voffset_without_a_walk() {
        let mut p = params(4096, 48, Some(48), 48);
        // The real dump's _text.._end.
        p.image = 0xffff_d620_53e0_0000..0xffff_d620_55e1_0000;
        let t = Aarch64::new(p).unwrap();
        let read = |_: u64| -> Result<u64, Gap> { panic!("no read for an image address") };
        assert_eq!(t.translate(0xffff_d620_53e1_0000, &read), Ok(0x4021_0000));
        assert_eq!(t.translate(0xffff_d620_54cf_3be0, &read), Ok(0x410f_3be0));
        assert_eq!(t.translate(0xffff_d620_55e0_ffff, &read), Ok(0x4220_ffff));
        // Past the image: walked (and here the tables are missing).
        let nothing = |_: u64| Err(Gap::NotInDump);
        assert_eq!(
            t.translate(0xffff_d620_55e1_0000, &nothing),
            Err(Fault::Table(Gap::NotInDump))
        );
    }

    #[test]
    fn without_swapper_pg_dir_the_linear_map_uses_phys_offset() {
        // Linux 5.4+: the linear map is the bottom half, the image in the top half.
        let mut p = params(4096, 48, Some(48), 48);
        p.root_va = None;
        p.image = 0xffff_d620_53e0_0000..0xffff_d620_55e1_0000;
        let t = Aarch64::new(p.clone()).unwrap();
        let nothing = |_: u64| Err(Gap::NotInDump);
        // saved_command_line's string in the real dump.
        assert_eq!(
            t.translate(0xffff_2e44_0bf9_3280, &nothing),
            Ok(0x4bf9_3280)
        );
        assert_eq!(
            t.translate(0xffff_d620_53e1_0000, &nothing),
            Ok(0x4021_0000)
        );
        // vmalloc and vmemmap need tables.
        for va in [0xffff_8000_0800_8000, 0xffff_fcb9_1000_8000] {
            assert_eq!(t.translate(va, &nothing), Err(Fault::NotMapped));
        }
        // 52-bit VAs: PAGE_OFFSET is -(1 << 52), the map ends at -(1 << 47).
        let mut p52 = params(65536, 52, Some(52), 52);
        p52.root_va = None;
        p52.phys_offset = 0x8000_0000;
        p52.image = 0xffff_a000_0000_0000..0xffff_a000_0200_0000;
        let t = Aarch64::new(p52).unwrap();
        assert_eq!(
            t.translate(0xfff0_0000_0000_1000, &nothing),
            Ok(0x8000_1000)
        );
        assert_eq!(
            t.translate(0xffff_7fff_ffff_ffff, &nothing),
            Ok(0x000f_8000_7fff_ffff)
        );
        assert_eq!(
            t.translate(0xffff_8000_0000_0000, &nothing),
            Err(Fault::NotMapped)
        );
        // Before Linux 5.4: the linear map is the top half, the image below it.
        let mut old = params(4096, 48, None, 48);
        old.root_va = None;
        old.phys_offset = 0x4000_0000;
        old.kimage_voffset = 0xffff_0000_0808_0000 - 0x4008_0000;
        old.image = 0xffff_0000_0808_0000..0xffff_0000_0a00_0000;
        let t = Aarch64::new(old).unwrap();
        assert_eq!(
            t.translate(0xffff_8000_0012_3456, &nothing),
            Ok(0x4012_3456)
        );
        assert_eq!(
            t.translate(0xffff_0000_0808_0010, &nothing),
            Ok(0x4008_0010)
        );
        assert_eq!(
            t.translate(0xffff_0000_1000_0000, &nothing),
            Err(Fault::NotMapped)
        );
        // No image to tell the layout by: only the image formula is left, and it is empty.
        p.image = 0..0;
        let t = Aarch64::new(p).unwrap();
        assert_eq!(
            t.translate(0xffff_2e44_0bf9_3280, &nothing),
            Err(Fault::NotMapped)
        );
    }

    #[test]
    fn unsupported_granules_and_va_sizes_are_refused() {
        let refused: &[(u64, u32, Option<u32>)] = &[
            (8192, 48, None),
            (0, 48, None),
            (4096, 42, None),
            (4096, 47, None),
            (4096, 36, None),
            (16384, 39, None),
            (16384, 42, None),
            (65536, 39, None),
            (65536, 47, None),
            (4096, 64, None),
            (4096, 0, None),
            // Run-time sizes no kernel falls back to.
            (4096, 52, Some(47)),
            (16384, 52, Some(48)),
            (65536, 52, Some(42)),
            (65536, 48, Some(52)),
            (4096, 48, Some(39)),
            (4096, 48, Some(64)),
        ];
        for &(page_size, va_bits, actual) in refused {
            assert!(
                Aarch64::new(params(page_size, va_bits, actual, 48)).is_none(),
                "{page_size}/{va_bits}/{actual:?}"
            );
        }
        let accepted: &[(u64, u32, Option<u32>, u8)] = &[
            (4096, 52, Some(48), 4),
            (16384, 52, Some(47), 3),
            (65536, 52, Some(48), 3),
            (65536, 52, None, 3),
        ];
        for &(page_size, va_bits, actual, levels) in accepted {
            let t = Aarch64::new(params(page_size, va_bits, actual, 48)).unwrap();
            assert_eq!(
                t.pgtable_levels(),
                levels,
                "{page_size}/{va_bits}/{actual:?}"
            );
        }
    }

    const VMCOREINFO: &str = "OSRELEASE=6.1.0-57-arm64
PAGESIZE=4096
SYMBOL(swapper_pg_dir)=ffffd62055458000
SYMBOL(_stext)=ffffd62053e10000
NUMBER(MAX_PHYSMEM_BITS)=48
NUMBER(VA_BITS)=48
NUMBER(kimage_voffset)=0xffffd62013c00000
NUMBER(PHYS_OFFSET)=0xffffd1bc40000000
NUMBER(TCR_EL1_T1SZ)=0x10
KERNELOFFSET=56204be00000
";

    fn without(line_start: &str) -> VmcoreInfo {
        let text: String = VMCOREINFO
            .lines()
            .filter(|line| !line.starts_with(line_start))
            .map(|line| format!("{line}\n"))
            .collect();
        VmcoreInfo::parse(text.as_bytes())
    }

    #[test]
    fn from_vmcoreinfo_reads_the_kernel_numbers() {
        let info = VmcoreInfo::parse(VMCOREINFO.as_bytes());
        let t =
            Aarch64::from_vmcoreinfo(&info, 0xffff_d620_53e0_0000..0xffff_d620_55e1_0000).unwrap();
        assert_eq!(t.pgtable_levels(), 4);
        assert_eq!(t.root, Some(0x4185_8000));
        assert_eq!(t.kernel_bits, 48);
        assert_eq!(t.oa_format, OaFormat::Bits48);
        let nothing = |_: u64| Err(Gap::NotInDump);
        assert_eq!(
            t.translate(0xffff_d620_53e1_0000, &nothing),
            Ok(0x4021_0000)
        );

        // What a walk cannot do without.
        for key in ["NUMBER(kimage_voffset)", "NUMBER(VA_BITS)", "PAGESIZE"] {
            assert!(
                Aarch64::from_vmcoreinfo(&without(key), 0..0).is_none(),
                "{key}"
            );
        }
        // Optional: T1SZ (before 5.9), MAX_PHYSMEM_BITS (48), PHYS_OFFSET with a root.
        for key in [
            "NUMBER(TCR_EL1_T1SZ)",
            "NUMBER(MAX_PHYSMEM_BITS)",
            "NUMBER(PHYS_OFFSET)",
        ] {
            let t = Aarch64::from_vmcoreinfo(&without(key), 0..0).unwrap();
            assert_eq!(t.pgtable_levels(), 4, "{key}");
        }
        // No swapper_pg_dir: the linear map by PHYS_OFFSET; and without that either, nothing.
        let info = without("SYMBOL(swapper_pg_dir)");
        let t =
            Aarch64::from_vmcoreinfo(&info, 0xffff_d620_53e0_0000..0xffff_d620_55e1_0000).unwrap();
        assert_eq!(
            t.translate(0xffff_2e44_0bf9_3280, &nothing),
            Ok(0x4bf9_3280)
        );
        let text = VMCOREINFO
            .replace("SYMBOL(swapper_pg_dir)", "X")
            .replace("NUMBER(PHYS_OFFSET)", "Y");
        let info = VmcoreInfo::parse(text.as_bytes());
        assert!(Aarch64::from_vmcoreinfo(&info, 0..0).is_none());

        // A 52-bit kernel with 64 KiB pages on 48-bit hardware, 52-bit PAs.
        let text = VMCOREINFO
            .replace("PAGESIZE=4096", "PAGESIZE=65536")
            .replace("VA_BITS)=48", "VA_BITS)=52")
            .replace("MAX_PHYSMEM_BITS)=48", "MAX_PHYSMEM_BITS)=52");
        let t = Aarch64::from_vmcoreinfo(&VmcoreInfo::parse(text.as_bytes()), 0..0).unwrap();
        assert_eq!((t.walk_bits, t.kernel_bits, t.levels), (52, 48, 3));
        assert_eq!(t.oa_format, OaFormat::Lpa);
    }

    #[test]
    fn the_tlb_is_bounded_and_per_page() {
        let t = translator(4096, 48, None, 48);
        let layout = Layout {
            page_shift: 12,
            walk_bits: 48,
            format: OaFormat::Bits48,
        };
        let mut mem = Memory::new(layout, 0x7000_0000);
        let va = 0xffff_8000_0000_0000u64;
        mem.map(va, 0x4000_0000, 21, BLOCK);
        for page in 0..512u64 {
            assert_eq!(
                mem.translate(&t, va + page * 4096 + 8),
                (Ok(0x4000_0000 + page * 4096 + 8), 3)
            );
        }
        // Cached page by page: no reads now, even with the tables gone.
        let gone = |_: u64| Err(Gap::NotInDump);
        assert_eq!(t.translate(va + 0x1f_f010, &gone), Ok(0x401f_f010));
        // Bounded: full at TLB_ENTRIES, the next walk starts it over.
        t.tlb.fill(0..Tlb::ENTRIES as u64);
        assert_eq!(mem.translate(&t, va + 0x2000), (Ok(0x4000_2000), 3));
        assert_eq!(t.tlb.remembered(), 1);
        assert_eq!(t.translate(va + 0x2010, &gone), Ok(0x4000_2010));
        assert_eq!(
            t.translate(va + 0x1f_f010, &gone),
            Err(Fault::Table(Gap::NotInDump))
        );
    }

    // --- The real arm64 dump of the fleet (not part of the repository) ---

    const FLEET: &str = "/root/.cache/kvm-rs-fleet";

    /// The balanced `{...}` or `[...]`, or the string, that follows `"key":` in `json`.
    fn json_value<'a>(json: &'a str, key: &str) -> Option<&'a str> {
        let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = json[at..].trim_start();
        let bytes = rest.as_bytes();
        if bytes[0] == b'"' {
            let end = rest[1..].find('"')? + 1;
            return Some(&rest[1..end]);
        }
        let (mut depth, mut in_string, mut escaped) = (0, false, false);
        for (i, &b) in bytes.iter().enumerate() {
            match (in_string, b) {
                (true, _) if escaped => escaped = false,
                (true, b'\\') => escaped = true,
                (true, b'"') => in_string = false,
                (true, _) => {}
                (false, b'"') => in_string = true,
                (false, b'{' | b'[') => depth += 1,
                (false, b'}' | b']') => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(&rest[..=i]);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// The `{...}` objects directly inside an object or array.
    fn json_children(container: &str) -> Vec<&str> {
        let mut children = Vec::new();
        let mut rest = &container[1..];
        while let Some(open) = rest.find('{') {
            let child = json_value(&format!("\"k\":{}", &rest[open..]), "k")
                .map(str::len)
                .unwrap();
            children.push(&rest[open..open + child]);
            rest = &rest[open + child..];
        }
        children
    }

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    fn hex_u64(text: &str) -> u64 {
        u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap()
    }

    /// Physical memory of an ELF core: its PT_LOAD segments, read from the file.
    struct ElfMemory {
        file: std::fs::File,
        /// (p_paddr, p_offset, p_filesz)
        loads: Vec<(u64, u64, u64)>,
    }

    impl ElfMemory {
        fn open(path: &std::path::Path) -> ElfMemory {
            use std::os::unix::fs::FileExt;
            let file = std::fs::File::open(path).unwrap();
            let mut header = [0u8; 64];
            file.read_exact_at(&mut header, 0).unwrap();
            assert_eq!(&header[..4], b"\x7fELF");
            assert_eq!(header[4], 2, "ELFCLASS64");
            let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
            let u64_at =
                |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
            let (phoff, phentsize, phnum) = (
                u64_at(&header, 32),
                u64::from(u16_at(&header, 54)),
                u16_at(&header, 56),
            );
            let mut loads = Vec::new();
            for n in 0..u64::from(phnum) {
                let mut phdr = [0u8; 56];
                file.read_exact_at(&mut phdr, phoff + n * phentsize)
                    .unwrap();
                if u32::from_le_bytes(phdr[..4].try_into().unwrap()) == 1 {
                    loads.push((u64_at(&phdr, 24), u64_at(&phdr, 8), u64_at(&phdr, 32)));
                }
            }
            ElfMemory { file, loads }
        }

        fn read(&self, pa: u64, len: usize) -> Option<Vec<u8>> {
            use std::os::unix::fs::FileExt;
            let &(paddr, offset, _) = self
                .loads
                .iter()
                .find(|&&(paddr, _, size)| pa >= paddr && pa + len as u64 <= paddr + size)?;
            let mut buf = vec![0u8; len];
            self.file
                .read_exact_at(&mut buf, offset + (pa - paddr))
                .ok()?;
            Some(buf)
        }

        fn read_entry(&self, pa: u64) -> Result<u64, Gap> {
            let bytes = self.read(pa, 8).ok_or(Gap::NotInDump)?;
            Ok(u64::from_le_bytes(bytes.try_into().unwrap()))
        }

        /// `len` bytes at kernel address `va`, page by page.
        fn read_virt(&self, t: &Aarch64, va: u64, len: usize) -> Result<Vec<u8>, Fault> {
            let mut out = Vec::new();
            while out.len() < len {
                let at = va + out.len() as u64;
                let pa = t.translate(at, &|pa| self.read_entry(pa))?;
                let in_page = (4096 - (at & 0xfff)) as usize;
                let chunk = in_page.min(len - out.len());
                out.extend(self.read(pa, chunk).ok_or(Fault::Table(Gap::NotInDump))?);
            }
            Ok(out)
        }
    }

    /// `_text`..`_end` at run time, from the fleet's System.map and VMCOREINFO's KERNELOFFSET.
    fn fleet_image(info: &VmcoreInfo) -> Range<u64> {
        let map = std::fs::read_to_string(format!("{FLEET}/System.map-6.1.0-57-arm64")).unwrap();
        let symbol = |name: &str| {
            map.lines()
                .find_map(|line| {
                    let mut fields = line.split_whitespace();
                    let (address, _, symbol) = (fields.next()?, fields.next()?, fields.next()?);
                    (symbol == name).then(|| hex_u64(address))
                })
                .unwrap()
                + info.kernel_offset().unwrap()
        };
        symbol("_text")..symbol("_end")
    }

    /// Every address of truth.json for the arm64 QEMU ELF dump: its bytes through the walk
    /// alone (no image formula), through the image formula, and the linear-map formula
    /// (no swapper_pg_dir) against the walk for every linear-map pointer in those bytes.
    #[test]
    #[ignore = "reads the arm64 fleet dump in /root/.cache/kvm-rs-fleet, which only some machines have"]
    fn real_arm64_dump_matches_truth() {
        let core = std::path::Path::new(FLEET).join("arm64-a.qemu-elf.vmcore");
        let truth_path = std::path::Path::new(FLEET).join("truth.json");
        if !core.exists() || !truth_path.exists() {
            eprintln!("skipped: no {}", core.display());
            return;
        }
        let info =
            VmcoreInfo::parse(&std::fs::read(format!("{FLEET}/arm64-a.vmcoreinfo.txt")).unwrap());
        let memory = ElfMemory::open(&core);
        assert_eq!(memory.loads.len(), 1);
        assert_eq!(memory.loads[0].0, 0x4000_0000);
        let image = fleet_image(&info);
        let walk_only = Aarch64::from_vmcoreinfo(&info, 0..0).unwrap();
        let with_image = Aarch64::from_vmcoreinfo(&info, image.clone()).unwrap();
        let mut rootless = params(4096, 48, Some(48), 48);
        rootless.root_va = None;
        rootless.phys_offset = info.number("PHYS_OFFSET").unwrap() as u64;
        rootless.kimage_voffset = info.number("kimage_voffset").unwrap() as u64;
        rootless.image = image;
        let rootless = Aarch64::new(rootless).unwrap();
        assert_eq!(walk_only.pgtable_levels(), 4);

        let truth = std::fs::read_to_string(truth_path).unwrap();
        let dump = json_value(&truth, "arm64-a.qemu-elf.vmcore").unwrap();
        let mut expected = Vec::new();
        for symbol in json_children(json_value(dump, "symbols").unwrap()) {
            if let Some(bytes) = json_value(symbol, "bytes") {
                let address = hex_u64(json_value(symbol, "runtime_address").unwrap());
                expected.push((address, hex_bytes(bytes)));
            }
        }
        let symbols = expected.len();
        for entry in json_children(json_value(dump, "walk").unwrap()) {
            let address = hex_u64(json_value(entry, "address").unwrap());
            expected.push((address, hex_bytes(json_value(entry, "bytes").unwrap())));
        }
        assert_eq!((symbols, expected.len() - symbols), (31, 7));

        let (mut matched, mut linear_checked) = (0, 0);
        for (address, bytes) in &expected {
            let walked = memory.read_virt(&walk_only, *address, bytes.len());
            assert_eq!(walked.as_ref(), Ok(bytes), "walk {address:#x}");
            let imaged = memory.read_virt(&with_image, *address, bytes.len());
            assert_eq!(imaged.as_ref(), Ok(bytes), "image {address:#x}");
            matched += 1;
            // Linear-map pointers among the bytes: the formula must agree with the walk.
            for word in bytes.chunks_exact(8) {
                let pointer = u64::from_le_bytes(word.try_into().unwrap());
                if pointer >> 47 != 0x1_fffe {
                    continue;
                }
                // Not every such word is a pointer (__per_cpu_offset holds offsets).
                let walked = walk_only.translate(pointer, &|pa| memory.read_entry(pa));
                if walked.is_err() {
                    continue;
                }
                let nothing = |_: u64| Err(Gap::NotInDump);
                assert_eq!(
                    rootless.translate(pointer, &nothing),
                    walked,
                    "{pointer:#x}"
                );
                linear_checked += 1;
            }
        }

        // saved_command_line points into the linear map at the command line.
        let deref = json_value(dump, "saved_command_line_deref").unwrap();
        let command_line = json_value(deref, "string").unwrap();
        let pointer_at = hex_u64(
            json_value(
                json_value(json_value(dump, "symbols").unwrap(), "saved_command_line").unwrap(),
                "runtime_address",
            )
            .unwrap(),
        );
        let pointer = memory.read_virt(&walk_only, pointer_at, 8).unwrap();
        let pointer = u64::from_le_bytes(pointer.try_into().unwrap());
        let text = memory
            .read_virt(&walk_only, pointer, command_line.len() + 1)
            .unwrap();
        assert_eq!(&text[..command_line.len()], command_line.as_bytes());
        assert_eq!(text[command_line.len()], 0);
        matched += 1;

        assert!(linear_checked >= 10, "{linear_checked} linear-map pointers");
        eprintln!(
            "arm64-a: {matched} truth addresses matched ({symbols} symbols, {} walk entries, \
             the command line); {linear_checked} linear-map pointers agree walk = formula",
            expected.len() - symbols
        );
    }
}
