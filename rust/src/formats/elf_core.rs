//! ELF cores: /proc/kcore, /proc/vmcore copies, `makedumpfile -E`, QEMU `dump-guest-memory`.
//!
//! Parsed by hand rather than with goblin: a core needs the ELF header, the program headers
//! (65,000 of them for a QEMU paging dump, counted through PN_XNUM) and the notes, read
//! through `Medium` so that /proc/kcore, which cannot be mapped, works the same way.

use std::sync::{Arc, OnceLock};

use super::notes::{self, CpuNotes, Notes};
use super::segments::{Segment, SegmentIndex};
use super::vmcoreinfo::{VmcoreInfo, MAX_VMCOREINFO};
use super::{
    read_pieces, Address, Core, CoreFormat, Fields, FormatFacts, Gap, Stop, VmcoreinfoSource,
};
use crate::errors::CoreFault;
use crate::mapping::Medium;
use crate::translate;

const ET_CORE: u16 = 4;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PN_XNUM: u16 = 0xffff;
/// makedumpfile's `e_flags` bit for a dump that ran out of space.
const ELF_FLAG_INCOMPLETE: u32 = 0x1;

/// More program headers than any machine has memory ranges (a QEMU paging dump of a few
/// GiB has ~10^5); bounds what a hostile header can make us allocate.
const MAX_PHNUM: u64 = 1 << 24;
/// Total note bytes we are willing to read.
const MAX_NOTES: u64 = 64 << 20;

pub struct ElfCore {
    pub class64: bool,
    pub big_endian: bool,
    pub e_machine: u16,
    pub e_flags: u32,
    pub loads: Vec<Segment>,
    /// PT_LOADs by kernel virtual address (where p_vaddr is one) and by physical address,
    /// each built on the first read that needs it, as the kdump rank index is: open stays
    /// cheap (a QEMU paging dump has 65,000 segments), and a dump read through its virtual
    /// segments (kcore, paging dumps) never builds the physical one.
    by_vaddr: OnceLock<SegmentIndex>,
    by_paddr: OnceLock<SegmentIndex>,
    pub vmcoreinfo: VmcoreInfo,
    /// NT_PRSTATUS notes: one per CPU that was online.
    pub cpus: usize,
    /// The NT_PRSTATUS descriptors, in note order.
    pub cpu_notes: CpuNotes,
    pub qemu_notes: usize,
    /// Some PT_LOAD data lies past the end of the file.
    pub truncated: bool,
    /// The kernel's page size, for counting dumped pages.
    page_size: u64,
    medium: Arc<dyn Medium>,
}

struct Ehdr {
    class64: bool,
    big_endian: bool,
    e_type: u16,
    e_machine: u16,
    e_flags: u32,
    phoff: u64,
    shoff: u64,
    phentsize: u16,
    phnum: u16,
    shentsize: u16,
}

fn truncated(what: &str) -> CoreFault {
    CoreFault::Truncated(what.to_owned())
}

fn invalid(what: String) -> CoreFault {
    CoreFault::Invalid(what)
}

fn read_exact(
    medium: &dyn Medium,
    offset: u64,
    len: u64,
    what: &str,
) -> Result<Vec<u8>, CoreFault> {
    let len = usize::try_from(len).map_err(|_| invalid(format!("{what} outside the file")))?;
    match medium.exact_at(offset, len) {
        Ok(Some(bytes)) => Ok(bytes.into_owned()),
        Ok(None) => Err(truncated(what)),
        Err(e) => Err(invalid(format!(
            "{what}: {}",
            crate::errors::strerror(e.raw_os_error().unwrap_or(libc::EIO))
        ))),
    }
}

fn parse_ehdr(medium: &dyn Medium) -> Result<Ehdr, CoreFault> {
    let ident = medium
        .bytes_at(0, 16)
        .map_err(|_| truncated("ELF header"))?;
    let (class, data) = match (ident.get(4), ident.get(5)) {
        (Some(&c), Some(&d)) => (c, d),
        _ => return Err(truncated("ELF header")),
    };
    let class64 = match class {
        1 => false,
        2 => true,
        other => return Err(invalid(format!("ELF class {other}"))),
    };
    let big_endian = match data {
        1 => false,
        2 => true,
        other => return Err(invalid(format!("ELF byte order {other}"))),
    };
    let size = if class64 { 64 } else { 52 };
    let raw = read_exact(medium, 0, size, "ELF header")?;
    let f = Fields::new(&raw, big_endian);
    let bad = || truncated("ELF header");
    let e_type = f.u16(16).ok_or_else(bad)?;
    let e_machine = f.u16(18).ok_or_else(bad)?;
    // e_flags, then e_ehsize, e_phentsize, e_phnum, e_shentsize (u16 each).
    let (phoff, shoff, flags_at, phentsize_at) = if class64 {
        (f.u64(32), f.u64(40), 48, 54)
    } else {
        (f.u32(28).map(u64::from), f.u32(32).map(u64::from), 36, 42)
    };
    let (phnum_at, shentsize_at) = if class64 { (56, 58) } else { (44, 46) };
    Ok(Ehdr {
        class64,
        big_endian,
        e_type,
        e_machine,
        e_flags: f.u32(flags_at).ok_or_else(bad)?,
        phoff: phoff.ok_or_else(bad)?,
        shoff: shoff.ok_or_else(bad)?,
        phentsize: f.u16(phentsize_at).ok_or_else(bad)?,
        phnum: f.u16(phnum_at).ok_or_else(bad)?,
        shentsize: f.u16(shentsize_at).ok_or_else(bad)?,
    })
}

/// The real program header count: e_phnum, or section header 0's sh_info under PN_XNUM.
fn program_header_count(medium: &dyn Medium, eh: &Ehdr) -> Result<u64, CoreFault> {
    if eh.phnum != PN_XNUM {
        return Ok(u64::from(eh.phnum));
    }
    let shsize: u16 = if eh.class64 { 64 } else { 40 };
    if eh.shoff == 0 {
        return Err(invalid(
            "e_phnum is PN_XNUM but there is no section header 0".into(),
        ));
    }
    if eh.shentsize != shsize {
        return Err(invalid(format!("e_shentsize {}", eh.shentsize)));
    }
    let raw = read_exact(medium, eh.shoff, u64::from(shsize), "section header 0")?;
    let f = Fields::new(&raw, eh.big_endian);
    let info = f
        .u32(if eh.class64 { 44 } else { 28 })
        .ok_or_else(|| truncated("section header 0"))?;
    Ok(u64::from(info))
}

/// Validates an ELF core and describes it as `format` (`elf`, `kcore`, `flattened`).
pub fn open(medium: Arc<dyn Medium>, live: bool, format: &'static str) -> Result<Core, CoreFault> {
    let elf = parse(medium)?;
    Ok(elf.into_core(if live { "kcore" } else { format }, live))
}

fn parse(medium: Arc<dyn Medium>) -> Result<ElfCore, CoreFault> {
    let eh = parse_ehdr(medium.as_ref())?;
    if eh.e_type != ET_CORE {
        let name = match eh.e_type {
            0 => "ET_NONE".to_owned(),
            1 => "ET_REL".to_owned(),
            2 => "ET_EXEC".to_owned(),
            3 => "ET_DYN".to_owned(),
            other => other.to_string(),
        };
        return Err(invalid(format!("ELF type {name}, not ET_CORE")));
    }
    if translate::elf_machine(eh.e_machine, eh.class64).is_none() {
        return Err(invalid(format!("unsupported machine {}", eh.e_machine)));
    }
    let phsize: u16 = if eh.class64 { 56 } else { 32 };
    if eh.phentsize != phsize {
        return Err(invalid(format!("e_phentsize {}", eh.phentsize)));
    }
    let phnum = program_header_count(medium.as_ref(), &eh)?;
    if phnum == 0 {
        return Err(invalid("no program headers".into()));
    }
    if phnum > MAX_PHNUM {
        return Err(invalid(format!("{phnum} program headers")));
    }
    let Some(table_len) = phnum
        .checked_mul(u64::from(phsize))
        .filter(|&len| eh.phoff.checked_add(len).is_some())
    else {
        return Err(invalid("program headers outside the file".into()));
    };
    // Borrowed from the mapping where there is one: a paging dump has 3.7 MB of headers.
    let table_len = usize::try_from(table_len)
        .map_err(|_| invalid("program headers outside the file".into()))?;
    let table = match medium.exact_at(eh.phoff, table_len) {
        Ok(Some(bytes)) => bytes,
        _ => return Err(truncated("program headers")),
    };
    let file_size = medium.size();

    let mut loads = Vec::new();
    let mut notes = Vec::new();
    let mut truncated_data = false;
    // The table is exactly phnum entries of phsize bytes.
    for (index, entry) in table.chunks_exact(usize::from(phsize)).enumerate() {
        let f = Fields::new(entry, eh.big_endian);
        let read = |off32: usize, off64: usize| -> Option<u64> {
            if eh.class64 {
                f.u64(off64)
            } else {
                f.u32(off32).map(u64::from)
            }
        };
        let p_type = f.u32(0).ok_or_else(|| truncated("program headers"))?;
        let seg = (|| {
            Some(Segment {
                offset: read(4, 8)?,
                vaddr: read(8, 16)?,
                paddr: read(12, 24)?,
                filesz: read(16, 32)?,
                memsz: read(20, 40)?,
            })
        })()
        .ok_or_else(|| truncated("program headers"))?;
        let Some(end) = seg.offset.checked_add(seg.filesz) else {
            return Err(invalid(format!("program header {index} outside the file")));
        };
        match p_type {
            PT_LOAD => {
                if seg.filesz > seg.memsz {
                    return Err(invalid(format!(
                        "program header {index}: p_filesz > p_memsz"
                    )));
                }
                truncated_data |= end > file_size;
                loads.push(seg);
            }
            PT_NOTE => notes.push(seg),
            _ => {}
        }
    }

    let mut core = ElfCore {
        class64: eh.class64,
        big_endian: eh.big_endian,
        e_machine: eh.e_machine,
        e_flags: eh.e_flags,
        loads,
        by_vaddr: OnceLock::new(),
        by_paddr: OnceLock::new(),
        vmcoreinfo: VmcoreInfo::default(),
        cpus: 0,
        cpu_notes: CpuNotes::default(),
        qemu_notes: 0,
        truncated: truncated_data,
        page_size: super::host_page_size(),
        medium: Arc::clone(&medium),
    };
    let mut note_bytes = 0u64;
    let mut segments = Vec::new();
    for seg in notes {
        note_bytes = note_bytes.saturating_add(seg.filesz);
        if note_bytes > MAX_NOTES {
            return Err(invalid("notes larger than 64 MiB".into()));
        }
        segments.push(read_exact(
            medium.as_ref(),
            seg.offset,
            seg.filesz,
            "notes",
        )?);
    }
    let mut vmcoreinfo: Vec<&[u8]> = Vec::new();
    for raw in &segments {
        for note in Notes::new(raw, eh.big_endian) {
            let note = note?;
            match (note.name, note.n_type) {
                (b"VMCOREINFO", _) if note.desc.len() <= MAX_VMCOREINFO => {
                    vmcoreinfo.push(note.desc);
                }
                // Counts of notes in at most 64 MiB: they cannot reach usize::MAX.
                (b"CORE", notes::NT_PRSTATUS) => {
                    core.cpus = core.cpus.saturating_add(1);
                }
                (b"QEMU", _) => core.qemu_notes = core.qemu_notes.saturating_add(1),
                _ => {}
            }
        }
    }
    core.vmcoreinfo = VmcoreInfo::parse_all(vmcoreinfo);
    core.cpu_notes = CpuNotes::new(segments, eh.big_endian);
    Ok(core)
}

/// Is p_vaddr a kernel virtual address? QEMU's non-paging dumps copy p_paddr into p_vaddr;
/// kernel addresses of 64-bit machines lie in the upper half.
fn valid_vaddr(seg: &Segment, class64: bool) -> bool {
    if class64 {
        seg.vaddr >> 63 == 1
    } else {
        seg.vaddr != seg.paddr
    }
}

impl ElfCore {
    /// PT_LOADs by kernel virtual address, where p_vaddr is one.
    pub fn by_vaddr(&self) -> &SegmentIndex {
        self.by_vaddr.get_or_init(|| {
            SegmentIndex::build(&self.loads, |s| {
                valid_vaddr(s, self.class64).then_some(s.vaddr)
            })
        })
    }

    /// PT_LOADs by physical address. kcore marks segments with no physical address
    /// (vmalloc, modules) p_paddr = -1.
    pub fn by_paddr(&self) -> &SegmentIndex {
        self.by_paddr.get_or_init(|| {
            SegmentIndex::build(&self.loads, |s| (s.paddr != u64::MAX).then_some(s.paddr))
        })
    }

    fn into_core(mut self, format: &'static str, live: bool) -> Core {
        let vmcoreinfo = std::mem::take(&mut self.vmcoreinfo);
        if let Some(size) = vmcoreinfo.page_size().filter(|&s| s > 0) {
            self.page_size = size;
        }
        Core {
            format,
            compression: None,
            machine: translate::elf_machine(self.e_machine, self.class64)
                .map(|m| m.name.to_owned()),
            page_size: vmcoreinfo.page_size(),
            vmcoreinfo_source: (!vmcoreinfo.is_empty()).then_some(VmcoreinfoSource::Note),
            vmcoreinfo,
            header_release: None,
            truncated: self.truncated,
            incomplete: !live && self.e_flags & ELF_FLAG_INCOMPLETE != 0,
            live,
            big_endian: self.big_endian,
            writable: format != "flattened",
            body: Box::new(self),
        }
    }
}

impl CoreFormat for ElfCore {
    fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), Stop> {
        read_pieces(paddr, buf, |at, rest| {
            let piece = self.by_paddr().find(at).ok_or((0, Gap::NotInDump))?;
            piece.copy(self.medium.as_ref(), at, rest)
        })
    }

    fn read_virt(&self, va: u64, buf: &mut [u8]) -> Option<Result<usize, Stop>> {
        let piece = self.by_vaddr().find(va)?;
        Some(piece.copy(self.medium.as_ref(), va, buf))
    }

    fn write_extent(&self, addr: Address, want: usize) -> Result<(u64, usize), Gap> {
        let (piece, at) = match addr {
            Address::Virtual(va) => (self.by_vaddr().find(va), va),
            Address::Physical(pa) => (self.by_paddr().find(pa), pa),
        };
        let (offset, n) = piece
            .and_then(|p| p.file_extent(at, want))
            .ok_or(Gap::NotInDump)?;
        // Never past the end of the file: a write must not grow a cut dump.
        let in_file = usize::try_from(self.medium.size().saturating_sub(offset))
            .map_or(n, |room| room.min(n));
        if in_file == 0 {
            return Err(Gap::Truncated);
        }
        Ok((offset, in_file))
    }

    fn facts(&self) -> FormatFacts {
        FormatFacts {
            dump_level: None,
            // Bytes held, clamped at u64::MAX (hostile headers may claim more in all).
            dumped_pages: self
                .by_paddr()
                .pieces()
                .iter()
                .fold(0u64, |sum, p| sum.saturating_add(p.file_len))
                .checked_div(self.page_size.max(1)),
            pfn_range: None,
            parts: 1,
        }
    }

    fn segments(&self) -> &[Segment] {
        &self.loads
    }

    fn cpu_notes(&self) -> &[Vec<u8>] {
        self.cpu_notes.get()
    }

    fn physical_ranges(&self) -> Vec<(u64, u64)> {
        // What the file really holds: each piece cut at the end of the file, and no more
        // in all than the file's size (hostile headers may map one region many times).
        let file_size = self.medium.size();
        let mut budget = file_size;
        let mut ranges = Vec::new();
        for piece in self.by_paddr().pieces() {
            let held = piece
                .file_len
                .min(file_size.saturating_sub(piece.offset))
                .min(budget);
            if held > 0 {
                ranges.push((piece.start, piece.start.saturating_add(held)));
            }
            budget = budget.saturating_sub(held); // held <= budget
            if budget == 0 {
                break;
            }
        }
        ranges
    }
}
