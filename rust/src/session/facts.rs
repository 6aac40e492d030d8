//! What a handle says about its dump without reading kernel memory (`Kvm.info`), and the
//! extra facts `scan` sorts dumps by.

use super::{Session, Symbols};

/// The facts `Kvm.info` reports.
#[derive(Debug, Clone)]
pub struct Info {
    pub format: &'static str,
    pub compression: Option<String>,
    pub machine: Option<String>,
    pub osrelease: Option<String>,
    pub build_id: Option<String>,
    pub page_size: Option<u64>,
    pub kernel_offset: u64,
    pub pgtable_levels: Option<u8>,
    pub live: bool,
    pub truncated: bool,
    pub incomplete: bool,
    pub vmcoreinfo: Vec<(String, String)>,
    pub vmcoreinfo_source: Option<&'static str>,
    pub exec_format: Option<&'static str>,
    /// A split part's page frames `[start, end)`.
    pub pfn_range: Option<(u64, u64)>,
    /// Files the dump was opened from.
    pub parts: usize,
}

/// Facts of a dump beyond `Info` that a triage pipeline sorts by.
#[derive(Debug, Clone)]
pub struct DumpFacts {
    /// VMCOREINFO `CRASHTIME` (seconds since the epoch).
    pub crash_time: Option<u64>,
    /// makedumpfile's `-d` level.
    pub dump_level: Option<u32>,
    pub dumped_pages: Option<u64>,
}

impl Session {
    pub fn dump_facts(&self) -> Option<DumpFacts> {
        let core = self.core.as_ref()?;
        let facts = core.body.facts();
        Some(DumpFacts {
            crash_time: core
                .vmcoreinfo
                .get("CRASHTIME")
                .and_then(|v| v.parse().ok()),
            dump_level: facts.dump_level,
            dumped_pages: facts.dumped_pages,
        })
    }

    pub fn info(&self) -> Option<Info> {
        let core = self.core.as_ref()?;
        let vmcoreinfo = &core.vmcoreinfo;
        let facts = core.body.facts();
        Some(Info {
            format: core.format,
            compression: core.compression.clone(),
            machine: core.machine.clone(),
            osrelease: vmcoreinfo
                .osrelease()
                .map(str::to_owned)
                .or_else(|| core.header_release.clone()),
            build_id: vmcoreinfo.build_id().map(str::to_owned),
            page_size: core.page_size,
            kernel_offset: self.identity.as_ref().map_or(0, |i| i.kernel_offset),
            pgtable_levels: self.translator.as_ref().map(|t| t.pgtable_levels()),
            live: core.live,
            truncated: core.truncated,
            incomplete: core.incomplete,
            vmcoreinfo: vmcoreinfo
                .entries()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            vmcoreinfo_source: core.vmcoreinfo_source.map(|s| s.name()),
            exec_format: match &self.symbols {
                Symbols::None => None,
                Symbols::File(exec) => Some(exec.format.name()),
                Symbols::Core(_) => Some("kallsyms"),
            },
            pfn_range: facts.pfn_range,
            parts: facts.parts.max(1),
        })
    }
}
