//! x86_64: the kernel image mapping (`va - __START_KERNEL_map + phys_base`), then the kernel's
//! own page tables from `init_top_pgt` (4- or 5-level; 1 GiB and 2 MiB pages), with the SME
//! encryption bit cleared from entries. Translations are remembered per handle (a small TLB).

use std::ops::Range;

use super::{Fault, KernelLayout, Tlb, Translate};
use crate::formats::Gap;

/// `__START_KERNEL_map`: where x86_64 maps the kernel image.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// The default `KERNEL_IMAGE_SIZE` with KASLR (1 GiB); VMCOREINFO states the real one.
pub const DEFAULT_IMAGE_SIZE: u64 = 1 << 30;

const PRESENT: u64 = 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// Physical address bits 12..51 of a page-table entry.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

pub struct X86_64 {
    phys_base: u64,
    /// Virtual range translated by the image formula.
    image: Range<u64>,
    /// Physical address of the top-level page table, when the dump names it.
    top_table: Option<u64>,
    levels: u8,
    entry_mask: u64,
    tlb: Tlb,
}

impl X86_64 {
    pub fn new(
        phys_base: u64,
        image: Range<u64>,
        top_table_va: Option<u64>,
        levels: u8,
        sme_mask: u64,
    ) -> X86_64 {
        let mut translator = X86_64 {
            phys_base,
            image,
            top_table: None,
            levels,
            entry_mask: ADDRESS_MASK & !sme_mask,
            tlb: Tlb::new(),
        };
        translator.top_table = top_table_va.map(|va| translator.image_to_phys(va));
        translator
    }

    fn image_to_phys(&self, va: u64) -> u64 {
        va.wrapping_sub(START_KERNEL_MAP)
            .wrapping_add(self.phys_base)
    }

    fn is_canonical(&self, va: u64) -> bool {
        let bits = if self.levels == 5 { 57 } else { 48 };
        let upper = va >> (bits - 1);
        upper == 0 || upper == (u64::MAX >> (bits - 1))
    }

    fn walk(&self, va: u64, read_entry: &dyn Fn(u64) -> Result<u64, Gap>) -> Result<u64, Fault> {
        let Some(mut table) = self.top_table else {
            return Err(Fault::NotMapped);
        };
        let shifts: &[u32] = if self.levels == 5 {
            &[48, 39, 30, 21, 12]
        } else {
            &[39, 30, 21, 12]
        };
        for &shift in shifts {
            let index = (va >> shift) & 0x1ff;
            let entry = read_entry(table + index * 8).map_err(Fault::Table)?;
            if entry & PRESENT == 0 {
                return Err(Fault::NotMapped);
            }
            let frame = entry & self.entry_mask;
            if shift == 12 {
                return Ok(frame | (va & 0xfff));
            }
            if (shift == 30 || shift == 21) && entry & PAGE_SIZE_BIT != 0 {
                let size = 1u64 << shift;
                return Ok((frame & !(size - 1)) | (va & (size - 1)));
            }
            table = frame;
        }
        Err(Fault::NotMapped)
    }
}

/// The translator of an x86_64 dump: the image range from the exec file's `_text`/`_end`
/// (else, with no page tables to walk, `KERNEL_IMAGE_SIZE` from `__START_KERNEL_map`), the
/// top table from VMCOREINFO or the exec file, `phys_base` from VMCOREINFO, the dump header,
/// or the PT_LOAD that maps the image.
pub fn build(layout: &KernelLayout<'_>) -> Option<Box<dyn Translate>> {
    let info = layout.vmcoreinfo;
    let top_table = super::machine("x86_64")
        .into_iter()
        .flat_map(|m| m.root_symbols.iter())
        .find_map(|name| info.symbol(name))
        .or(layout.exec_root);
    let image = match &layout.image {
        Some(range) => range.clone(),
        None if top_table.is_none() => {
            let size = info
                .number("KERNEL_IMAGE_SIZE")
                .map_or(DEFAULT_IMAGE_SIZE, |n| n as u64);
            START_KERNEL_MAP..START_KERNEL_MAP.saturating_add(size)
        }
        None => 0..0,
    };
    let levels = if info.number("pgtable_l5_enabled").unwrap_or(0) != 0 {
        5
    } else {
        4
    };
    let phys_base = info
        .number("phys_base")
        .map(|base| base as u64)
        .or(layout.header_phys_base)
        .unwrap_or_else(|| {
            // The segment of the kernel text: p_paddr = va - __START_KERNEL_map + phys_base.
            layout
                .segments
                .iter()
                .find(|s| s.vaddr >= START_KERNEL_MAP && s.vaddr != s.paddr)
                .map_or(0, |s| {
                    s.paddr.wrapping_sub(s.vaddr.wrapping_sub(START_KERNEL_MAP))
                })
        });
    let sme_mask = info.number("sme_mask").unwrap_or(0) as u64;
    Some(Box::new(X86_64::new(
        phys_base, image, top_table, levels, sme_mask,
    )))
}

impl Translate for X86_64 {
    fn pgtable_levels(&self) -> u8 {
        self.levels
    }

    fn forget_cached(&self) {
        self.tlb.clear();
    }

    /// The physical address of `va`; `read_entry` reads 8 bytes of physical memory.
    fn translate(
        &self,
        va: u64,
        read_entry: &dyn Fn(u64) -> Result<u64, Gap>,
    ) -> Result<u64, Fault> {
        if !self.is_canonical(va) {
            return Err(Fault::NotMapped);
        }
        if self.image.contains(&va) {
            return Ok(self.image_to_phys(va));
        }
        self.tlb.translate(va, 12, || self.walk(va, read_entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A tiny physical memory holding page tables: address → entry.
    fn walker(entries: HashMap<u64, u64>) -> impl Fn(u64) -> Result<u64, Gap> {
        move |pa| entries.get(&pa).copied().ok_or(Gap::NotInDump)
    }

    #[test]
    fn four_level_walk_with_large_pages() {
        let top = 0x1000u64;
        let image = START_KERNEL_MAP..START_KERNEL_MAP;
        let t = X86_64::new(0, image, Some(START_KERNEL_MAP + top), 4, 0);
        let va = 0xffff_8880_0000_0000u64 + 0x1234_5678;
        let i4 = (va >> 39) & 0x1ff;
        let i3 = (va >> 30) & 0x1ff;
        let mut mem = HashMap::new();
        mem.insert(top + i4 * 8, 0x2000 | PRESENT);
        mem.insert(0x2000 + i3 * 8, 0x4000_0000 | PRESENT | PAGE_SIZE_BIT);
        let read = walker(mem);
        assert_eq!(t.translate(va, &read), Ok(0x4000_0000 + (va & 0x3fff_ffff)));
        assert_eq!(
            t.translate(va + (1 << 39), &read),
            Err(Fault::Table(Gap::NotInDump))
        );
        assert_eq!(
            t.translate(0x0000_8000_0000_0000, &read),
            Err(Fault::NotMapped)
        );
    }

    #[test]
    fn image_mapping_uses_phys_base() {
        let base = (-511_705_088i64) as u64;
        let image = 0xffff_ffff_a840_0000..0xffff_ffff_ab80_0000;
        let t = X86_64::new(base, image, None, 4, 0);
        let read = walker(HashMap::new());
        assert_eq!(t.translate(0xffff_ffff_a840_0000, &read), Ok(0x09c0_0000));
    }
}
