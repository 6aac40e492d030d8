//! The system facts of a triage (SPEC §14): modules, load average, uptime, taint, the
//! utsname, CPUs, memory and the panic, read with symbols and (where layouts are needed)
//! BTF. Each fact the dump cannot give is None, with the reason in `problems`.

use std::collections::HashMap;

use super::Session;
use crate::btf::Btf;
use crate::cancel::Cancel;
use crate::errors::{Error, Result};
use crate::kernel::dmesg::panic_message;
use crate::kernel::modules::{self, ModuleLayout, ModuleList};
use crate::kernel::system::{self, TimeLayout};
use crate::kernel::{describe, Words};

/// The most CPUs a mask is read for (`CONFIG_NR_CPUS` tops out at 8192).
const MAX_CPUS: u32 = 1 << 16;
/// `__NEW_UTS_LEN + 1`.
const UTS_LEN: u64 = 65;

/// What `Kvm.triage` reports beyond the task and module lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemFacts {
    pub release: Option<String>,
    pub machine: Option<String>,
    pub nodename: Option<String>,
    /// Nanoseconds since boot, and where they came from (`tk_core`: the coarse boot time;
    /// `jiffies`: the tick count over HZ).
    pub uptime_ns: Option<u64>,
    pub uptime_source: Option<&'static str>,
    /// As `/proc/loadavg` prints them.
    pub loadavg: Option<[String; 3]>,
    pub taint: Option<u64>,
    pub taint_string: Option<String>,
    /// `nr_cpu_ids`.
    pub nr_cpus: Option<u32>,
    pub possible_cpus: Option<Vec<u32>>,
    pub present_cpus: Option<Vec<u32>>,
    pub online_cpus: Option<Vec<u32>>,
    pub totalram_pages: Option<u64>,
    /// The CPU that panicked (`panic_cpu`); None when no CPU did (`PANIC_CPU_INVALID`).
    pub panic_cpu: Option<u32>,
    pub panic_message: Option<String>,
    /// Why a fact is None, one line each.
    pub problems: Vec<String>,
}

/// Symbols the facts are read from.
const NAMES: [&str; 17] = [
    "init_task",
    "init_uts_ns",
    "avenrun",
    "tainted_mask",
    "taint_flags",
    "tk_core",
    "timekeeper_data",
    "jiffies_64",
    "tick_nsec",
    "nr_cpu_ids",
    "__cpu_possible_mask",
    "__cpu_present_mask",
    "__cpu_online_mask",
    "_totalram_pages",
    "totalram_pages",
    "panic_cpu",
    "modules",
];

/// A fact that could not be read: Interrupted stops the whole call, anything else is a
/// problem noted and the fact left out.
fn keep<T>(outcome: Result<T>, what: &str, problems: &mut Vec<String>) -> Result<Option<T>> {
    match outcome {
        Ok(value) => Ok(Some(value)),
        Err(Error::Interrupted) => Err(Error::Interrupted),
        Err(error) => {
            problems.push(format!("{what}: {}", describe(&error)));
            Ok(None)
        }
    }
}

impl Session {
    /// The runtime values of the symbols in `names` that the symbol table has.
    fn symbols(&self, names: &[&str]) -> Result<HashMap<String, u64>> {
        let wanted: Vec<Vec<u8>> = names.iter().map(|n| n.as_bytes().to_vec()).collect();
        let found = self.nlist(&wanted)?;
        Ok(names
            .iter()
            .zip(found)
            .filter_map(|(name, hit)| Some(((*name).to_owned(), hit?.1)))
            .collect())
    }

    /// A symbol every kernel has: missing, the table is of text symbols only (when
    /// `init_task` is missing too) or lacks it.
    fn required(&self, found: &HashMap<String, u64>, name: &str) -> Result<u64> {
        if let Some(&value) = found.get(name) {
            return Ok(value);
        }
        if !found.contains_key("init_task") {
            return Err(self.no_data_symbols());
        }
        let path = self
            .exec()
            .map_or_else(|| self.core_path.clone(), |e| e.path.clone());
        Err(Error::Triage {
            path,
            what: format!("no symbol {name}"),
        })
    }

    fn reader<'a>(&'a self, cancel: &'a Cancel) -> impl Fn(u64, usize) -> Result<Vec<u8>> + 'a {
        move |addr: u64, len: usize| match self.read_with(addr, len, cancel) {
            (data, None) => Ok(data),
            (_, Some(error)) => Err(error),
        }
    }

    /// `kvm_getloadavg`: `avenrun` as `/proc/loadavg` prints it. Needs no BTF (an array of
    /// three longs).
    pub fn loadavg_with(&self, cancel: &Cancel) -> Result<[String; 3]> {
        let core = self.readable_core("kvm_getloadavg")?;
        let words = Words::of(core);
        let found = self.symbols(&["avenrun", "init_task"])?;
        let avenrun = self.required(&found, "avenrun")?;
        let read = self.reader(cancel);
        let raw = read(
            avenrun,
            usize::try_from(words.long_bytes().saturating_mul(3)).unwrap_or(24),
        )?;
        let long = |i: u64| words.long(&raw, i.saturating_mul(words.long_bytes()));
        Ok(system::loadavg([long(0), long(1), long(2)]))
    }

    fn module_layout(&self, btf: &Btf, words: Words) -> Result<&ModuleLayout> {
        self.layout(&self.triage.modules, || ModuleLayout::from_btf(btf, words))
    }

    /// The one walk of the kernel's `modules` list, with the handle's one module layout
    /// (from BTF, once): what `Kvm.modules` reports and what backtraces read module
    /// symbols from. The list is walked on every call (a live `/dev/mem` changes).
    pub(super) fn walk_modules(
        &self,
        cancel: &Cancel,
    ) -> Result<(ModuleList, &ModuleLayout, Words)> {
        let core = self.readable_core("kvm_getmodules")?;
        let words = Words::of(core);
        let (btf, _) = self.btf_with(cancel)?;
        let layout = self.module_layout(&btf, words)?;
        let found = self.symbols(&["modules", "init_task"])?;
        let head = self.required(&found, "modules")?;
        let read = self.reader(cancel);
        let list = modules::walk(&read, words, layout, head, cancel)
            .map_err(|e| self.name_decoder_error(e))?;
        Ok((list, layout, words))
    }

    /// `Kvm.modules`: every module on the kernel's `modules` list.
    pub fn modules_with(&self, cancel: &Cancel) -> Result<ModuleList> {
        self.walk_modules(cancel).map(|(list, _, _)| list)
    }

    /// Everything `Kvm.triage` reports about the system beside tasks and modules.
    pub fn system_with(&self, cancel: &Cancel) -> Result<SystemFacts> {
        let core = self.readable_core("kvm_triage")?;
        let words = Words::of(core);
        let (btf, _) = self.btf_with(cancel)?;
        let found = self.symbols(&NAMES)?;
        self.required(&found, "init_task")?;
        let read = self.reader(cancel);
        let long = |addr: u64| words.read_long(&read, addr);
        let mut facts = SystemFacts::default();
        let problems = &mut facts.problems;

        // utsname: init_uts_ns.name.{nodename,release,machine}.
        let uts = self.required(&found, "init_uts_ns").and_then(|at| {
            let missing = |what: &str| Error::Triage {
                path: self.core_path.clone(),
                what: format!("BTF has no {what}"),
            };
            let ns = btf
                .find_struct("uts_namespace")
                .ok_or_else(|| missing("struct uts_namespace"))?;
            let field = |name: &str| -> Result<String> {
                let path = format!("name.{name}");
                let (offset, member) = btf
                    .offset_of(ns, &path)
                    .ok_or_else(|| missing(&format!("uts_namespace.{path}")))?;
                let len = btf
                    .size_of(member.type_id, words.long_bytes())
                    .filter(|&n| n > 0 && n <= 4096)
                    .unwrap_or(UTS_LEN);
                let raw = read(
                    at.saturating_add(offset),
                    usize::try_from(len).unwrap_or(65),
                )?;
                let end = memchr::memchr(0, &raw).unwrap_or(raw.len());
                Ok(String::from_utf8_lossy(raw.get(..end).unwrap_or(&[])).into_owned())
            };
            Ok((field("nodename")?, field("release")?, field("machine")?))
        });
        if let Some((nodename, release, machine)) = keep(uts, "init_uts_ns", problems)? {
            facts.nodename = Some(nodename);
            facts.release = Some(release);
            facts.machine = Some(machine);
        }

        // Uptime: the coarse boot time, else the tick count.
        let boottime = TimeLayout::from_btf(&btf)
            .map_err(|missing| Error::Triage {
                path: self.core_path.clone(),
                what: format!("BTF has no {missing}"),
            })
            .and_then(|layout| {
                let at = found
                    .get("tk_core")
                    .or_else(|| found.get("timekeeper_data"))
                    .copied()
                    .ok_or_else(|| Error::Triage {
                        path: self.core_path.clone(),
                        what: "no symbol tk_core".into(),
                    })?;
                let raw = read(at, usize::try_from(layout.span).unwrap_or(0))?;
                layout
                    .boottime_ns(&raw, words)
                    .ok_or_else(|| Error::Triage {
                        path: self.core_path.clone(),
                        what: "a timekeeper whose boot time does not fit 64 bits".into(),
                    })
            });
        let mut time_problems = Vec::new();
        if let Some(ns) = keep(boottime, "uptime from tk_core", &mut time_problems)? {
            facts.uptime_ns = Some(ns);
            facts.uptime_source = Some("tk_core");
        } else {
            let ticks = self.required(&found, "jiffies_64").and_then(|at| {
                let jiffies = words.u64(&read(at, 8)?, 0);
                let tick_nsec = long(self.required(&found, "tick_nsec")?)?;
                let hz = system::hz_from_tick_nsec(tick_nsec).ok_or_else(|| Error::Triage {
                    path: self.core_path.clone(),
                    what: format!("no HZ gives tick_nsec {tick_nsec}"),
                })?;
                system::jiffies_uptime_ns(jiffies, hz).ok_or_else(|| Error::Triage {
                    path: self.core_path.clone(),
                    what: format!("jiffies_64 {jiffies} at HZ {hz} does not fit"),
                })
            });
            if let Some(ns) = keep(ticks, "uptime from jiffies_64", &mut time_problems)? {
                facts.uptime_ns = Some(ns);
                facts.uptime_source = Some("jiffies");
            }
            facts.problems.append(&mut time_problems);
        }
        let problems = &mut facts.problems;

        let avenrun = keep(self.loadavg_with(cancel), "avenrun", problems)?;
        facts.loadavg = avenrun;

        // Taint: tainted_mask, printed with the kernel's own taint_flags table.
        let mask = self.required(&found, "tainted_mask").and_then(&long);
        if let Some(mask) = keep(mask, "tainted_mask", problems)? {
            let flags = found
                .get("taint_flags")
                .and_then(|&at| self.taint_flags(&btf, words, at, cancel))
                .unwrap_or_else(|| system::TAINT_LETTERS.to_vec());
            facts.taint = Some(mask);
            facts.taint_string = Some(system::taint_string(mask, &flags));
        }

        // CPUs: the masks, below nr_cpu_ids.
        let nr = self
            .required(&found, "nr_cpu_ids")
            .and_then(|at| words.read_u32(&read, at));
        let nr = keep(nr, "nr_cpu_ids", problems)?.filter(|&n| n > 0 && n <= MAX_CPUS);
        facts.nr_cpus = nr;
        if let Some(nbits) = nr {
            let longs = u64::from(nbits.div_ceil(64).max(1)).saturating_mul(words.long_bytes());
            let mut mask = |name: &str| -> Result<Option<Vec<u32>>> {
                let cpus = self.required(&found, name).and_then(|at| {
                    let raw = read(at, usize::try_from(longs).unwrap_or(8))?;
                    Ok(system::cpus(&raw, words, nbits))
                });
                keep(cpus, name, problems)
            };
            facts.possible_cpus = mask("__cpu_possible_mask")?;
            facts.present_cpus = mask("__cpu_present_mask")?;
            facts.online_cpus = mask("__cpu_online_mask")?;
        }

        // Memory: _totalram_pages (an atomic_long_t since 5.0), totalram_pages before.
        let totalram = found
            .get("_totalram_pages")
            .or_else(|| found.get("totalram_pages"))
            .copied()
            .map_or_else(|| self.required(&found, "_totalram_pages"), Ok)
            .and_then(&long);
        facts.totalram_pages = keep(totalram, "_totalram_pages", problems)?;

        // The panic: panic_cpu (an atomic_t, -1 when no CPU panicked), the log's message.
        let cpu = self
            .required(&found, "panic_cpu")
            .and_then(|at| words.read_u32(&read, at));
        facts.panic_cpu = keep(cpu, "panic_cpu", problems)?.filter(|&c| c != u32::MAX);
        let log = self.dmesg_with(cancel);
        facts.panic_message =
            keep(log, "the kernel log", problems)?.and_then(|records| panic_message(&records));
        Ok(facts)
    }

    /// `taint_flags[]` as the kernel holds it: `(c_true, c_false)` per flag, up to the first
    /// entry that is no taint flag (the table's size is no symbol's business). None where
    /// BTF has no `struct taint_flag` or the table cannot be read.
    fn taint_flags(
        &self,
        btf: &Btf,
        words: Words,
        at: u64,
        cancel: &Cancel,
    ) -> Option<Vec<(u8, u8)>> {
        let flag = btf.find_struct("taint_flag")?;
        let stride = btf
            .size_of(flag, words.long_bytes())
            .filter(|&n| n > 0 && n <= 64)?;
        let (c_true, _) = btf.offset_of(flag, "c_true")?;
        let (c_false, _) = btf.offset_of(flag, "c_false")?;
        let len = stride.checked_mul(system::MAX_TAINT_FLAGS as u64)?;
        let (raw, _) = self.read_with(at, usize::try_from(len).ok()?, cancel);
        let byte = |i: u64, off: u64| {
            let at = usize::try_from(i.checked_mul(stride)?.checked_add(off)?).ok()?;
            raw.get(at).copied()
        };
        let flags: Vec<(u8, u8)> = (0..system::MAX_TAINT_FLAGS as u64)
            .map_while(|i| {
                let (on, off) = (byte(i, c_true)?, byte(i, c_false)?);
                system::is_taint_flag(on, off).then_some((on, off))
            })
            .collect();
        (!flags.is_empty()).then_some(flags)
    }
}
