//! Kernel memory through the handle: a virtual address becomes bytes by the format's own
//! virtual segments where it has them, else by the machine's translator and a physical
//! read; `kvm_write` plans every file extent before it writes any.

use std::os::unix::fs::FileExt;

use super::Session;
use crate::cancel::{Cancel, NEVER};
use crate::errors::{CoreFault, Error, Reason, Result};
use crate::formats::{Address, Core, Gap, Stop};
use crate::parallel;
use crate::translate::Fault;

/// `read` fills its result this much at a time.
const READ_BLOCK: usize = 1 << 20;
/// Reads and writes go page by page of the smallest page any machine uses.
const CHUNK: u64 = 4096;

/// Where the bytes of a kernel virtual address are.
enum Place {
    /// The format maps the virtual address itself (an ELF PT_LOAD's p_vaddr).
    Virtual(u64),
    Physical(u64),
}

impl Session {
    /// The error for a read that stopped at `addr` for `gap`.
    fn gap_error(&self, gap: Gap, addr: u64) -> Error {
        match gap {
            Gap::Truncated => Error::ShortRead { addr },
            Gap::Corrupt(what) => Error::core(&self.core_path, CoreFault::Invalid(what)),
            other => Error::InvalidAddress {
                addr,
                reason: other.reason().unwrap_or(Reason::NotInDump),
            },
        }
    }

    /// Where `va`'s bytes are, for `kvm_write`.
    fn resolve(&self, core: &Core, va: u64) -> Result<Place> {
        if core.body.read_virt(va, &mut []).is_some() {
            return Ok(Place::Virtual(va));
        }
        self.translate(core, va).map(Place::Physical)
    }

    /// The physical address of `va` through the machine's translator.
    fn translate(&self, core: &Core, va: u64) -> Result<u64> {
        let Some(translator) = &self.translator else {
            return match core.machine_record() {
                Some(machine) if machine.can_translate() => Err(Error::InvalidAddress {
                    addr: va,
                    reason: Reason::NotMapped,
                }),
                _ => Err(Error::NoTranslation {
                    path: self.core_path.clone(),
                    machine: core.machine.clone().unwrap_or_else(|| "unknown".into()),
                }),
            };
        };
        let read_entry = |pa: u64| -> std::result::Result<u64, Gap> {
            let mut raw = [0u8; 8];
            core.read_phys(pa, &mut raw).map_err(|(_, gap)| gap)?;
            Ok(if core.big_endian {
                u64::from_be_bytes(raw)
            } else {
                u64::from_le_bytes(raw)
            })
        };
        match translator.translate(va, &read_entry) {
            Ok(pa) => Ok(pa),
            Err(Fault::NotMapped) => Err(Error::InvalidAddress {
                addr: va,
                reason: Reason::NotMapped,
            }),
            Err(Fault::Table(gap @ (Gap::Truncated | Gap::Corrupt(_)))) => {
                Err(self.gap_error(gap, va))
            }
            Err(Fault::Table(_)) => Err(Error::InvalidAddress {
                addr: va,
                reason: Reason::PageTableMissing,
            }),
        }
    }

    pub(super) fn readable_core(&self, op: &'static str) -> Result<&Core> {
        let core = self.core.as_ref().ok_or(Error::NoCoreFile { op })?;
        if op == "kvm_read" && self.access == libc::O_WRONLY {
            return Err(Error::BadDescriptor { op });
        }
        Ok(core)
    }

    /// `kvm_read`: up to `len` bytes of kernel virtual memory at `addr`. Returns the bytes
    /// copied and, when it stopped early, why (libkvm counts an invalid address after some
    /// bytes as a failure of the whole read; a truncated dump as a short read).
    pub fn read(&self, addr: u64, len: usize) -> (Vec<u8>, Option<Error>) {
        self.read_with(addr, len, &NEVER)
    }

    /// `read`, stopping with `Error::Interrupted` once `cancel` is set (checked a block at
    /// a time).
    pub fn read_with(&self, addr: u64, len: usize, cancel: &Cancel) -> (Vec<u8>, Option<Error>) {
        self.read_grown(addr, len, cancel, |at, buf| self.read_span(at, buf))
    }

    /// Physical memory, as `read` reads virtual memory.
    pub fn read_physical(&self, addr: u64, len: usize) -> (Vec<u8>, Option<Error>) {
        self.read_physical_with(addr, len, &NEVER)
    }

    pub fn read_physical_with(
        &self,
        addr: u64,
        len: usize,
        cancel: &Cancel,
    ) -> (Vec<u8>, Option<Error>) {
        self.read_grown(addr, len, cancel, |at, buf| {
            self.read_physical_into(at, buf)
        })
    }

    /// `read_into`, a block at a time, stopping once `cancel` is set.
    pub fn read_into_with(
        &self,
        addr: u64,
        buf: &mut [u8],
        cancel: &Cancel,
    ) -> (usize, Option<Error>) {
        let mut done = 0usize;
        for block in buf.chunks_mut(READ_BLOCK) {
            if let Err(e) = cancel.check() {
                return (done, Some(e));
            }
            let Some(at) = addr.checked_add(done as u64) else {
                return (done, Some(self.past_the_top(addr, done)));
            };
            let (copied, error) = self.read_parts(at, block, &|at, buf| self.read_span(at, buf));
            done += copied;
            if error.is_some() {
                return (done, error);
            }
        }
        (done, None)
    }

    /// Grown a block at a time: an absurd length fails at its first bad page, not at malloc.
    fn read_grown(
        &self,
        addr: u64,
        len: usize,
        cancel: &Cancel,
        read_into: impl Fn(u64, &mut [u8]) -> (usize, Option<Error>) + Sync,
    ) -> (Vec<u8>, Option<Error>) {
        let mut out: Vec<u8> = Vec::new();
        while out.len() < len {
            if let Err(e) = cancel.check() {
                return (out, Some(e));
            }
            let start = out.len();
            let Some(at) = addr.checked_add(start as u64) else {
                let error = self.past_the_top(addr, start);
                return (out, Some(error));
            };
            let block = (len - start).min(READ_BLOCK);
            out.resize(start + block, 0);
            let (copied, error) =
                self.read_parts(at, out.get_mut(start..).unwrap_or(&mut []), &read_into);
            out.truncate(start + copied);
            if error.is_some() {
                return (out, error);
            }
        }
        (out, None)
    }

    /// One block through `read_into`, its parts read side by side where cores are idle.
    fn read_parts(
        &self,
        addr: u64,
        block: &mut [u8],
        read_into: &(impl Fn(u64, &mut [u8]) -> (usize, Option<Error>) + Sync),
    ) -> (usize, Option<Error>) {
        parallel::fill(block, |offset, part| {
            match addr.checked_add(offset as u64) {
                Some(at) => read_into(at, part),
                None => (0, Some(self.past_the_top(addr, offset))),
            }
        })
    }

    /// `kvm_read` into `buf`: the bytes copied, and why it stopped early if it did.
    pub fn read_into(&self, addr: u64, buf: &mut [u8]) -> (usize, Option<Error>) {
        self.read_parts(addr, buf, &|at, buf| self.read_span(at, buf))
    }

    /// `read_into` on this thread alone.
    fn read_span(&self, addr: u64, buf: &mut [u8]) -> (usize, Option<Error>) {
        let core = match self.readable_core("kvm_read") {
            Ok(core) => core,
            Err(e) => return (0, Some(e)),
        };
        let mut done = 0usize;
        while done < buf.len() {
            let Some(va) = addr.checked_add(done as u64) else {
                return (done, Some(self.past_the_top(addr, done)));
            };
            let chunk = ((CHUNK - va % CHUNK) as usize).min(buf.len() - done);
            let dst = buf.get_mut(done..done + chunk).unwrap_or(&mut []);
            // The format's own virtual mapping first (one lookup), else a translation.
            let copied: std::result::Result<usize, Stop> = match core.body.read_virt(va, dst) {
                Some(result) => result,
                None => match self.translate(core, va) {
                    Ok(pa) => core.read_phys(pa, dst).map(|()| dst.len()),
                    Err(e) => return (done, Some(e)),
                },
            };
            match copied {
                Ok(0) => return (done, Some(self.gap_error(Gap::NotInDump, va))),
                Ok(n) => done += n,
                Err((partial, gap)) => {
                    let failed_at = va.wrapping_add(partial as u64);
                    return (done + partial, Some(self.gap_error(gap, failed_at)));
                }
            }
        }
        (done, None)
    }

    fn read_physical_into(&self, addr: u64, buf: &mut [u8]) -> (usize, Option<Error>) {
        let core = match self.readable_core("kvm_read") {
            Ok(core) => core,
            Err(e) => return (0, Some(e)),
        };
        if addr.checked_add(buf.len() as u64).is_none() {
            let room = (u64::MAX - addr) as usize;
            let (done, error) =
                self.read_physical_into(addr, buf.get_mut(..room).unwrap_or(&mut []));
            return (
                done,
                Some(error.unwrap_or_else(|| self.past_the_top(addr, done))),
            );
        }
        match core.read_phys(addr, buf) {
            Ok(()) => (buf.len(), None),
            Err((done, gap)) => (
                done,
                Some(self.gap_error(gap, addr.wrapping_add(done as u64))),
            ),
        }
    }

    fn past_the_top(&self, addr: u64, done: usize) -> Error {
        Error::InvalidAddress {
            addr: addr.wrapping_add(done as u64),
            reason: Reason::NotMapped,
        }
    }

    /// `kvm_write`: patches the core file where it holds `addr` uncompressed.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<usize> {
        let core = self.readable_core("kvm_write")?;
        if self.access == libc::O_RDONLY {
            return Err(Error::BadDescriptor { op: "kvm_write" });
        }
        if !core.writable {
            return Err(Error::WriteCompressed);
        }
        let Some(file) = self.core_file.as_ref() else {
            return Err(Error::BadDescriptor { op: "kvm_write" });
        };
        // Locate every page first, so a bad address writes nothing.
        let mut targets = Vec::new();
        let mut done = 0usize;
        while done < data.len() {
            let va = addr
                .checked_add(done as u64)
                .ok_or_else(|| self.past_the_top(addr, done))?;
            let chunk = ((CHUNK - va % CHUNK) as usize).min(data.len() - done);
            let at = match self.resolve(core, va)? {
                Place::Virtual(va) => Address::Virtual(va),
                Place::Physical(pa) => Address::Physical(pa),
            };
            let (offset, n) = core.body.write_extent(at, chunk).map_err(|gap| match gap {
                Gap::Truncated => Error::ShortWrite { addr: va },
                other => self.gap_error(other, va),
            })?;
            targets.push((offset, done, n));
            done += n;
        }
        for (offset, from, n) in targets {
            let bytes = data.get(from..from + n).unwrap_or(&[]);
            file.write_all_at(bytes, offset)
                .map_err(|e| Error::os(&self.core_path, &e))?;
        }
        core.body.forget_cached();
        if let Some(translator) = &self.translator {
            // A write may change a page table.
            translator.forget_cached();
        }
        Ok(data.len())
    }
}
