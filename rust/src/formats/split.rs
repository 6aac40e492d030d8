//! A `makedumpfile --split` dump opened whole: several kdump files, each holding the pages
//! of one pfn range, with the same header (but the split fields) and the same VMCOREINFO.
//! A page is read from the part whose range holds it; a gap between ranges (a part not
//! given) reads as memory the dump does not hold.

use std::sync::Arc;

use super::flattened;
use super::kdump::{self, KdumpCore, PageGeometry};
use super::{
    read_pieces, signature, Address, Core, CoreFormat, FormatFacts, Gap, Stop, VmcoreinfoSource,
};
use crate::errors::{CoreFault, Error};
use crate::mapping::Medium;

pub struct SplitSet {
    /// Sorted by start pfn; ranges do not overlap.
    parts: Vec<KdumpCore>,
    /// The parts' (equal headers: one block size).
    geometry: PageGeometry,
}

fn not_same(part: &[u8], first: &[u8], field: &str) -> Error {
    Error::NotSameDump {
        part: part.to_vec(),
        first: first.to_vec(),
        field: field.to_owned(),
    }
}

/// One part: a kdump file, plain or flattened (true).
fn part(medium: Arc<dyn Medium>) -> Result<(KdumpCore, bool), CoreFault> {
    let flat = flattened::has_signature(&signature(medium.as_ref())?);
    let medium: Arc<dyn Medium> = if flat {
        Arc::new(flattened::Flattened::index(medium)?)
    } else {
        medium
    };
    if !kdump::has_signature(&signature(medium.as_ref())?) {
        return Err(CoreFault::Invalid(
            "a split dump's part must be a kdump file".into(),
        ));
    }
    Ok((kdump::open(medium)?, flat))
}

/// Opens every part, checks that they belong together, and describes them as one dump.
pub fn open(files: Vec<(Vec<u8>, Arc<dyn Medium>)>) -> Result<Core, Error> {
    let mut parts: Vec<(Vec<u8>, KdumpCore)> = Vec::with_capacity(files.len());
    let mut all_flat = true;
    for (path, medium) in files {
        let (dump, flat) = part(medium).map_err(|fault| Error::core(&path, fault))?;
        all_flat &= flat;
        parts.push((path, dump));
    }
    let format = if all_flat { "flattened" } else { "kdump" };
    let Some((first_path, first)) = parts.first() else {
        return Err(Error::core(b"", CoreFault::Empty));
    };
    // Every file of a set must be a split part; the first is the one the others answer to.
    if let Some((path, _)) = parts.iter().find(|(_, p)| p.pfn_range.is_none()) {
        let other = parts
            .iter()
            .map(|(p, _)| p)
            .find(|p| *p != path)
            .unwrap_or(first_path);
        return Err(not_same(path, other, "not a split part"));
    }
    for (path, part) in parts.iter().skip(1) {
        if part.shared_header != first.shared_header {
            return Err(not_same(path, first_path, "header"));
        }
        if part.vmcoreinfo.text() != first.vmcoreinfo.text() {
            return Err(not_same(path, first_path, "vmcoreinfo"));
        }
    }
    let first_path = first_path.clone();
    parts.sort_by_key(|(_, part)| part.pfn_range.map_or(0, |r| r.0));
    for pair in parts.windows(2) {
        if let [(_, a), (path, b)] = pair {
            let (a_end, b_start) = (
                a.pfn_range.map_or(0, |r| r.1),
                b.pfn_range.map_or(0, |r| r.0),
            );
            if b_start < a_end {
                return Err(not_same(path, &first_path, "pfn range"));
            }
        }
    }
    let mut parts: Vec<KdumpCore> = parts.into_iter().map(|(_, part)| part).collect();
    let vmcoreinfo = parts
        .first_mut()
        .map(KdumpCore::take_vmcoreinfo)
        .unwrap_or_default();
    let first = parts.first();
    let compression = first.and_then(KdumpCore::compression);
    let block_size = first.map_or(4096, |p| p.block_size);
    // One part is a dump of its own, as the format describes it.
    let mut core = if parts.len() == 1 {
        match parts.pop() {
            Some(part) => part.into_core(format),
            None => return Err(Error::core(&first_path, CoreFault::Empty)),
        }
    } else {
        let Some(geometry) = first.map(KdumpCore::geometry) else {
            return Err(Error::core(&first_path, CoreFault::Empty));
        };
        Core {
            format,
            compression,
            machine: first.and_then(KdumpCore::header_machine),
            page_size: Some(block_size),
            vmcoreinfo_source: None,
            vmcoreinfo: Default::default(),
            header_release: first.map(|p| p.release.clone()).filter(|r| !r.is_empty()),
            truncated: parts.iter().any(|p| p.truncated),
            incomplete: parts.iter().any(KdumpCore::incomplete),
            live: false,
            big_endian: first.is_some_and(|p| p.abi.big_endian),
            writable: false,
            body: Box::new(SplitSet { parts, geometry }),
        }
    };
    if !vmcoreinfo.is_empty() {
        core.set_vmcoreinfo(vmcoreinfo, VmcoreinfoSource::KdumpHeader);
    }
    Ok(core)
}

impl SplitSet {
    fn part_of(&self, pfn: u64) -> Option<&KdumpCore> {
        let at = self
            .parts
            .partition_point(|p| p.pfn_range.is_some_and(|r| r.0 <= pfn))
            .checked_sub(1)?;
        self.parts
            .get(at)
            .filter(|p| p.pfn_range.is_some_and(|r| pfn < r.1))
    }
}

impl CoreFormat for SplitSet {
    fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), Stop> {
        read_pieces(paddr, buf, |at, rest| {
            let (_, left) = self.geometry.within(at).ok_or((0, Gap::NotInDump))?;
            let n = rest.len().min(left);
            let part = self
                .part_of(self.geometry.pfn(at))
                .ok_or((0, Gap::NotInDump))?;
            part.read_phys(at, rest.get_mut(..n).unwrap_or(&mut []))?;
            Ok(n)
        })
    }

    fn write_extent(&self, _addr: Address, _want: usize) -> Result<(u64, usize), Gap> {
        // Offsets are per part: the session holds one writable descriptor.
        Err(Gap::NotInDump)
    }

    fn forget_cached(&self) {
        self.parts.iter().for_each(CoreFormat::forget_cached);
    }

    fn facts(&self) -> FormatFacts {
        FormatFacts {
            dump_level: self.parts.first().and_then(|p| p.dump_level),
            dumped_pages: Some(self.parts.iter().map(|p| p.dumped_pages).sum()),
            pfn_range: None,
            parts: self.parts.len(),
        }
    }

    fn header_phys_base(&self) -> Option<u64> {
        self.parts.first().and_then(|p| p.phys_base)
    }

    /// Every part carries the same notes (makedumpfile copies them into each).
    fn cpu_notes(&self) -> &[Vec<u8>] {
        self.parts.first().map_or(&[], |p| p.cpu_notes.get())
    }
}
