//! VMCOREINFO: the `KEY=value` text the kernel publishes for dump tools.
//!
//! Each key family has its own base: `SYMBOL(...)`, `KERNELOFFSET` and `BUILD-ID` are hex
//! without `0x`; `NUMBER(...)` is signed decimal (or `0x` hex); `PAGESIZE`, `SIZE(...)`,
//! `OFFSET(...)` and `LENGTH(...)` are decimal.

/// The raw lines, in the order the kernel wrote them (order matters for error reports).
#[derive(Debug, Clone, Default)]
pub struct VmcoreInfo {
    entries: Vec<(String, String)>,
}

/// More text than any kernel writes (the kernel's buffer is one page); bounds hostile input.
pub const MAX_VMCOREINFO: usize = 1 << 20;

impl VmcoreInfo {
    pub fn parse(text: &[u8]) -> VmcoreInfo {
        let text = text.split(|&b| b == 0).next().unwrap_or(&[]);
        let entries = String::from_utf8_lossy(text)
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once('=')?;
                let key = key.trim();
                (!key.is_empty()).then(|| (key.to_owned(), value.trim().to_owned()))
            })
            .collect();
        VmcoreInfo { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds the keys of `other` that this one lacks (the second source of VMCOREINFO).
    pub fn merge(&mut self, other: VmcoreInfo) {
        for (key, value) in other.entries {
            if self.get(&key).is_none() {
                self.entries.push((key, value));
            }
        }
    }

    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn osrelease(&self) -> Option<&str> {
        self.get("OSRELEASE")
    }

    pub fn build_id(&self) -> Option<&str> {
        self.get("BUILD-ID")
    }

    pub fn page_size(&self) -> Option<u64> {
        self.get("PAGESIZE")?.parse().ok()
    }

    pub fn kernel_offset(&self) -> Option<u64> {
        parse_hex(self.get("KERNELOFFSET")?)
    }

    pub fn symbol(&self, name: &str) -> Option<u64> {
        parse_hex(self.get(&format!("SYMBOL({name})"))?)
    }

    pub fn number(&self, name: &str) -> Option<i64> {
        parse_number(self.get(&format!("NUMBER({name})"))?)
    }

    /// `SYMBOL(name)` lines with their values, in file order.
    pub fn symbols(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().filter_map(|(key, value)| {
            let name = key.strip_prefix("SYMBOL(")?.strip_suffix(')')?;
            Some((name, parse_hex(value)?))
        })
    }
}

pub fn parse_hex(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(digits, 16).ok()
}

/// NUMBER() values: signed decimal as the kernel prints `%ld`, or `0x` hex.
pub fn parse_number(text: &str) -> Option<i64> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let magnitude = match body.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()? as i64,
        None => body.parse::<i64>().ok()?,
    };
    Some(if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_per_key_family() {
        let info = VmcoreInfo::parse(
            b"OSRELEASE=6.1.0\nPAGESIZE=4096\nKERNELOFFSET=27400000\n\
              SYMBOL(_stext)=ffffffffa8400000\nNUMBER(phys_base)=-511705088\n\
              NUMBER(sme_mask)=0x10\n\0garbage",
        );
        assert_eq!(info.osrelease(), Some("6.1.0"));
        assert_eq!(info.page_size(), Some(4096));
        assert_eq!(info.kernel_offset(), Some(0x2740_0000));
        assert_eq!(info.symbol("_stext"), Some(0xffff_ffff_a840_0000));
        assert_eq!(info.number("phys_base"), Some(-511_705_088));
        assert_eq!(info.number("sme_mask"), Some(16));
        assert_eq!(info.entries().len(), 6);
    }

    #[test]
    fn merge_keeps_first_source() {
        let mut a = VmcoreInfo::parse(b"A=1\n");
        a.merge(VmcoreInfo::parse(b"A=2\nB=3\n"));
        assert_eq!(a.get("A"), Some("1"));
        assert_eq!(a.get("B"), Some("3"));
    }
}
