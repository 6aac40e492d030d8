//! The task list, read with BTF layouts and no debug info (SPEC §14, `kvm_getprocs`).
//!
//! Every task but the idle tasks is on `init_task.tasks` (a ring of `list_head`s through
//! each thread-group leader) and on its group's thread ring: `signal->thread_head` through
//! `task_struct.thread_node` (3.14 and later), or `task_struct.thread_group` (before 6.7;
//! BTF says which the kernel has). The idle tasks (pid 0: `init_task` and one per other
//! CPU) are on neither, as in `ps` and `/proc`, and are not listed.
//!
//! A dump may lack a page (a filter that excluded one task_struct): the process ring is
//! walked forward and, when it breaks, backward from the head as well, and every leader's
//! thread ring too, so every task still reachable is found; the list then says it is
//! incomplete and why. Walks are bounded: a ring that loops without coming back to its head
//! is caught (Brent's cycle detection, no memory), and all walks together take at most
//! `MAX_STEPS` links.

use super::list::Rings;
use super::{describe, member_offset, ReadFn, Words};
use crate::btf::Btf;
use crate::cancel::Cancel;
use crate::errors::Error;

/// `PID_MAX_LIMIT`: no kernel has more tasks.
pub const MAX_TASKS: usize = 4 << 20;
/// Links followed by one walk of every ring (each task is on two rings, walked at most
/// twice each way).
const MAX_STEPS: usize = 4 * MAX_TASKS;
/// `PF_KTHREAD` in `task_struct.flags` (since 2.6.27).
pub const PF_KTHREAD: u64 = 0x0020_0000;
/// `TASK_COMM_LEN`.
const COMM_LEN: u64 = 16;

/// An integer field: where it lies and how wide it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u64,
    pub size: u64,
    pub signed: bool,
}

/// How a thread group's threads are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// `signal_struct.thread_head` → `task_struct.thread_node` (3.14 and later).
    SignalHead { signal: u64, head: u64, node: u64 },
    /// `task_struct.thread_group` (before 6.7).
    Group { node: u64 },
    /// Neither (a layout BTF does not describe): leaders only.
    None,
}

/// Where the fields `Proc` needs lie, from BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLayout {
    pub tasks: u64,
    pub list_next: u64,
    pub list_prev: u64,
    pub pid: Field,
    pub tgid: Field,
    pub real_parent: u64,
    pub comm: u64,
    pub comm_len: u64,
    /// `__state` (5.14 and later) or `state`.
    pub state: Field,
    pub exit_state: Field,
    pub flags: Field,
    pub cred: Option<u64>,
    pub cred_uid: Option<Field>,
    /// `task_struct.cpu`, else `thread_info.cpu` (inside the task on most machines).
    pub cpu: Option<Field>,
    pub on_cpu: Option<Field>,
    pub threads: Threads,
}

impl TaskLayout {
    /// The layout, or the first thing BTF lacks (`"task_struct.pid"`).
    pub fn from_btf(btf: &Btf, words: Words) -> Result<TaskLayout, String> {
        let task = btf
            .find_struct("task_struct")
            .ok_or_else(|| "struct task_struct".to_owned())?;
        let list = btf
            .find_struct("list_head")
            .ok_or_else(|| "struct list_head".to_owned())?;
        let offset = |of: u32, path: &str, owner: &str| member_offset(btf, of, path, owner);
        let int = |of: u32, path: &str, owner: &str| -> Result<Field, String> {
            let missing = || format!("{owner}.{path}");
            let (offset, member) = btf.offset_of(of, path).ok_or_else(missing)?;
            let size = btf.size_of(member.type_id, words.long_bytes());
            let signed = btf.int(member.type_id).is_some_and(|i| i.signed);
            match size {
                Some(size @ (1 | 2 | 4 | 8)) => Ok(Field {
                    offset,
                    size,
                    signed,
                }),
                _ => Err(format!("{owner}.{path} (not an integer)")),
            }
        };
        let pointee = |of: u32, name: &str| {
            btf.member(of, name)
                .and_then(|m| btf.pointee(m.type_id))
                .and_then(|id| btf.resolve(id))
        };
        let comm_member = btf
            .member(task, "comm")
            .ok_or_else(|| "task_struct.comm".to_owned())?;
        let comm_len = btf
            .size_of(comm_member.type_id, words.long_bytes())
            .filter(|&n| n > 0 && n <= 64)
            .unwrap_or(COMM_LEN);
        let cred = btf.member(task, "cred").map(|m| m.byte_offset());
        let cred_uid = pointee(task, "cred")
            .filter(|&id| id != 0)
            .and_then(|cred| int(cred, "uid.val", "cred").ok());
        let cpu = int(task, "cpu", "task_struct")
            .ok()
            .or_else(|| int(task, "thread_info.cpu", "task_struct").ok());
        let signal_head = pointee(task, "signal")
            .filter(|&id| id != 0)
            .and_then(|signal| btf.offset_of(signal, "thread_head"));
        let threads = match (
            btf.member(task, "signal"),
            signal_head,
            btf.offset_of(task, "thread_node"),
            btf.offset_of(task, "thread_group"),
        ) {
            (Some(signal), Some((head, _)), Some((node, _)), _) => Threads::SignalHead {
                signal: signal.byte_offset(),
                head,
                node,
            },
            (_, _, _, Some((node, _))) => Threads::Group { node },
            _ => Threads::None,
        };
        let state =
            int(task, "__state", "task_struct").or_else(|_| int(task, "state", "task_struct"))?;
        Ok(TaskLayout {
            tasks: offset(task, "tasks", "task_struct")?,
            list_next: offset(list, "next", "list_head")?,
            list_prev: offset(list, "prev", "list_head")?,
            pid: int(task, "pid", "task_struct")?,
            tgid: int(task, "tgid", "task_struct")?,
            real_parent: offset(task, "real_parent", "task_struct")?,
            comm: comm_member.byte_offset(),
            comm_len,
            state,
            exit_state: int(task, "exit_state", "task_struct")?,
            flags: int(task, "flags", "task_struct")?,
            cred,
            cred_uid,
            cpu,
            on_cpu: int(task, "on_cpu", "task_struct").ok(),
            threads,
        })
    }
}

/// One task, as `ps` would show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub pid: i64,
    pub tgid: i64,
    /// The thread-group id of `real_parent` (0 for children of the idle task); None where
    /// the parent's page is not in the dump.
    pub ppid: Option<i64>,
    pub comm: Vec<u8>,
    /// The letter `ps` shows (the kernel's `task_state_array`).
    pub state: char,
    /// `cred->uid`; None where the cred's page is not in the dump.
    pub uid: Option<u64>,
    pub cpu: Option<u64>,
    pub on_cpu: Option<i64>,
    pub kthread: bool,
    /// The address of its `task_struct`.
    pub task: u64,
}

/// What a walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskList {
    /// Every task read, in pid order (threads by pid too).
    pub tasks: Vec<Task>,
    /// True when every walk came back to its head, every task was read, and the count
    /// equals `nr_threads` (where the symbol is known).
    pub complete: bool,
    /// Why the list is incomplete (empty when complete).
    pub problems: Vec<String>,
}

/// The letter `ps` shows for a task: the kernel's `__task_state_index` (fs/proc/array.c's
/// `task_state_array`), with the state bits every kernel since 4.14 uses: R S D T t X Z P
/// for the lowest TASK_REPORT bit set, I for TASK_IDLE (TASK_UNINTERRUPTIBLE |
/// TASK_NOLOAD), D for a task frozen or waiting on an rtlock.
pub fn state_letter(state: u64, exit_state: u64) -> char {
    const LETTERS: [char; 8] = ['R', 'S', 'D', 'T', 't', 'X', 'Z', 'P'];
    const TASK_REPORT: u64 = 0x7f;
    const TASK_UNINTERRUPTIBLE: u64 = 0x2;
    const TASK_IDLE: u64 = TASK_UNINTERRUPTIBLE | 0x400;
    const TASK_RTLOCK_WAIT: u64 = 0x1000;
    const TASK_FROZEN: u64 = 0x8000;
    if state & TASK_IDLE == TASK_IDLE {
        return 'I';
    }
    let report = if state & (TASK_RTLOCK_WAIT | TASK_FROZEN) != 0 {
        TASK_UNINTERRUPTIBLE
    } else {
        (state | exit_state) & TASK_REPORT
    };
    // fls: 0 for R, the highest set bit's index plus one otherwise.
    let index = usize::try_from(u64::BITS.saturating_sub(report.leading_zeros())).unwrap_or(0);
    LETTERS.get(index).copied().unwrap_or('?')
}

/// Reads the tasks a walk found.
struct Walk<'a> {
    read: ReadFn<'a>,
    words: Words,
    layout: &'a TaskLayout,
}

impl Walk<'_> {
    fn field(&self, task: u64, field: Field) -> Result<u64, Error> {
        let at = task.saturating_add(field.offset);
        let len = usize::try_from(field.size).unwrap_or(8);
        let raw = (self.read)(at, len)?;
        let value = match field.size {
            1 => u64::from(raw.first().copied().unwrap_or(0)),
            2 => u64::from(self.words.u16(&raw, 0)),
            4 => u64::from(self.words.u32(&raw, 0)),
            _ => self.words.u64(&raw, 0),
        };
        Ok(value)
    }

    /// A field as the signed value it holds.
    fn signed(&self, task: u64, field: Field) -> Result<i64, Error> {
        let value = self.field(task, field)?;
        let bits = field.size.saturating_mul(8);
        Ok(if field.signed && bits > 0 && bits < 64 {
            let shift = 64u64.saturating_sub(bits);
            let shift = u32::try_from(shift).unwrap_or(0);
            i64::from_ne_bytes(value.to_ne_bytes())
                .checked_shl(shift)
                .and_then(|v| v.checked_shr(shift))
                .unwrap_or(0)
        } else {
            i64::from_ne_bytes(value.to_ne_bytes())
        })
    }

    fn task(&self, task: u64) -> Result<Task, Error> {
        let layout = self.layout;
        let long = |at: u64| self.words.read_long(self.read, at);
        let pid = self.signed(task, layout.pid)?;
        let tgid = self.signed(task, layout.tgid)?;
        let comm_raw = (self.read)(
            task.saturating_add(layout.comm),
            usize::try_from(layout.comm_len).unwrap_or(16),
        )?;
        let comm_end = memchr::memchr(0, &comm_raw).unwrap_or(comm_raw.len());
        let comm = comm_raw.get(..comm_end).unwrap_or(&[]).to_vec();
        let state = self.field(task, layout.state)?;
        let exit_state = self.field(task, layout.exit_state)?;
        let flags = self.field(task, layout.flags)?;
        let parent = long(task.saturating_add(layout.real_parent))?;
        let ppid = self.signed(parent, layout.tgid).ok();
        let uid = match (layout.cred, layout.cred_uid) {
            (Some(cred), Some(uid)) => long(task.saturating_add(cred))
                .and_then(|cred| self.field(cred, uid))
                .ok(),
            _ => None,
        };
        Ok(Task {
            pid,
            tgid,
            ppid,
            comm,
            state: state_letter(state, exit_state),
            uid,
            cpu: layout.cpu.map(|f| self.field(task, f)).transpose()?,
            on_cpu: layout.on_cpu.map(|f| self.signed(task, f)).transpose()?,
            kthread: flags & PF_KTHREAD != 0,
            task,
        })
    }
}

/// Every task reachable from `init_task` (its address), with `nr_threads` (the kernel's
/// count of them, where known) to tell a list that lost some.
pub fn walk(
    read: ReadFn<'_>,
    words: Words,
    layout: &TaskLayout,
    init_task: u64,
    nr_threads: Option<u64>,
    cancel: &Cancel,
) -> Result<TaskList, Error> {
    let walk = Walk {
        read,
        words,
        layout,
    };
    let mut rings = Rings::new(read, words, cancel, "task", MAX_TASKS, MAX_STEPS);
    let (next, prev) = (layout.list_next, Some(layout.list_prev));
    let head = init_task.saturating_add(layout.tasks);
    rings.ring(head, layout.tasks, next, prev, "the task list")?;
    let leaders = rings.order.clone();
    for leader in leaders {
        let ring = match layout.threads {
            Threads::SignalHead { signal, head, node } => {
                let at = leader.saturating_add(signal);
                match words.read_long(read, at) {
                    Ok(signal) => Some((signal.saturating_add(head), node)),
                    Err(Error::Interrupted) => return Err(Error::Interrupted),
                    Err(error) => {
                        rings.problem(format!(
                            "the threads of task {leader:#x}: its signal pointer is not readable ({})",
                            describe(&error)
                        ));
                        None
                    }
                }
            }
            Threads::Group { node } => Some((leader.saturating_add(node), node)),
            Threads::None => None,
        };
        if let Some((head, node)) = ring {
            let what = format!("the threads of task {leader:#x}");
            rings.ring(head, node, next, prev, &what)?;
        }
        cancel.check()?;
    }
    let mut tasks = Vec::with_capacity(rings.order.len());
    for task in std::mem::take(&mut rings.order) {
        match walk.task(task) {
            Ok(task) => tasks.push(task),
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(error) => rings.problem(format!(
                "task {task:#x} is not readable ({})",
                describe(&error)
            )),
        }
    }
    tasks.sort_by_key(|t| (t.pid, t.task));
    if let Some(expected) = nr_threads {
        if tasks.len() as u64 != expected {
            rings.problem(format!(
                "{} tasks read, nr_threads says {expected}",
                tasks.len()
            ));
        }
    }
    Ok(TaskList {
        tasks,
        complete: rings.problems.is_empty(),
        problems: rings.problems,
    })
}

#[cfg(test)]
mod tests;
