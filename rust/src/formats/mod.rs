//! Core file formats: recognition by content, header validation, and the facts `info` shows.

pub mod elf_core;
pub mod flattened;
pub mod kdump;
pub mod segments;
pub mod vmcoreinfo;

use std::sync::Arc;

use crate::errors::CoreFault;
use crate::mapping::Medium;
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

/// The Linux machine name (`uname -m`) of an ELF e_machine.
pub fn machine_name(e_machine: u16) -> Option<&'static str> {
    Some(match e_machine {
        3 => "i386",
        8 => "mips",
        20 => "ppc",
        21 => "ppc64",
        22 => "s390x",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv64",
        258 => "loongarch64",
        _ => return None,
    })
}

/// The address width of a machine name.
pub fn machine_is_64bit(name: &str) -> Option<bool> {
    match name {
        "x86_64" | "aarch64" | "ppc64" | "ppc64le" | "s390x" | "riscv64" | "loongarch64"
        | "mips64" => Some(true),
        "i386" | "i486" | "i586" | "i686" | "arm" | "ppc" | "mips" | "s390" | "riscv32" => {
            Some(false)
        }
        _ => None,
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

/// What the core file is, as far as open needs to know (no kernel memory read).
pub struct Core {
    pub format: &'static str,
    pub compression: Option<String>,
    pub machine: Option<String>,
    pub vmcoreinfo: VmcoreInfo,
    pub page_size: Option<u64>,
    /// The release the dump's own header carries (kdump utsname), besides VMCOREINFO's.
    pub header_release: Option<String>,
    pub truncated: bool,
    pub live: bool,
    pub layout: Layout,
    pub medium: Arc<dyn Medium>,
}

pub enum Layout {
    Elf(elf_core::ElfCore),
    Kdump(Box<kdump::KdumpCore>),
    DevMem,
}

/// Why a read of dump memory stopped short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// The dump does not hold this memory (excluded page, hole between segments).
    Missing,
    /// The dump should hold it, but the file ends first.
    Truncated,
    /// The dump holds it in a form that cannot be decoded.
    Corrupt(String),
}

/// Copies `buf.len()` bytes at `addr` from segment piece `piece`; past p_filesz the memory
/// reads as zeros, past the end of the file it is missing.
/// Err carries the bytes copied before the gap.
pub fn copy_from_piece(
    medium: &dyn Medium,
    piece: &segments::Piece,
    addr: u64,
    buf: &mut [u8],
) -> Result<usize, (usize, Gap)> {
    let within = addr - piece.start;
    let take = (piece.end - addr).min(buf.len() as u64) as usize;
    let (head, _) = buf.split_at_mut(take);
    let in_file = piece.file_len.saturating_sub(within).min(take as u64) as usize;
    let (file_part, zero_part) = head.split_at_mut(in_file);
    if in_file > 0 {
        let bytes = medium
            .bytes_at(piece.offset + within, in_file)
            .map_err(|_| (0, Gap::Truncated))?;
        let got = bytes.len();
        file_part
            .get_mut(..got)
            .unwrap_or(&mut [])
            .copy_from_slice(&bytes);
        if got < in_file {
            return Err((got, Gap::Truncated));
        }
    }
    zero_part.fill(0);
    Ok(take)
}

impl Core {
    /// Reads physical memory at `paddr` into `buf`; Err carries how many bytes were copied.
    pub fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), (usize, Gap)> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = paddr.checked_add(done as u64).ok_or((done, Gap::Missing))?;
            let rest = buf.get_mut(done..).unwrap_or(&mut []);
            let copied = match &self.layout {
                Layout::Elf(elf) => {
                    let piece = elf.by_paddr().find(at).ok_or((done, Gap::Missing))?;
                    copy_from_piece(self.medium.as_ref(), piece, at, rest)
                        .map_err(|(partial, gap)| (done + partial, gap))?
                }
                Layout::Kdump(dump) => {
                    let page_size = dump.block_size;
                    let page = dump
                        .page(self.medium.as_ref(), at / page_size)
                        .map_err(|gap| (done, gap))?;
                    let src = page.get((at % page_size) as usize..).unwrap_or(&[]);
                    let n = src.len().min(rest.len());
                    rest.get_mut(..n)
                        .unwrap_or(&mut [])
                        .copy_from_slice(src.get(..n).unwrap_or(&[]));
                    n
                }
                Layout::DevMem => match self.medium.bytes_at(at, rest.len()) {
                    Ok(bytes) if !bytes.is_empty() => {
                        rest.get_mut(..bytes.len())
                            .unwrap_or(&mut [])
                            .copy_from_slice(&bytes);
                        bytes.len()
                    }
                    _ => return Err((done, Gap::Missing)),
                },
            };
            done += copied;
        }
        Ok(())
    }
}

/// Recognises and validates the core file in `medium`.
pub fn open_core(medium: Arc<dyn Medium>, origin: Origin) -> Result<Core, CoreFault> {
    if origin == Origin::DevMem {
        return Ok(Core {
            format: "devmem",
            compression: None,
            machine: Some(std::env::consts::ARCH.to_owned()),
            vmcoreinfo: VmcoreInfo::default(),
            page_size: Some(host_page_size()),
            header_release: None,
            truncated: false,
            live: true,
            layout: Layout::DevMem,
            medium,
        });
    }
    if origin == Origin::Dump && medium.size() == 0 {
        return Err(CoreFault::Empty);
    }
    let head = medium
        .bytes_at(0, 16)
        .map_err(|_| CoreFault::NotCore)?
        .into_owned();
    if head.is_empty() {
        return Err(CoreFault::Empty);
    }
    if head.starts_with(ELF_MAGIC) {
        let elf = elf_core::parse(medium.as_ref())?;
        return Ok(elf.into_core(medium, origin == Origin::Procfs));
    }
    if kdump::has_signature(&head) {
        let dump = kdump::parse(medium.as_ref())?;
        return Ok(dump.into_core(medium, "kdump"));
    }
    if flattened::has_signature(&head) {
        let inner: Arc<dyn Medium> = Arc::new(flattened::Flattened::index(medium)?);
        let inner_head = inner
            .bytes_at(0, 16)
            .map_err(|_| CoreFault::NotCore)?
            .into_owned();
        if kdump::has_signature(&inner_head) {
            let dump = kdump::parse(inner.as_ref())?;
            return Ok(dump.into_core(inner, "flattened"));
        }
        if inner_head.starts_with(ELF_MAGIC) {
            let elf = elf_core::parse(inner.as_ref())?;
            let mut core = elf.into_core(inner, false);
            core.format = "flattened";
            return Ok(core);
        }
        return Err(CoreFault::Invalid(
            "flattened stream holds no kdump or ELF dump".into(),
        ));
    }
    Err(CoreFault::NotCore)
}

/// The base page size of the machines this library reads live (x86_64 and most others).
pub fn host_page_size() -> u64 {
    4096
}
