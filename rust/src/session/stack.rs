//! Backtraces (SPEC §14 `Kvm.stack`): the crashing CPU's registers from the dump's
//! `NT_PRSTATUS` notes, unwound by the machine's unwinder, each frame named by the nearest
//! text symbol of the exec file (or the dump's kallsyms).
//!
//! Which CPU crashed: the kernel's `panic_cpu` (set by `panic()` on every kernel since 4.5,
//! on both machines, whatever wrote the dump), read through the symbols; a dump with one CPU
//! note needs no symbol. The notes are taken in CPU order (QEMU writes one per vCPU; the
//! kernel's crash notes are per CPU too, but leave out CPUs that were offline: a kexec dump
//! of a machine with offline CPUs below the crashing one would pick the wrong note).

use super::Session;
use crate::errors::{Error, Result};
use crate::kernel::ReadFn;
use crate::symbols::ExecFile;
use crate::unwind::Env;

/// One frame of a backtrace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub pc: u64,
    /// The function (nearest text symbol at or below the frame's lookup address).
    pub symbol: Option<String>,
    /// `pc` minus the function's address.
    pub offset: Option<u64>,
    pub reliable: bool,
}

/// `panic_cpu` before any panic (`PANIC_CPU_INVALID`).
const NO_PANIC: i32 = -1;

impl Session {
    fn no_backtrace(&self, why: String) -> Error {
        Error::NoBacktrace {
            path: self.core_path.clone(),
            why,
        }
    }

    /// The runtime address of `name` in the handle's symbols.
    fn symbol_value(&self, name: &str) -> Option<u64> {
        self.nlist(&[name.as_bytes().to_vec()])
            .ok()?
            .into_iter()
            .next()
            .flatten()
            .map(|(_, value)| value)
    }

    /// The nearest text symbol at or below runtime address `addr`: its name and runtime
    /// value.
    fn nearest_text(&self, exec: &ExecFile, addr: u64) -> Option<(String, u64)> {
        let link_time = exec.format.is_link_time();
        let offset = match &self.identity {
            Some(identity) if link_time => identity.kernel_offset,
            _ => 0,
        };
        let found = exec
            .by_address()
            .nearest(exec.data(), addr.wrapping_sub(offset))?;
        let value = match &self.identity {
            Some(identity) => identity.relocate(found.value, link_time),
            None => found.value,
        };
        Some((String::from_utf8_lossy(found.name).into_owned(), value))
    }

    /// The index of the crashing CPU's note among `count`.
    fn crashed_cpu(&self, count: usize) -> Result<usize> {
        let panic_cpu = self.symbol_value("panic_cpu").and_then(|addr| {
            let (raw, error) = self.read(addr, 4);
            let raw: [u8; 4] = raw.try_into().ok().filter(|_| error.is_none())?;
            let big = self.core.as_ref().is_some_and(|c| c.big_endian);
            Some(if big {
                i32::from_be_bytes(raw)
            } else {
                i32::from_le_bytes(raw)
            })
        });
        if let Some(cpu) = panic_cpu.and_then(|c| usize::try_from(c).ok()) {
            if cpu < count {
                return Ok(cpu);
            }
        }
        if count == 1 {
            return Ok(0);
        }
        Err(self.no_backtrace(match panic_cpu {
            Some(NO_PANIC) => format!("no CPU panicked (panic_cpu is -1) among {count} CPUs"),
            Some(cpu) => format!("panic_cpu is {cpu}, but the dump has {count} CPU notes"),
            None => format!("cannot read panic_cpu to tell which of {count} CPUs crashed"),
        }))
    }

    /// The backtrace of the task that crashed: the CPU that panicked, from its registers.
    pub fn crashed_stack(&self) -> Result<Vec<Frame>> {
        let core = self.readable_core("kvm_stack")?;
        if self.access == libc::O_WRONLY {
            return Err(Error::BadDescriptor { op: "kvm_stack" });
        }
        let machine = core.machine.clone().unwrap_or_else(|| "unknown".into());
        let Some(unwinder) = core.machine_record().and_then(|m| m.unwinder) else {
            return Err(self.no_backtrace(format!("no unwinder for {machine}")));
        };
        let exec = self.exec_file()?;
        let notes = core.cpu_notes();
        if notes.is_empty() {
            return Err(self.no_backtrace("the dump has no NT_PRSTATUS notes".into()));
        }
        let cpu = self.crashed_cpu(notes.len())?;
        let registers = notes
            .get(cpu)
            .and_then(|note| unwinder.registers(note, core.big_endian))
            .ok_or_else(|| self.no_backtrace(format!("NT_PRSTATUS of CPU {cpu} is too short")))?;
        let read_fn = |addr: u64, len: usize| self.read_for_decoder(addr, len);
        let read: ReadFn<'_> = &read_fn;
        let symbol = |name: &str| self.symbol_value(name);
        let function_start = |addr: u64| self.nearest_text(exec, addr).map(|(_, v)| v);
        let env = Env {
            read,
            symbol: &symbol,
            function_start: &function_start,
            vmcoreinfo: &core.vmcoreinfo,
            big_endian: core.big_endian,
        };
        let frames = unwinder.unwind(&env, &registers);
        Ok(frames
            .into_iter()
            .map(|raw| {
                let named = self.nearest_text(exec, raw.lookup);
                Frame {
                    pc: raw.pc,
                    offset: named.as_ref().map(|(_, v)| raw.pc.wrapping_sub(*v)),
                    symbol: named.map(|(name, _)| name),
                    reliable: raw.reliable,
                }
            })
            .collect())
    }
}
