//! Kernel virtual → physical address translation.

pub mod x86_64;

use crate::formats::Gap;

/// Why an address does not translate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Not a canonical address, or no page maps it.
    NotMapped,
    /// A page table the walk needs is not in the dump (or cut off, or corrupt).
    Table(Gap),
}
