//! Backtraces with no debug info: a CPU's registers from its `NT_PRSTATUS` note, then the
//! machine's own unwinding data in the dump (x86_64 ORC tables, aarch64 frame records).
//!
//! One unwinder per machine behind `Unwind` (the `Machine` record names it, as it names the
//! translator): it knows its `elf_prstatus` register layout and how to step from one frame to
//! the next. It reads kernel memory and symbols through `Env` and returns raw frames (pc,
//! the address to name the frame by, reliable or not); the session names them. Every walk is
//! bounded: `MAX_FRAMES`, a stack pointer that must move up its stack, at most
//! `MAX_STACK_SWITCHES` moves to another stack.

#![deny(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]

pub mod aarch64;
pub mod orc;
pub mod x86_64;

use crate::btf::Btf;
use crate::formats::vmcoreinfo::VmcoreInfo;
use crate::formats::Fields;
use crate::kernel::ReadFn;

/// The most frames a backtrace holds (a kernel stack of 16 KiB holds fewer real frames).
pub const MAX_FRAMES: usize = 128;
/// How often a walk may move to another stack (exception → IRQ → task stacks).
pub const MAX_STACK_SWITCHES: usize = 8;
/// `offsetof(struct elf_prstatus, pr_reg)` on 64-bit machines: `elf_siginfo` (12 bytes),
/// `pr_cursig` (2, padded to 4), `pr_sigpend` and `pr_sighold` (8 each), four pids (16),
/// four `timeval`s (64).
pub const PR_REG_64: usize = 112;

/// What an unwinder may ask of the dump.
pub struct Env<'a> {
    /// Kernel virtual memory.
    pub read: ReadFn<'a>,
    /// The runtime address of a symbol.
    pub symbol: &'a dyn Fn(&str) -> Option<u64>,
    /// The runtime address of the text symbol at or below an address.
    pub function_start: &'a dyn Fn(u64) -> Option<u64>,
    pub vmcoreinfo: &'a VmcoreInfo,
    pub big_endian: bool,
    /// The loaded module whose core text holds an address (its text and unwinding
    /// tables); None for the kernel image, an unknown address, or no module list.
    pub module: &'a dyn Fn(u64) -> Option<ModuleText>,
}

/// A loaded module's core text and, on x86_64, its ORC tables (`mod->arch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleText {
    pub name: String,
    pub base: u64,
    pub size: u64,
    /// `orc_unwind_ip`, `orc_unwind`, `num_orcs`.
    pub orc: Option<(u64, u64, u64)>,
}

impl ModuleText {
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr.wrapping_sub(self.base) < self.size
    }
}

impl Env<'_> {
    /// Exactly `len` bytes at `addr`, or None.
    pub fn bytes(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        (self.read)(addr, len).ok().filter(|b| b.len() == len)
    }

    pub fn u64(&self, addr: u64) -> Option<u64> {
        Fields::new(&self.bytes(addr, 8)?, self.big_endian).u64(0)
    }

    pub fn u32(&self, addr: u64) -> Option<u32> {
        Fields::new(&self.bytes(addr, 4)?, self.big_endian).u32(0)
    }

    /// `count` 64-bit words at `addr`.
    pub fn words(&self, addr: u64, count: usize) -> Option<Vec<u64>> {
        words(
            &self.bytes(addr, count.checked_mul(8)?)?,
            0,
            count,
            self.big_endian,
        )
    }

    /// The kernel's release as (major, minor), from VMCOREINFO.
    pub fn release(&self) -> Option<(u32, u32)> {
        let release = self.vmcoreinfo.osrelease()?;
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    }
}

/// One frame as the unwinder found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame {
    pub pc: u64,
    /// The address the frame's function is looked up by: the pc of an interrupted frame (the
    /// crash registers, an exception), else the pc - 1 of a return address (a call may be
    /// the function's last instruction).
    pub lookup: u64,
    /// Found by the machine's unwinding data; false for a guess (a stack scan, a return
    /// address taken from a register, a frame whose chain broke after it).
    pub reliable: bool,
}

impl RawFrame {
    pub fn interrupted(pc: u64) -> RawFrame {
        RawFrame {
            pc,
            lookup: pc,
            reliable: true,
        }
    }

    pub fn returned(pc: u64, reliable: bool) -> RawFrame {
        RawFrame {
            pc,
            lookup: pc.saturating_sub(1),
            reliable,
        }
    }
}

/// Where a task that is not running keeps the context the scheduler saved, from BTF: the
/// machine says which members it reads (x86_64: `thread.sp`, then `struct
/// inactive_task_frame`'s `bp` and `ret_addr` at that sp; aarch64: `thread.cpu_context`'s
/// `fp`, `sp` and `pc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedLayout {
    /// `task_struct.stack`: the base of the task's stack.
    pub stack: u64,
    /// Offsets in `task_struct` of the saved words, in the machine's order.
    pub task: Vec<u64>,
    /// Offsets in the frame the saved stack pointer points at, then its size (x86_64).
    pub frame: Vec<u64>,
}

/// A machine's unwinder.
pub trait Unwind: Sync {
    /// The registers of one `NT_PRSTATUS` descriptor, in the machine's `user_regs_struct`
    /// order; None where the descriptor is too short.
    fn registers(&self, prstatus: &[u8], big_endian: bool) -> Option<Vec<u64>>;

    /// The frames from `registers`, innermost first (none for a CPU in user mode).
    fn unwind(&self, env: &Env<'_>, registers: &[u64]) -> Vec<RawFrame>;

    /// Where a blocked task's saved context lies, or the first thing BTF lacks.
    fn saved_layout(&self, btf: &Btf) -> Result<SavedLayout, String>;

    /// The frames of a task that is not running (its `task_struct` at `task`), from the
    /// context the scheduler saved, innermost first; or why they cannot be had (the saved
    /// stack pointer is not on the task's stack, its page is not in the dump).
    fn blocked(
        &self,
        env: &Env<'_>,
        layout: &SavedLayout,
        task: u64,
    ) -> Result<Vec<RawFrame>, String>;
}

/// The byte offset of a dotted member path of struct `name`, or what BTF lacks.
pub fn btf_offset(btf: &Btf, name: &str, path: &str) -> Result<u64, String> {
    let id = btf
        .find_struct(name)
        .ok_or_else(|| format!("struct {name}"))?;
    btf.offset_of(id, path)
        .map(|(offset, _)| offset)
        .ok_or_else(|| format!("{name}.{path}"))
}

/// The word at `addr`, or a message naming `what` could not be read.
pub fn saved_word(env: &Env<'_>, addr: u64, what: &str) -> Result<u64, String> {
    env.u64(addr)
        .ok_or_else(|| format!("{what} at {addr:#x} is not in the dump"))
}

/// Checks that a saved stack pointer lies on the task's stack (`size` bytes from `base`),
/// with `room` bytes above it.
pub fn on_stack(sp: u64, base: u64, size: u64, room: u64) -> Result<(), String> {
    let top = base.saturating_add(size);
    let fits = sp >= base && sp.checked_add(room).is_some_and(|end| end <= top);
    if fits {
        Ok(())
    } else {
        Err(format!(
            "the saved stack pointer {sp:#x} is not on the task's stack ({base:#x}-{top:#x})"
        ))
    }
}

/// `count` 64-bit words at byte `offset` of `raw`.
pub fn words(raw: &[u8], offset: usize, count: usize, big_endian: bool) -> Option<Vec<u64>> {
    let fields = Fields::new(raw, big_endian);
    (0..count)
        .map(|i| fields.u64(i.checked_mul(8)?.checked_add(offset)?))
        .collect()
}

/// Keeps a walk moving: on one stack (an aligned block of `size` bytes) the stack pointer
/// must grow; moving to another stack is allowed `MAX_STACK_SWITCHES` times.
pub struct StackGuard {
    size: u64,
    switches: usize,
}

impl StackGuard {
    pub fn new(size: u64) -> StackGuard {
        StackGuard {
            size: size.max(1),
            switches: 0,
        }
    }

    /// May the walk go from stack address `from` to `to`?
    pub fn advance(&mut self, from: u64, to: u64) -> bool {
        let stack = |addr: u64| addr.checked_div(self.size);
        if stack(from) == stack(to) {
            return to > from;
        }
        self.switches = self.switches.saturating_add(1);
        self.switches <= MAX_STACK_SWITCHES
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
pub(crate) mod testing {
    //! Fake kernel memory for the unwinders' tests.
    use super::*;
    use crate::errors::{Error, Reason};
    use std::collections::BTreeMap;

    pub struct Fake {
        pub words: BTreeMap<u64, u8>,
        pub symbols: Vec<(&'static str, u64)>,
        pub vmcoreinfo: VmcoreInfo,
        pub modules: Vec<ModuleText>,
    }

    impl Fake {
        pub fn new(vmcoreinfo: &str) -> Fake {
            Fake {
                words: BTreeMap::new(),
                symbols: Vec::new(),
                vmcoreinfo: VmcoreInfo::parse(vmcoreinfo.as_bytes()),
                modules: Vec::new(),
            }
        }

        pub fn put(&mut self, addr: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                self.words.insert(addr + i as u64, *b);
            }
        }

        pub fn put_u64(&mut self, addr: u64, value: u64) {
            self.put(addr, &value.to_le_bytes());
        }

        pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, Error> {
            (0..len as u64)
                .map(|i| {
                    self.words
                        .get(&(addr + i))
                        .copied()
                        .ok_or(Error::InvalidAddress {
                            addr: addr + i,
                            reason: Reason::NotInDump,
                        })
                })
                .collect()
        }

        /// Runs `work` over this memory, its symbols and modules.
        fn with_env<T>(&self, work: impl FnOnce(&Env<'_>) -> T) -> T {
            let read = |addr: u64, len: usize| self.read(addr, len);
            let symbol = |name: &str| {
                self.symbols
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
            };
            let function_start = |addr: u64| {
                self.symbols
                    .iter()
                    .filter(|(n, v)| !n.starts_with("__") && *v <= addr)
                    .map(|(_, v)| *v)
                    .max()
            };
            let module = |addr: u64| self.modules.iter().find(|m| m.contains(addr)).cloned();
            work(&Env {
                read: &read,
                symbol: &symbol,
                function_start: &function_start,
                vmcoreinfo: &self.vmcoreinfo,
                big_endian: false,
                module: &module,
            })
        }

        pub fn run(&self, unwinder: &dyn Unwind, registers: &[u64]) -> Vec<RawFrame> {
            self.with_env(|env| unwinder.unwind(env, registers))
        }

        pub fn run_blocked(
            &self,
            unwinder: &dyn Unwind,
            layout: &SavedLayout,
            task: u64,
        ) -> Result<Vec<RawFrame>, String> {
            self.with_env(|env| unwinder.blocked(env, layout, task))
        }
    }

    /// Each frame as (pc, lookup, reliable).
    pub fn found(frames: &[RawFrame]) -> Vec<(u64, u64, bool)> {
        frames
            .iter()
            .map(|f| (f.pc, f.lookup, f.reliable))
            .collect()
    }
}
