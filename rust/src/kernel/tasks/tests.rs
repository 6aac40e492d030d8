//! The walk over fake kernel memory: whole lists, broken ones, loops.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;

use super::*;
use crate::errors::Reason;

const BASE: u64 = 0xffff_8880_0000_0000;
const SIZE: u64 = 0x80;

fn layout() -> TaskLayout {
    let int = |offset, signed| Field {
        offset,
        size: 4,
        signed,
    };
    TaskLayout {
        tasks: 0x10,
        list_next: 0,
        list_prev: 8,
        pid: int(0x20, true),
        tgid: int(0x24, true),
        real_parent: 0x28,
        comm: 0x30,
        comm_len: 16,
        state: int(0x40, false),
        exit_state: int(0x44, true),
        flags: int(0x48, false),
        cred: Some(0x50),
        cred_uid: Some(int(0x4, false)),
        cpu: Some(int(0x58, false)),
        on_cpu: Some(int(0x5c, true)),
        threads: Threads::Group { node: 0x60 },
    }
}

/// Kernel memory: 8-byte words at addresses; a missing word is an excluded page.
#[derive(Default)]
struct Memory(BTreeMap<u64, u8>);

impl Memory {
    fn put(&mut self, at: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            self.0.insert(at + i as u64, *b);
        }
    }

    fn long(&mut self, at: u64, v: u64) {
        self.put(at, &v.to_le_bytes());
    }

    fn int(&mut self, at: u64, v: u32) {
        self.put(at, &v.to_le_bytes());
    }

    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>, Error> {
        (0..len as u64)
            .map(|i| {
                self.0.get(&(at + i)).copied().ok_or(Error::InvalidAddress {
                    addr: at + i,
                    reason: Reason::Excluded,
                })
            })
            .collect()
    }

    fn remove(&mut self, from: u64, len: u64) {
        for at in from..from + len {
            self.0.remove(&at);
        }
    }
}

fn task_at(i: u64) -> u64 {
    BASE + i * 0x1000
}

/// init_task (index 0) and `n` more tasks on the list in order, each its own thread group
/// but for `threads`: (leader index, thread index) pairs put on the leader's thread ring.
fn kernel(n: u64, threads: &[(u64, u64)]) -> Memory {
    let l = layout();
    let mut m = Memory::default();
    let cred = BASE + 0x100_0000;
    m.int(cred + 4, 1000);
    let all: Vec<u64> = (0..=n).collect();
    let thread_of: BTreeMap<u64, u64> = threads.iter().map(|&(lead, t)| (t, lead)).collect();
    let leaders: Vec<u64> = all
        .iter()
        .copied()
        .filter(|i| !thread_of.contains_key(i))
        .collect();
    for &i in &all {
        let t = task_at(i);
        let tgid = thread_of.get(&i).copied().unwrap_or(i);
        m.int(t + l.pid.offset, i as u32);
        m.int(t + l.tgid.offset, tgid as u32);
        m.long(t + l.real_parent, task_at(0));
        let mut comm = [0u8; 16];
        let name = format!("task{i}");
        comm[..name.len()].copy_from_slice(name.as_bytes());
        m.put(t + l.comm, &comm);
        m.int(t + l.state.offset, if i % 2 == 0 { 0 } else { 1 });
        m.int(t + l.exit_state.offset, 0);
        m.int(
            t + l.flags.offset,
            if i == 2 { PF_KTHREAD as u32 } else { 0 },
        );
        m.long(t + 0x50, cred);
        m.int(t + 0x58, 0);
        m.int(t + 0x5c, 0);
    }
    // The process ring through every leader.
    for (k, &i) in leaders.iter().enumerate() {
        let next = leaders[(k + 1) % leaders.len()];
        let prev = leaders[(k + leaders.len() - 1) % leaders.len()];
        m.long(task_at(i) + 0x10, task_at(next) + 0x10);
        m.long(task_at(i) + 0x18, task_at(prev) + 0x10);
    }
    // Thread rings: each leader with its threads.
    for &lead in &leaders {
        let mut ring = vec![lead];
        ring.extend(threads.iter().filter(|p| p.0 == lead).map(|p| p.1));
        for (k, &i) in ring.iter().enumerate() {
            let next = ring[(k + 1) % ring.len()];
            let prev = ring[(k + ring.len() - 1) % ring.len()];
            m.long(task_at(i) + 0x60, task_at(next) + 0x60);
            m.long(task_at(i) + 0x68, task_at(prev) + 0x60);
        }
    }
    m
}

fn run(m: &Memory, nr_threads: Option<u64>) -> TaskList {
    let read = |at: u64, len: usize| m.read(at, len);
    let words = Words {
        big_endian: false,
        wide: true,
    };
    walk(
        &read,
        words,
        &layout(),
        task_at(0),
        nr_threads,
        &Cancel::default(),
    )
    .unwrap()
}

fn pids(list: &TaskList) -> Vec<i64> {
    list.tasks.iter().map(|t| t.pid).collect()
}

#[test]
fn a_whole_list_with_threads() {
    let m = kernel(6, &[(3, 5), (3, 6)]);
    let list = run(&m, Some(6));
    assert_eq!(list.problems, Vec::<String>::new());
    assert!(list.complete);
    assert_eq!(pids(&list), vec![1, 2, 3, 4, 5, 6]);
    let t5 = &list.tasks[4];
    assert_eq!(
        (t5.pid, t5.tgid, t5.ppid, t5.uid),
        (5, 3, Some(0), Some(1000))
    );
    assert_eq!(t5.comm, b"task5");
    assert_eq!(t5.state, 'S');
    assert_eq!(t5.task, task_at(5));
    assert!(list.tasks[1].kthread && !list.tasks[0].kthread);
}

#[test]
fn a_count_that_disagrees_is_incomplete() {
    let m = kernel(3, &[]);
    let list = run(&m, Some(4));
    assert!(!list.complete);
    assert_eq!(
        list.problems,
        vec!["3 tasks read, nr_threads says 4".to_owned()]
    );
}

#[test]
fn a_missing_task_page_leaves_the_rest_reachable_both_ways() {
    let mut m = kernel(8, &[(6, 8)]);
    m.remove(task_at(4), SIZE);
    let list = run(&m, Some(8));
    assert_eq!(pids(&list), vec![1, 2, 3, 5, 6, 7, 8]);
    assert!(!list.complete);
    assert!(
        list.problems[0].starts_with(&format!(
            "the task list: task {:#x} is not readable (invalid address (0x",
            task_at(4)
        )),
        "{:?}",
        list.problems
    );
    assert!(
        list.problems[0].ends_with("): excluded)"),
        "{:?}",
        list.problems
    );
    assert_eq!(list.problems.len(), 2, "{:?}", list.problems);
    assert_eq!(list.problems[1], "7 tasks read, nr_threads says 8");
}

#[test]
fn a_loop_ends() {
    let mut m = kernel(5, &[]);
    // 4 -> 2: the forward walk never comes back to init_task; nor does the backward one.
    m.long(task_at(4) + 0x10, task_at(2) + 0x10);
    m.long(task_at(1) + 0x18, task_at(3) + 0x10);
    let list = run(&m, None);
    assert!(!list.complete);
    assert!(list
        .problems
        .iter()
        .any(|p| p.contains("does not come back to its head")));
    assert_eq!(pids(&list), vec![1, 2, 3, 4, 5]);
    // A task pointing at itself.
    let mut m = kernel(3, &[]);
    m.long(task_at(2) + 0x10, task_at(2) + 0x10);
    m.long(task_at(0) + 0x18, task_at(0) + 0x10 + 0x1000_0000);
    let list = run(&m, None);
    assert!(!list.complete);
    assert_eq!(pids(&list), vec![1, 2]);
}

#[test]
fn a_thread_ring_that_loops_ends() {
    let mut m = kernel(4, &[(1, 3), (1, 4)]);
    m.long(task_at(4) + 0x60, task_at(3) + 0x60);
    m.long(task_at(1) + 0x68, task_at(3) + 0x60);
    let list = run(&m, Some(4));
    assert!(!list.complete);
    assert_eq!(pids(&list), vec![1, 2, 3, 4]);
}

#[test]
fn a_null_next_pointer_ends() {
    let mut m = kernel(3, &[]);
    m.long(task_at(2) + 0x10, 0);
    m.long(task_at(0) + 0x18, 0);
    let list = run(&m, None);
    assert!(!list.complete);
}

#[test]
fn interrupted() {
    let m = kernel(3, &[]);
    let read = |at: u64, len: usize| m.read(at, len);
    let cancel = Cancel::default();
    cancel.set();
    let words = Words {
        big_endian: false,
        wide: true,
    };
    assert_eq!(
        walk(&read, words, &layout(), task_at(0), None, &cancel),
        Err(Error::Interrupted)
    );
}

#[test]
fn state_letters() {
    let cases = [
        (0x0, 0, 'R'),
        (0x1, 0, 'S'),
        (0x2, 0, 'D'),
        (0x4, 0, 'T'),
        (0x8, 0, 't'),
        (0x108, 0, 't'),
        (0x0, 0x10, 'X'),
        (0x0, 0x20, 'Z'),
        (0x40, 0, 'P'),
        (0x402, 0, 'I'),
        (0x2002, 0, 'D'),
        (0x8000, 0, 'D'),
        (0x1000, 0, 'D'),
        (0x2001, 0, 'S'),
        (0x80, 0x10, 'X'),
    ];
    for (state, exit, letter) in cases {
        assert_eq!(state_letter(state, exit), letter, "{state:#x} {exit:#x}");
    }
}
