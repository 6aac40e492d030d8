//! Walking the kernel's rings of `struct list_head` (the task list, each group's threads,
//! the module list): each node's object is found `node_off` bytes before its node, the ring
//! is walked forward from its head and, where a caller asks, backward too when forward does
//! not come back (a dump that lost a page still gives every object on either side of it).
//! Bounded: a ring that loops without coming back to its head is caught (Brent's cycle
//! detection, no memory), and all walks of one `Rings` together take at most `max_steps`
//! links and find at most `max_objects` objects.

use std::collections::HashSet;

use super::{describe, ReadFn, Words};
use crate::cancel::Cancel;
use crate::errors::Error;

/// Links between checks of the cancel flag.
const CANCEL_EVERY: usize = 4096;

pub struct Rings<'a> {
    read: ReadFn<'a>,
    words: Words,
    cancel: &'a Cancel,
    /// What the objects are, for messages ("task", "module").
    noun: &'static str,
    max_objects: usize,
    max_steps: usize,
    steps: usize,
    seen: HashSet<u64>,
    /// Every object found, in the order first found.
    pub order: Vec<u64>,
    /// Why a walk did not come back to its head, each said once.
    pub problems: Vec<String>,
}

impl<'a> Rings<'a> {
    pub fn new(
        read: ReadFn<'a>,
        words: Words,
        cancel: &'a Cancel,
        noun: &'static str,
        max_objects: usize,
        max_steps: usize,
    ) -> Rings<'a> {
        Rings {
            read,
            words,
            cancel,
            noun,
            max_objects,
            max_steps,
            steps: 0,
            seen: HashSet::new(),
            order: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub fn problem(&mut self, text: String) {
        if !self.problems.contains(&text) {
            self.problems.push(text);
        }
    }

    fn step(&mut self) -> Result<bool, Error> {
        self.steps = self.steps.saturating_add(1);
        if self.steps % CANCEL_EVERY == 0 {
            self.cancel.check()?;
        }
        if self.steps > self.max_steps {
            self.problem(format!("walk stopped after {} links", self.max_steps));
            return Ok(false);
        }
        Ok(true)
    }

    /// Walks the ring whose head is at `head` through the `next` pointer at `next_off` in
    /// each node and, when that does not come back and `prev_off` is given, through `prev`
    /// as well. Returns whether it was whole.
    pub fn ring(
        &mut self,
        head: u64,
        node_off: u64,
        next_off: u64,
        prev_off: Option<u64>,
        what: &str,
    ) -> Result<bool, Error> {
        if self.direction(head, node_off, next_off, what)? {
            return Ok(true);
        }
        if let Some(prev_off) = prev_off {
            self.direction(head, node_off, prev_off, what)?;
        }
        Ok(false)
    }

    fn direction(
        &mut self,
        head: u64,
        node_off: u64,
        link: u64,
        what: &str,
    ) -> Result<bool, Error> {
        // Brent: `tortoise` jumps to the current node at each power of two.
        let (mut tortoise, mut power, mut lam) = (head, 1usize, 0usize);
        let mut node = head;
        loop {
            if !self.step()? {
                return Ok(false);
            }
            let at = node.saturating_add(link);
            let next = match self.words.read_long(self.read, at) {
                Ok(next) => next,
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(error) => {
                    let whose = if node == head {
                        "its head".to_owned()
                    } else {
                        format!("{} {:#x}", self.noun, node.wrapping_sub(node_off))
                    };
                    // Both directions stop at the same node: say so once.
                    let said = format!("{what}: {whose} is not readable");
                    if !self.problems.iter().any(|p| p.starts_with(&said)) {
                        self.problem(format!("{said} ({})", describe(&error)));
                    }
                    return Ok(false);
                }
            };
            if node != head {
                let object = node.wrapping_sub(node_off);
                if self.seen.len() >= self.max_objects {
                    self.problem(format!("more than {} {}s", self.max_objects, self.noun));
                    return Ok(false);
                }
                if self.seen.insert(object) {
                    self.order.push(object);
                }
            }
            if next == head {
                return Ok(true);
            }
            if next == 0 {
                self.problem(format!("{what}: a null link after {node:#x}"));
                return Ok(false);
            }
            if next == tortoise {
                // Both directions may find the loop, each at its own node: say so once.
                let said = format!("{what} does not come back to its head");
                if !self.problems.iter().any(|p| p.starts_with(&said)) {
                    self.problem(format!("{said} (a loop at {next:#x})"));
                }
                return Ok(false);
            }
            if power == lam {
                tortoise = next;
                power = power.saturating_mul(2);
                lam = 0;
            }
            lam = lam.saturating_add(1);
            node = next;
        }
    }
}
