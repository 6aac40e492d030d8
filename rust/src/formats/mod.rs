//! Core file formats: recognition by content, header validation, and the facts `info` shows.
//!
//! Every format implements `CoreFormat` (physical reads, virtual segments where it has them,
//! write extents bounded by what the file holds, its facts); `open_core` picks the format
//! and is the only code that names them. The session sees a `Core` and the trait, nothing
//! more.

#![deny(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]

pub mod codec;
pub mod devmem;
pub mod elf_core;
pub mod flattened;
pub mod kdump;
pub mod notes;
pub mod segments;
pub mod split;
pub mod vmcoreinfo;

use std::sync::Arc;

use crate::errors::{CoreFault, Reason};
use crate::mapping::Medium;
use crate::translate::{self, Machine};
use segments::Segment;
use vmcoreinfo::VmcoreInfo;

pub const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Fixed-width integers from a byte slice in the file's byte order; None past the end.
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    pub bytes: &'a [u8],
    pub big_endian: bool,
}

impl<'a> Fields<'a> {
    pub fn new(bytes: &'a [u8], big_endian: bool) -> Fields<'a> {
        Fields { bytes, big_endian }
    }

    fn array<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.bytes
            .get(offset..offset.checked_add(N)?)?
            .try_into()
            .ok()
    }

    pub fn u16(&self, offset: usize) -> Option<u16> {
        let raw = self.array(offset)?;
        Some(if self.big_endian {
            u16::from_be_bytes(raw)
        } else {
            u16::from_le_bytes(raw)
        })
    }

    pub fn u32(&self, offset: usize) -> Option<u32> {
        let raw = self.array(offset)?;
        Some(if self.big_endian {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        })
    }

    pub fn u64(&self, offset: usize) -> Option<u64> {
        let raw = self.array(offset)?;
        Some(if self.big_endian {
            u64::from_be_bytes(raw)
        } else {
            u64::from_le_bytes(raw)
        })
    }

    /// A native `long`/pointer-sized field: 4 or 8 bytes.
    pub fn word(&self, offset: usize, wide: bool) -> Option<u64> {
        if wide {
            self.u64(offset)
        } else {
            self.u32(offset).map(u64::from)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A regular file: a dump.
    Dump,
    /// A regular file on procfs (/proc/kcore): the live kernel.
    Procfs,
    /// The physical memory device.
    DevMem,
}

/// Why a read of dump memory stopped short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// Outside every segment or page range the dump holds.
    NotInDump,
    /// The dump level filtered the page out.
    Excluded,
    /// The dump ran out of space before it wrote this page.
    Incomplete,
    /// Another part of a split dump holds this page.
    OtherPart,
    /// The dump should hold it, but the file ends first.
    Truncated,
    /// The dump holds it in a form that cannot be decoded.
    Corrupt(String),
}

impl Gap {
    /// The reason a soft `invalid address` reports (None: truncated and corrupt data are
    /// hard errors of their own).
    pub fn reason(&self) -> Option<Reason> {
        Some(match self {
            Gap::NotInDump => Reason::NotInDump,
            Gap::Excluded => Reason::Excluded,
            Gap::Incomplete => Reason::Incomplete,
            Gap::OtherPart => Reason::OtherPart,
            Gap::Truncated | Gap::Corrupt(_) => return None,
        })
    }
}

/// A read that stopped: how many bytes were copied, and why.
pub type Stop = (usize, Gap);

/// Reads `buf` from physical address `paddr` a piece at a time: `step(at, rest)` copies
/// what lies at `at` into the front of `rest` and says how many bytes; its stop carries the
/// bytes that step copied. A step that copies nothing ends the read.
pub fn read_pieces(
    paddr: u64,
    buf: &mut [u8],
    mut step: impl FnMut(u64, &mut [u8]) -> Result<usize, Stop>,
) -> Result<(), Stop> {
    let mut done = 0usize;
    while done < buf.len() {
        let at = paddr
            .checked_add(done as u64)
            .ok_or((done, Gap::NotInDump))?;
        let rest = buf.get_mut(done..).unwrap_or(&mut []);
        // A step copies at most `rest.len()` bytes, so `done` stays within `buf.len()`;
        // saturating keeps a step that claims more from wrapping the count.
        match step(at, rest) {
            Ok(0) => return Err((done, Gap::NotInDump)),
            Ok(n) => done = done.saturating_add(n),
            Err((partial, gap)) => return Err((done.saturating_add(partial), gap)),
        }
    }
    Ok(())
}

/// Facts of the format beyond `Core`'s, for `info` and `scan`.
#[derive(Debug, Clone, Default)]
pub struct FormatFacts {
    /// makedumpfile's `-d` level.
    pub dump_level: Option<u32>,
    pub dumped_pages: Option<u64>,
    /// A split part's page frames `[start, end)`.
    pub pfn_range: Option<(u64, u64)>,
    /// Files the dump is made of.
    pub parts: usize,
}

/// One core format's access to the memory it holds.
pub trait CoreFormat: Send + Sync {
    /// Physical memory at `paddr` into `buf`.
    fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), Stop>;

    /// Where the format maps kernel virtual addresses itself (ELF `p_vaddr`): the bytes at
    /// `va` into `buf` (up to the end of that mapping); None where it has no mapping of `va`.
    fn read_virt(&self, _va: u64, _buf: &mut [u8]) -> Option<Result<usize, Stop>> {
        None
    }

    /// The file offset of `addr` (virtual where `read_virt` maps it, else physical) and how
    /// many of `want` bytes lie there in one piece, for `kvm_write`.
    fn write_extent(&self, addr: Address, want: usize) -> Result<(u64, usize), Gap>;

    /// Forgets cached page contents after the file was written.
    fn forget_cached(&self) {}

    fn facts(&self) -> FormatFacts;

    /// The dump's PT_LOAD segments (empty for formats that have none).
    fn segments(&self) -> &[Segment] {
        &[]
    }

    /// The dump's `NT_PRSTATUS` descriptors (`struct elf_prstatus`), one per CPU in the
    /// order the producer wrote them; empty for formats that carry none.
    fn cpu_notes(&self) -> &[Vec<u8>] {
        &[]
    }

    /// `phys_base` as the dump header records it.
    fn header_phys_base(&self) -> Option<u64> {
        None
    }

    /// Page-aligned physical addresses the dump holds, in order, for the VMCOREINFO search
    /// of dumps without a note; None where the format cannot list them cheaply.
    fn physical_ranges(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }
}

/// An address as `write_extent` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    Virtual(u64),
    Physical(u64),
}

/// Where the dump's VMCOREINFO came from (`info.vmcoreinfo_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmcoreinfoSource {
    Note,
    KdumpHeader,
    Memory,
    Given,
}

impl VmcoreinfoSource {
    pub fn name(self) -> &'static str {
        match self {
            VmcoreinfoSource::Note => "note",
            VmcoreinfoSource::KdumpHeader => "kdump-header",
            VmcoreinfoSource::Memory => "memory",
            VmcoreinfoSource::Given => "given",
        }
    }
}

/// What the core file is, as far as open needs to know (no kernel memory read).
pub struct Core {
    pub format: &'static str,
    pub compression: Option<String>,
    /// The machine's name, as the dump states it (or VMCOREINFO implies it).
    pub machine: Option<String>,
    pub vmcoreinfo: VmcoreInfo,
    pub vmcoreinfo_source: Option<VmcoreinfoSource>,
    pub page_size: Option<u64>,
    /// The release the dump's own header carries (kdump utsname), besides VMCOREINFO's.
    pub header_release: Option<String>,
    /// Some of the data lies past the end of the file.
    pub truncated: bool,
    /// The producer marked the dump incomplete (it ran out of space).
    pub incomplete: bool,
    pub live: bool,
    /// The dump's own byte order (multi-byte kernel data is read in it).
    pub big_endian: bool,
    /// `kvm_write` may patch the file (uncompressed data at file offsets of its own).
    pub writable: bool,
    pub body: Box<dyn CoreFormat>,
}

impl Core {
    /// The machine record, where the machine is one we know.
    pub fn machine_record(&self) -> Option<&'static Machine> {
        translate::machine(self.machine.as_deref()?)
    }

    pub fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), Stop> {
        self.body.read_phys(paddr, buf)
    }

    /// The CPUs' `NT_PRSTATUS` descriptors (see `CoreFormat::cpu_notes`).
    pub fn cpu_notes(&self) -> &[Vec<u8>] {
        self.body.cpu_notes()
    }

    /// Sets the machine from VMCOREINFO where the producer named none it knew.
    fn settle_machine(&mut self) {
        if self.machine_record().is_none() {
            if let Some(machine) = translate::machine_from_vmcoreinfo(&self.vmcoreinfo) {
                self.machine = Some(machine.name.to_owned());
            }
        }
    }

    /// Replaces VMCOREINFO with text from elsewhere (given, or found in memory).
    pub fn set_vmcoreinfo(&mut self, info: VmcoreInfo, source: VmcoreinfoSource) {
        if let Some(size) = info.page_size() {
            self.page_size = Some(size);
        }
        self.vmcoreinfo = info;
        self.vmcoreinfo_source = Some(source);
        self.settle_machine();
    }
}

/// Recognises and validates the core file in `medium`.
pub fn open_core(medium: Arc<dyn Medium>, origin: Origin) -> Result<Core, CoreFault> {
    let mut core = recognise(medium, origin)?;
    core.settle_machine();
    Ok(core)
}

/// The first bytes of a file, where formats put their signatures.
pub fn signature(medium: &dyn Medium) -> Result<Vec<u8>, CoreFault> {
    let head = medium
        .bytes_at(0, 16)
        .map_err(|_| CoreFault::NotCore)?
        .into_owned();
    if head.is_empty() {
        return Err(CoreFault::Empty);
    }
    Ok(head)
}

fn recognise(medium: Arc<dyn Medium>, origin: Origin) -> Result<Core, CoreFault> {
    if origin == Origin::DevMem {
        return Ok(devmem::open(medium));
    }
    if origin == Origin::Dump && medium.size() == 0 {
        return Err(CoreFault::Empty);
    }
    let head = signature(medium.as_ref())?;
    if head.starts_with(ELF_MAGIC) {
        return elf_core::open(medium, origin == Origin::Procfs, "elf");
    }
    if kdump::has_signature(&head) {
        return Ok(kdump::open(medium)?.into_core("kdump"));
    }
    if flattened::has_signature(&head) {
        let inner: Arc<dyn Medium> = Arc::new(flattened::Flattened::index(medium)?);
        let inner_head = signature(inner.as_ref())?;
        if kdump::has_signature(&inner_head) {
            return Ok(kdump::open(inner)?.into_core("flattened"));
        }
        if inner_head.starts_with(ELF_MAGIC) {
            return elf_core::open(inner, false, "flattened");
        }
        return Err(CoreFault::Invalid(
            "flattened stream holds no kdump or ELF dump".into(),
        ));
    }
    Err(CoreFault::NotCore)
}

/// The parts of one split dump, each recognised and validated alone, then as a set.
pub fn open_split(parts: Vec<(Vec<u8>, Arc<dyn Medium>)>) -> Result<Core, crate::errors::Error> {
    let mut core = split::open(parts)?;
    core.settle_machine();
    Ok(core)
}

/// The base page size of the machines this library reads live (most have no other).
pub fn host_page_size() -> u64 {
    4096
}
