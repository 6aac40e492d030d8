//! `/dev/mem`: the live machine's physical memory, read with `pread` at the physical address.

use std::sync::Arc;

use super::vmcoreinfo::VmcoreInfo;
use super::{host_page_size, read_pieces, Address, Core, CoreFormat, FormatFacts, Gap, Stop};
use crate::mapping::Medium;

pub struct DevMem {
    medium: Arc<dyn Medium>,
}

pub fn open(medium: Arc<dyn Medium>) -> Core {
    Core {
        format: "devmem",
        compression: None,
        machine: Some(std::env::consts::ARCH.to_owned()),
        vmcoreinfo: VmcoreInfo::default(),
        vmcoreinfo_source: None,
        page_size: Some(host_page_size()),
        header_release: None,
        truncated: false,
        incomplete: false,
        live: true,
        big_endian: cfg!(target_endian = "big"),
        writable: true,
        body: Box::new(DevMem { medium }),
    }
}

impl CoreFormat for DevMem {
    fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), Stop> {
        read_pieces(paddr, buf, |at, rest| {
            let bytes = self
                .medium
                .bytes_at(at, rest.len())
                .map_err(|_| (0, Gap::NotInDump))?;
            rest.get_mut(..bytes.len())
                .unwrap_or(&mut [])
                .copy_from_slice(&bytes);
            Ok(bytes.len())
        })
    }

    fn write_extent(&self, addr: Address, want: usize) -> Result<(u64, usize), Gap> {
        match addr {
            Address::Physical(pa) => Ok((pa, want)),
            Address::Virtual(_) => Err(Gap::NotInDump),
        }
    }

    fn facts(&self) -> FormatFacts {
        FormatFacts {
            parts: 1,
            ..FormatFacts::default()
        }
    }
}
