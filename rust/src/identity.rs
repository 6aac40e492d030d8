//! Does the exec file describe the kernel in the core file? (SPEC §6.) Each check runs where
//! both sides carry the fact; the first disagreement is the error.

use std::collections::HashMap;

use crate::errors::Error;
use crate::formats::Core;
use crate::symbols::{ExecFile, Symbol};
use crate::translate::Machine;

/// Names the checks and the relocation need from the exec file, besides VMCOREINFO's and
/// the machine's page-table root.
pub const FIXED_NAMES: [&str; 4] = ["_text", "_stext", "_end", "linux_banner"];

/// Releases whose VMCOREINFO BUILD-ID is known to be garbage (upstream stable ranges).
fn build_id_is_garbage(version: (u32, u32, u32)) -> bool {
    match version {
        (6, 1, p) => (113..=118).contains(&p),
        (6, 6, p) => (55..=62).contains(&p),
        (6, 10, p) => p >= 14,
        (6, 11, p) => (3..=9).contains(&p),
        (5, 15, p) => p >= 168,
        _ => false,
    }
}

/// `6.1.113-foo` → (6, 1, 113).
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// The release in a `linux_banner` ("Linux version 6.1.0-56-amd64 (...) ...") and, where the
/// distribution names its upstream version ("... Debian 6.1.192-2 ..."), that version.
fn banner_facts(banner: &[u8]) -> (Option<String>, Option<(u32, u32, u32)>) {
    let end = banner
        .iter()
        .position(|&b| b == 0 || b == b'\n')
        .unwrap_or(banner.len());
    let text = String::from_utf8_lossy(banner.get(..end).unwrap_or(&[])).into_owned();
    let release = text
        .strip_prefix("Linux version ")
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned);
    let distro = text
        .split_whitespace()
        .skip_while(|w| *w != "Debian")
        .nth(1)
        .and_then(parse_version);
    (release, distro)
}

pub struct Identity {
    /// Link-time symbols of the exec file that open looked up.
    pub symbols: HashMap<String, Symbol>,
    /// The KASLR displacement added to link-time symbols in the image.
    pub kernel_offset: u64,
    /// Nothing but `_stext` was compared: the dump's kallsyms must settle it (SPEC §6).
    pub thin: bool,
}

fn mismatch(
    exec: &ExecFile,
    core_path: &[u8],
    field: &str,
    exec_value: String,
    core_value: String,
) -> Error {
    Error::Mismatch {
        exec: exec.path.clone(),
        core: core_path.to_vec(),
        field: field.to_owned(),
        exec_value,
        core_value,
    }
}

/// Looks up what the checks need and runs them; returns the relocation to apply.
pub fn check(exec: &ExecFile, core: &Core, core_path: &[u8]) -> Result<Identity, Error> {
    let info = &core.vmcoreinfo;
    let machine = core.machine_record();
    let mut names: Vec<&str> = FIXED_NAMES.to_vec();
    names.extend(machine.map_or(&[][..], |m| m.root_symbols));
    names.extend(info.symbols().map(|(name, _)| name));
    let symbols = exec.lookup_few(&names);
    let link_time = exec.format.is_link_time();

    if let (Some(exec_machine), Some(core_machine)) = (exec.facts.machine, core.machine.as_deref())
    {
        if exec_machine != core_machine {
            return Err(mismatch(
                exec,
                core_path,
                "machine",
                exec_machine.into(),
                core_machine.into(),
            ));
        }
    }

    // Build-id and release tie the exec to one build; SYMBOL() values may coincide.
    let mut strong = false;
    let banner = symbols
        .get("linux_banner")
        .and_then(|s| exec.image_bytes(s.value, 512));
    let (banner_release, distro_version) = banner.map(banner_facts).unwrap_or((None, None));
    let core_release = info.osrelease().or(core.header_release.as_deref());

    if let (Some(exec_id), Some(core_id)) = (exec.facts.build_id.as_deref(), info.build_id()) {
        let garbage = core_release
            .and_then(parse_version)
            .is_some_and(build_id_is_garbage)
            || distro_version.is_some_and(build_id_is_garbage);
        strong |= !garbage;
        if !garbage && !exec_id.eq_ignore_ascii_case(core_id.trim()) {
            return Err(mismatch(
                exec,
                core_path,
                "build-id",
                exec_id.into(),
                core_id.into(),
            ));
        }
    }

    if let (Some(exec_release), Some(core_release)) = (banner_release, core_release) {
        if exec_release != core_release {
            return Err(mismatch(
                exec,
                core_path,
                "release",
                exec_release,
                core_release.into(),
            ));
        }
        strong = true;
    }

    let kernel_offset = match info.kernel_offset() {
        Some(offset) => offset,
        None => match (link_time, info.symbol("_stext"), symbols.get("_stext")) {
            (true, Some(runtime), Some(linked)) => runtime.wrapping_sub(linked.value),
            _ => 0,
        },
    };
    let mut identity = Identity {
        symbols,
        kernel_offset,
        thin: false,
    };
    let mut compared: Vec<&str> = Vec::new();

    let runtime_image = identity
        .image_range()
        .map(|(lo, hi)| lo.wrapping_add(kernel_offset)..hi.wrapping_add(kernel_offset));
    for (name, core_value) in info.symbols() {
        let Some(sym) = identity.symbols.get(name) else {
            continue;
        };
        let in_image = match machine {
            Some(machine) => machine.in_image(core_value, runtime_image.as_ref()),
            None => runtime_image
                .as_ref()
                .is_some_and(|range| range.contains(&core_value)),
        };
        if !in_image {
            continue;
        }
        let exec_value = identity.relocate(sym.value, link_time);
        if exec_value != core_value {
            return Err(mismatch(
                exec,
                core_path,
                &format!("SYMBOL({name})"),
                format!("{exec_value:#x}"),
                format!("{core_value:#x}"),
            ));
        }
        compared.push(name);
    }
    identity.thin = !strong && compared.iter().all(|name| *name == "_stext");
    Ok(identity)
}

impl Identity {
    /// The identity of a dump that is its own symbol source (CORE_SYMBOLS).
    pub fn of_core(core: &Core) -> Identity {
        Identity {
            symbols: HashMap::new(),
            kernel_offset: core.vmcoreinfo.kernel_offset().unwrap_or(0),
            thin: false,
        }
    }

    /// The runtime address of the machine's page-table root, where the exec file names it.
    pub fn root_table(&self, machine: &Machine, link_time: bool) -> Option<u64> {
        machine
            .root_symbols
            .iter()
            .find_map(|name| self.symbols.get(*name))
            .map(|sym| self.relocate(sym.value, link_time))
    }

    /// Runtime `[_text, _end)`, where the exec file defines both.
    pub fn runtime_image(&self, link_time: bool) -> Option<std::ops::Range<u64>> {
        let (lo, hi) = self.image_range()?;
        let offset = if link_time { self.kernel_offset } else { 0 };
        Some(lo.wrapping_add(offset)..hi.wrapping_add(offset))
    }

    /// Link-time `[_text, _end)`, where the exec file defines both.
    pub fn image_range(&self) -> Option<(u64, u64)> {
        Some((
            self.symbols.get("_text")?.value,
            self.symbols.get("_end")?.value,
        ))
    }

    /// The runtime value of a symbol: link-time values inside the image move by the KASLR
    /// offset; kallsyms values are runtime values already.
    pub fn relocate(&self, value: u64, link_time: bool) -> u64 {
        if !link_time || self.kernel_offset == 0 {
            return value;
        }
        match self.image_range() {
            Some((lo, hi)) if (lo..hi).contains(&value) => value.wrapping_add(self.kernel_offset),
            _ => value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_build_id_ranges() {
        assert!(build_id_is_garbage(
            parse_version("6.1.115-1").unwrap_or_default()
        ));
        assert!(!build_id_is_garbage(
            parse_version("6.1.0-56-amd64").unwrap_or_default()
        ));
        assert!(build_id_is_garbage((5, 15, 200)));
        assert!(!build_id_is_garbage((6, 11, 10)));
    }

    #[test]
    fn banner_release_and_distro_version() {
        let banner = b"Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP Debian 6.1.192-2 (2025)\n\0";
        let (release, distro) = banner_facts(banner);
        assert_eq!(release.as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(distro, Some((6, 1, 192)));
    }
}
