//! Backtraces (SPEC §14 `Kvm.stack`): the crashing CPU's registers from the dump's
//! `NT_PRSTATUS` notes, unwound by the machine's unwinder, each frame named by the nearest
//! text symbol of the exec file (or the dump's kallsyms), or of a module's own symbols.
//!
//! Any task: one running on a CPU at the crash (the CPU's runqueue `curr` is the task)
//! from that CPU's note; any other from the context the scheduler saved (the machine's
//! `Unwind::blocked`). Pid 0 is an idle task: CPU `cpu`'s (`rq->idle`; 0 by default).
//!
//! Which CPU crashed: the kernel's `panic_cpu` (set by `panic()` on every kernel since 4.5,
//! on both machines, whatever wrote the dump), read through the symbols; a dump with one CPU
//! note needs no symbol. The notes are taken in CPU order (QEMU writes one per vCPU; the
//! kernel's crash notes are per CPU too, but leave out CPUs that were offline: a kexec dump
//! of a machine with offline CPUs below the crashing one would pick the wrong note).

use std::sync::OnceLock;

use super::Session;
use crate::cancel::{Cancel, NEVER};
use crate::errors::{Error, Result};
use crate::kernel::module_symbols::{self, ModuleSymbols};
use crate::kernel::{ReadFn, Words};
use crate::symbols::ExecFile;
use crate::translate::unwind::{Env, RawFrame, SavedLayout, Unwind};

/// One frame of a backtrace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub pc: u64,
    /// The function (nearest text symbol at or below the frame's lookup address).
    pub symbol: Option<String>,
    /// `pc` minus the function's address.
    pub offset: Option<u64>,
    /// The module whose text holds the pc (None: the kernel image).
    pub module: Option<String>,
    pub reliable: bool,
}

/// What backtraces read once per handle.
#[derive(Default)]
pub(super) struct StackCache {
    saved: OnceLock<Result<SavedLayout>>,
    /// `struct rq`: the offsets of `curr` and `idle`.
    rq: OnceLock<Option<(u64, u64)>>,
    /// `_stext`..`_etext` and `_sinittext`..`_einittext`.
    text: OnceLock<Vec<(u64, u64)>>,
    /// The walked modules with their own symbols and ORC (`module_symbols::read`).
    modules: OnceLock<Vec<ModuleSymbols>>,
}

/// Which task's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The task that crashed (the CPU that panicked).
    Crashed,
    /// The task with this pid (not 0).
    Pid(i64),
    /// The idle task (pid 0) of a CPU.
    Idle(u64),
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

    /// The machine's unwinder, or why there is none.
    fn unwinder(&self) -> Result<&'static dyn Unwind> {
        let core = self.readable_core("kvm_stack")?;
        if self.access == libc::O_WRONLY {
            return Err(Error::BadDescriptor { op: "kvm_stack" });
        }
        let machine = core.machine.clone().unwrap_or_else(|| "unknown".into());
        core.machine_record()
            .and_then(|m| m.unwinder)
            .ok_or_else(|| self.no_backtrace(format!("no unwinder for {machine}")))
    }

    /// The backtrace of the task that crashed: the CPU that panicked, from its registers.
    pub fn crashed_stack(&self) -> Result<Vec<Frame>> {
        self.stack(Which::Crashed, &NEVER)
    }

    /// The backtrace of a task (SPEC §14 `Kvm.stack`), innermost first.
    pub fn stack(&self, which: Which, cancel: &Cancel) -> Result<Vec<Frame>> {
        let unwinder = self.unwinder()?;
        let exec = self.exec_file()?;
        let raw = match which {
            Which::Crashed => {
                let notes = self.readable_core("kvm_stack")?.cpu_notes();
                if notes.is_empty() {
                    return Err(self.no_backtrace("the dump has no NT_PRSTATUS notes".into()));
                }
                let cpu = self.crashed_cpu(notes.len())?;
                self.unwind_cpu(unwinder, exec, cpu, cancel)?
            }
            Which::Pid(pid) => {
                let list = self.tasks_with(cancel)?;
                let task = list
                    .tasks
                    .iter()
                    .find(|t| t.pid == pid)
                    .ok_or_else(|| self.no_backtrace(format!("no task with pid {pid}")))?;
                self.unwind_task(unwinder, exec, task.task, task.cpu, cancel)?
            }
            Which::Idle(cpu) => {
                let task = self.idle_task(cpu, cancel)?;
                self.unwind_task(unwinder, exec, task, Some(cpu), cancel)?
            }
        };
        Ok(raw
            .into_iter()
            .map(|raw| self.name_frame(exec, raw, cancel))
            .collect())
    }

    /// A frame with its name: the module's own symbols where a module's text holds it,
    /// else the kernel's.
    fn name_frame(&self, exec: &ExecFile, raw: RawFrame, cancel: &Cancel) -> Frame {
        let (named, module) = match self.module_at(raw.lookup, cancel) {
            Some(module) => (
                module
                    .nearest(raw.lookup)
                    .map(|(name, value)| (name.to_owned(), value)),
                Some(module.text.name.clone()),
            ),
            None => (self.nearest_text(exec, raw.lookup), None),
        };
        Frame {
            pc: raw.pc,
            offset: named.as_ref().map(|(_, v)| raw.pc.wrapping_sub(*v)),
            symbol: named.map(|(name, _)| name),
            module,
            reliable: raw.reliable,
        }
    }

    /// The unwinding of CPU `cpu`'s registers (its note).
    fn unwind_cpu(
        &self,
        unwinder: &dyn Unwind,
        exec: &ExecFile,
        cpu: usize,
        cancel: &Cancel,
    ) -> Result<Vec<RawFrame>> {
        let core = self.readable_core("kvm_stack")?;
        let notes = core.cpu_notes();
        let registers = notes
            .get(cpu)
            .and_then(|note| unwinder.registers(note, core.big_endian))
            .ok_or_else(|| {
                self.no_backtrace(if cpu < notes.len() {
                    format!("NT_PRSTATUS of CPU {cpu} is too short")
                } else {
                    format!("no NT_PRSTATUS note for CPU {cpu} ({} notes)", notes.len())
                })
            })?;
        Ok(self.with_env(exec, cancel, |env| unwinder.unwind(env, &registers)))
    }

    /// A task's frames: from its CPU's registers when it was running there, else from its
    /// saved context.
    fn unwind_task(
        &self,
        unwinder: &dyn Unwind,
        exec: &ExecFile,
        task: u64,
        cpu: Option<u64>,
        cancel: &Cancel,
    ) -> Result<Vec<RawFrame>> {
        if let Some(cpu) = cpu.filter(|&cpu| self.cpu_current(cpu, cancel) == Some(task)) {
            let cpu = usize::try_from(cpu).map_err(|_| self.no_backtrace("bad CPU".into()))?;
            return self.unwind_cpu(unwinder, exec, cpu, cancel);
        }
        let layout = self.saved_layout(unwinder, cancel)?;
        self.with_env(exec, cancel, |env| unwinder.blocked(env, &layout, task))
            .map_err(|why| self.no_backtrace(format!("task {task:#x}: {why}")))
    }

    /// Runs `work` with the unwinder's view of the dump.
    fn with_env<T>(&self, exec: &ExecFile, cancel: &Cancel, work: impl Fn(&Env<'_>) -> T) -> T {
        let vmcoreinfo = self.core.as_ref().map(|c| &c.vmcoreinfo);
        let empty = crate::formats::vmcoreinfo::VmcoreInfo::default();
        let read_fn = |addr: u64, len: usize| self.read_for_decoder(addr, len);
        let read: ReadFn<'_> = &read_fn;
        let symbol = |name: &str| self.symbol_value(name);
        let function_start = |addr: u64| match self.module_at(addr, cancel) {
            Some(module) => module.nearest(addr).map(|(_, v)| v),
            None => self.nearest_text(exec, addr).map(|(_, v)| v),
        };
        let module = |addr: u64| self.module_at(addr, cancel).map(|m| m.text.clone());
        let env = Env {
            read,
            symbol: &symbol,
            function_start: &function_start,
            vmcoreinfo: vmcoreinfo.unwrap_or(&empty),
            big_endian: self.core.as_ref().is_some_and(|c| c.big_endian),
            module: &module,
        };
        work(&env)
    }

    /// Exactly `len` bytes at `addr`.
    fn read_exact(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        match self.read(addr, len) {
            (data, None) => Ok(data),
            (_, Some(error)) => Err(error),
        }
    }

    fn words(&self) -> Option<Words> {
        self.core.as_ref().map(Words::of)
    }

    /// The address of per-CPU variable `name` on `cpu` (`__per_cpu_offset[cpu]` added).
    fn per_cpu(&self, name: &str, cpu: u64) -> Option<u64> {
        let words = self.words()?;
        let base = self.symbol_value(name)?;
        let offsets = self.symbol_value("__per_cpu_offset")?;
        let at = offsets.checked_add(cpu.checked_mul(words.long_bytes())?)?;
        let read = |addr: u64, len: usize| self.read_exact(addr, len);
        let offset = words.read_long(&read, at).ok()?;
        Some(base.wrapping_add(offset))
    }

    /// `struct rq`'s `curr` and `idle`, from BTF.
    fn rq_layout(&self, cancel: &Cancel) -> Option<(u64, u64)> {
        *self.stacks.rq.get_or_init(|| {
            let (btf, _) = self.btf_with(cancel).ok()?;
            let rq = btf.find_struct("rq")?;
            let at = |name: &str| btf.offset_of(rq, name).map(|(offset, _)| offset);
            Some((at("curr")?, at("idle")?))
        })
    }

    /// A field of CPU `cpu`'s runqueue (`runqueues`).
    fn rq_field(&self, cpu: u64, field: u64) -> Option<u64> {
        let rq = self.per_cpu("runqueues", cpu)?;
        let read = |addr: u64, len: usize| self.read_exact(addr, len);
        self.words()?.read_long(&read, rq.checked_add(field)?).ok()
    }

    /// The task running on `cpu` at the crash (`cpu_rq(cpu)->curr`), where known.
    fn cpu_current(&self, cpu: u64, cancel: &Cancel) -> Option<u64> {
        let (curr, _) = self.rq_layout(cancel)?;
        self.rq_field(cpu, curr)
    }

    /// CPU `cpu`'s idle task (`cpu_rq(cpu)->idle`; `init_task` is CPU 0's).
    fn idle_task(&self, cpu: u64, cancel: &Cancel) -> Result<u64> {
        let nr_cpu_ids = self.symbol_value("nr_cpu_ids").and_then(|at| {
            let read = |addr: u64, len: usize| self.read_exact(addr, len);
            self.words()?.read_u32(&read, at).ok()
        });
        if let Some(count) = nr_cpu_ids.filter(|&n| cpu >= u64::from(n)) {
            return Err(
                self.no_backtrace(format!("no CPU {cpu}: the kernel has {count} (nr_cpu_ids)"))
            );
        }
        let from_rq = self
            .rq_layout(cancel)
            .and_then(|(_, idle)| self.rq_field(cpu, idle))
            .filter(|&task| task != 0);
        if let Some(task) = from_rq {
            return Ok(task);
        }
        if cpu == 0 {
            if let Some(task) = self.symbol_value("init_task") {
                return Ok(task);
            }
        }
        Err(self.no_backtrace(format!(
            "cannot read the idle task of CPU {cpu} (cpu_rq({cpu})->idle)"
        )))
    }

    /// Where a blocked task's saved context lies (BTF, once).
    fn saved_layout(&self, unwinder: &dyn Unwind, cancel: &Cancel) -> Result<SavedLayout> {
        if let Some(done) = self.stacks.saved.get() {
            return done.clone();
        }
        let (btf, _) = self.btf_with(cancel)?;
        let layout = unwinder
            .saved_layout(&btf)
            .map_err(|missing| Error::Triage {
                path: self.core_path.clone(),
                what: format!("BTF has no {missing}"),
            });
        self.stacks.saved.get_or_init(|| layout).clone()
    }

    /// The kernel image's text, `_stext`..`_etext`, and its init text.
    fn kernel_text(&self) -> &[(u64, u64)] {
        self.stacks.text.get_or_init(|| {
            [("_stext", "_etext"), ("_sinittext", "_einittext")]
                .iter()
                .filter_map(|(start, end)| self.symbol_value(start).zip(self.symbol_value(end)))
                .collect()
        })
    }

    /// The module whose core text holds `addr`; the module list is read (with BTF) the
    /// first time an address outside the kernel's text is asked about.
    fn module_at(&self, addr: u64, cancel: &Cancel) -> Option<&ModuleSymbols> {
        if self
            .kernel_text()
            .iter()
            .any(|&(start, end)| (start..end).contains(&addr))
        {
            return None;
        }
        self.modules(cancel).iter().find(|m| m.text.contains(addr))
    }

    /// The loaded modules with their symbols (empty where BTF, the `modules` symbol or the
    /// list is missing): the walk `Kvm.modules` uses, with the same cached layout.
    pub fn modules(&self, cancel: &Cancel) -> &[ModuleSymbols] {
        if let Some(done) = self.stacks.modules.get() {
            return done;
        }
        let loaded = match self.load_modules(cancel) {
            Err(Error::Interrupted) => return &[],
            other => other.unwrap_or_default(),
        };
        self.stacks.modules.get_or_init(|| loaded)
    }

    fn load_modules(&self, cancel: &Cancel) -> Result<Vec<ModuleSymbols>> {
        let (list, layout, words) = self.walk_modules(cancel)?;
        let read = |addr: u64, len: usize| self.read_exact(addr, len);
        Ok(module_symbols::read(&read, words, layout, &list.modules))
    }
}
