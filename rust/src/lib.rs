//! kvm_rs: BSD libkvm (`kvm_open`, `kvm_nlist`, `kvm_read`, ...) for Linux kernels: symbol
//! tables from vmlinux, System.map or kallsyms; memory from crash dumps or the live kernel.
//!
//! The core (everything but `bindings`, behind the `python` feature) knows nothing of Python
//! and returns typed errors whose `Display` is the libkvm message.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod btf;
pub mod cache;
pub mod cancel;
pub mod errors;
pub mod formats;
pub mod identity;
pub mod kernel;
pub mod mapping;
pub mod parallel;
pub mod scan;
pub mod session;
pub mod symbols;
pub mod translate;

#[cfg(feature = "python")]
mod bindings;
