//! The module walk over fake kernel memory: a whole list, a loop, a null link, a lost page.
//! (`module_symbols`' tests read each walked module's symbols over the same `Memory`.)

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;

use super::*;
use crate::cancel::NEVER;
use crate::errors::Reason;

const HEAD: u64 = 0xffff_ffff_8200_0000;
const BASE: u64 = 0xffff_ffff_c000_0000;
const WORDS: Words = Words {
    big_endian: false,
    wide: true,
};

fn layout(core: Core) -> ModuleLayout {
    ModuleLayout {
        list: 8,
        list_next: 0,
        name: 0x18,
        name_len: 56,
        state: Some((0, vec![(0, "MODULE_STATE_LIVE".into())])),
        core,
        span: 0x100,
        kind: "test",
        kallsyms: None,
        orc: None,
    }
}

/// Fake kernel memory a page at a time, as a dump has it: a page written to reads as zeros
/// where nothing was put; any other page is excluded. `module_symbols`' tests use it too.
#[derive(Default)]
pub(crate) struct Memory(BTreeMap<u64, u8>);

const PAGE: u64 = 4096;

impl Memory {
    pub(crate) fn put(&mut self, at: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            self.0.insert(at + i as u64, *b);
        }
    }

    pub(crate) fn read(&self, at: u64, len: usize) -> Result<Vec<u8>, Error> {
        (0..len as u64)
            .map(|i| {
                let at = at + i;
                let page = at & !(PAGE - 1);
                match self.0.get(&at) {
                    Some(b) => Ok(*b),
                    None if self.0.range(page..page + PAGE).next().is_some() => Ok(0),
                    None => Err(Error::InvalidAddress {
                        addr: at,
                        reason: Reason::Excluded,
                    }),
                }
            })
            .collect()
    }
}

fn module_at(i: u64) -> u64 {
    BASE + i * 0x1000
}

/// `n` modules on the list; `next_of` overrides where module i's next link points.
fn kernel(n: u64, next_of: &[(u64, u64)]) -> Memory {
    let mut m = Memory::default();
    let node = |i: u64| module_at(i) + 8;
    let first = if n == 0 { HEAD } else { node(1) };
    m.put(HEAD, &first.to_le_bytes());
    for i in 1..=n {
        let at = module_at(i);
        m.put(at, &[0; 0x100]);
        let next = next_of
            .iter()
            .find(|p| p.0 == i)
            .map_or(if i == n { HEAD } else { node(i + 1) }, |p| p.1);
        m.put(at + 8, &next.to_le_bytes());
        m.put(at + 0x18, format!("mod{i}").as_bytes());
        m.put(
            at + 0x60,
            &(0xffff_ffff_c100_0000 + i * 0x10_000).to_le_bytes(),
        );
        m.put(at + 0x68, &(i as u32 * 0x1000).to_le_bytes());
        m.put(at + 0x6c, &0x800u32.to_le_bytes());
        m.put(at + 0x70, &0x400u32.to_le_bytes());
    }
    m
}

fn run(m: &Memory, core: Core) -> ModuleList {
    let read = |at: u64, len: usize| m.read(at, len);
    walk(&read, WORDS, &layout(core), HEAD, &NEVER).unwrap()
}

const LAYOUT: Core = Core::Layout {
    base: 0x60,
    size: 0x68,
    text_size: 0x6c,
};

#[test]
fn a_whole_list() {
    let list = run(&kernel(3, &[]), LAYOUT);
    assert!(list.complete, "{:?}", list.problems);
    let names: Vec<&[u8]> = list.modules.iter().map(|m| &m.name[..]).collect();
    assert_eq!(names, [&b"mod1"[..], b"mod2", b"mod3"]);
    assert_eq!(
        list.modules[1],
        Module {
            name: b"mod2".to_vec(),
            base: 0xffff_ffff_c102_0000,
            size: 0x2000,
            text_size: 0x800,
            state: Some("MODULE_STATE_LIVE".into()),
            module: module_at(2),
        }
    );
    assert!(run(&kernel(0, &[]), LAYOUT).modules.is_empty());
}

#[test]
fn module_memory_sums_the_core() {
    let core = Core::Memory {
        text: (0x60, 0x6c),
        others: vec![(0x60, 0x70), (0x60, 0x6c)],
    };
    let list = run(&kernel(1, &[]), core);
    let m = &list.modules[0];
    assert_eq!((m.text_size, m.size), (0x800, 0x800 + 0x400 + 0x800));
}

#[test]
fn a_loop_ends_with_a_reason() {
    // mod3 points back at mod1: the walk never reaches the head.
    let list = run(&kernel(3, &[(3, module_at(1) + 8)]), LAYOUT);
    assert_eq!(list.modules.len(), 3);
    assert!(!list.complete);
    assert_eq!(
        list.problems,
        [format!(
            "the module list does not come back to its head (a loop at {:#x})",
            module_at(1) + 8
        )]
    );
    // A module pointing at itself.
    let list = run(&kernel(2, &[(1, module_at(1) + 8)]), LAYOUT);
    assert_eq!(list.modules.len(), 1);
    assert!(!list.complete);
}

#[test]
fn null_and_unreadable_links_end_the_walk() {
    let list = run(&kernel(2, &[(1, 0)]), LAYOUT);
    assert_eq!((list.modules.len(), list.complete), (1, false));
    assert_eq!(
        list.problems,
        [format!(
            "the module list: a null link after {:#x}",
            module_at(1) + 8
        )]
    );
    let lost = 0xffff_ffff_c900_0000;
    let list = run(&kernel(2, &[(2, lost + 8)]), LAYOUT);
    assert_eq!((list.modules.len(), list.complete), (2, false));
    assert_eq!(
        list.problems,
        // Said once: the walk stops at the lost module's link, before reading the module.
        [format!(
            "the module list: module {lost:#x} is not readable (invalid address ({:#x}): excluded)",
            lost + 8
        )]
    );
}
