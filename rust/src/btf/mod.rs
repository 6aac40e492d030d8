//! BTF, the kernel's compact type format (`include/uapi/linux/btf.h`): the types a triage
//! needs (task_struct's layout and friends) with no DWARF. The data comes from the dump's
//! `__start_BTF`..`__stop_BTF` or a vmlinux's `.BTF` section.
//!
//! Layout: a header (magic 0xeB9F in the writer's byte order, version 1, `hdr_len`, then the
//! type and string sections as offsets and lengths after the header), then `btf_type`
//! records (name offset, info = vlen | kind << 24 | kind_flag << 31, size or type), each
//! followed by kind-specific data. Type ids count from 1 in record order; 0 is `void`.
//!
//! Every length in the data is a claim: the header's sections must lie in the bytes given,
//! every record's data in the type section. `parse` makes one bounded pass that records
//! where each type starts (at most one u32 per 12 bytes of input); lookups walk chains and
//! nested members with a depth and a step budget, so no input panics, hangs or allocates
//! beyond its own size.

#![deny(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]

use std::fmt;

use crate::formats::Fields;

pub const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
/// Bytes of every `btf_type` record before its kind-specific data.
const RECORD: usize = 12;
/// The kernel's own limit on type ids (`BTF_MAX_TYPE`).
pub const MAX_TYPES: usize = 0x000f_ffff;
/// The longest chain of typedef/const/volatile/restrict/type_tag followed, and the deepest
/// nesting of anonymous members or arrays searched (real kernels need a handful).
pub const MAX_DEPTH: usize = 32;
/// Members visited by one member lookup, nested anonymous ones included.
const MAX_STEPS: usize = 1 << 20;
/// The longest name read from the string section (kallsyms keeps 512 bytes).
const MAX_NAME: usize = 4096;

/// Why BTF data was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtfError {
    /// Not BTF at all: the magic is missing (zeroed pages, a kernel without BTF).
    NoMagic,
    /// BTF whose header or records do not fit the data, or hold values no writer writes.
    Invalid(String),
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BtfError::NoMagic => f.write_str("no BTF magic"),
            BtfError::Invalid(what) => write!(f, "invalid BTF: {what}"),
        }
    }
}

fn invalid(what: impl Into<String>) -> BtfError {
    BtfError::Invalid(what.into())
}

/// `BTF_KIND_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Void,
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(raw: u32) -> Option<Kind> {
        Some(match raw {
            0 => Kind::Void,
            1 => Kind::Int,
            2 => Kind::Ptr,
            3 => Kind::Array,
            4 => Kind::Struct,
            5 => Kind::Union,
            6 => Kind::Enum,
            7 => Kind::Fwd,
            8 => Kind::Typedef,
            9 => Kind::Volatile,
            10 => Kind::Const,
            11 => Kind::Restrict,
            12 => Kind::Func,
            13 => Kind::FuncProto,
            14 => Kind::Var,
            15 => Kind::Datasec,
            16 => Kind::Float,
            17 => Kind::DeclTag,
            18 => Kind::TypeTag,
            19 => Kind::Enum64,
            _ => return None,
        })
    }

    /// Bytes of kind-specific data after the record, for `vlen` entries.
    fn extra(self, vlen: usize) -> usize {
        // vlen < 2^16: the products fit any usize.
        let per = |size: usize| vlen.saturating_mul(size);
        match self {
            Kind::Int | Kind::Var | Kind::DeclTag => 4,
            Kind::Array => 12,
            Kind::Struct | Kind::Union | Kind::Datasec | Kind::Enum64 => per(12),
            Kind::Enum | Kind::FuncProto => per(8),
            Kind::Void
            | Kind::Ptr
            | Kind::Fwd
            | Kind::Typedef
            | Kind::Volatile
            | Kind::Const
            | Kind::Restrict
            | Kind::Func
            | Kind::Float
            | Kind::TypeTag => 0,
        }
    }

    /// Kinds that only qualify or rename another type.
    fn is_modifier(self) -> bool {
        matches!(
            self,
            Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag
        )
    }
}

/// One type record as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Type {
    pub id: u32,
    pub kind: Kind,
    pub name_off: u32,
    pub vlen: u16,
    pub kind_flag: bool,
    /// `size` for ints, structs, unions, enums, floats, datasecs; the referred type id for
    /// pointers, modifiers, functions, variables and tags.
    pub size_or_type: u32,
    /// Where the kind-specific data starts, in the type section.
    extra: usize,
}

/// A struct or union member, where it lies from the start of the outermost struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub type_id: u32,
    pub bit_offset: u64,
    /// Non-zero for a bitfield.
    pub bitfield_size: u32,
}

impl Member {
    pub fn byte_offset(&self) -> u64 {
        self.bit_offset / 8
    }
}

/// `struct btf_array`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Array {
    pub elem_type: u32,
    pub index_type: u32,
    pub count: u32,
}

/// A `BTF_KIND_INT`'s encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int {
    pub size: u32,
    pub signed: bool,
    pub bits: u32,
    pub bit_offset: u32,
}

pub struct Btf {
    data: Vec<u8>,
    big_endian: bool,
    /// The type section's range in `data`.
    types: (usize, usize),
    /// The string section's range in `data`.
    strings: (usize, usize),
    /// Where each type id's record starts in the type section (`offsets[id - 1]`).
    offsets: Vec<u32>,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("bytes", &self.data.len())
            .field("big_endian", &self.big_endian)
            .field("types", &self.offsets.len())
            .finish()
    }
}

/// Whether `data` starts with the BTF magic in either byte order.
pub fn has_magic(data: &[u8]) -> bool {
    matches!(data.get(..2), Some([0x9f, 0xeb] | [0xeb, 0x9f]))
}

impl Btf {
    /// Validates the header and indexes every type record (one pass, bounded by `data`).
    pub fn parse(data: Vec<u8>) -> Result<Btf, BtfError> {
        let big_endian = match data.get(..2) {
            Some([0x9f, 0xeb]) => false,
            Some([0xeb, 0x9f]) => true,
            _ => return Err(BtfError::NoMagic),
        };
        let f = Fields::new(&data, big_endian);
        let field = |at: usize| {
            f.u32(at)
                .map(|v| v as usize)
                .ok_or_else(|| invalid(format!("header cut short at {} bytes", data.len())))
        };
        let version = data.get(2).copied().unwrap_or(0);
        if version != 1 {
            return Err(invalid(format!("version {version}")));
        }
        let hdr_len = field(4)?;
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            return Err(invalid(format!(
                "header length {hdr_len} (data holds {} bytes)",
                data.len()
            )));
        }
        let section = |off_at: usize, what: &str| -> Result<(usize, usize), BtfError> {
            let (off, len) = (field(off_at)?, field(off_at.saturating_add(4))?);
            let start = hdr_len.checked_add(off);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(start), Some(end)) if end <= data.len() => Ok((start, end)),
                _ => Err(invalid(format!(
                    "{what} section {off:#x}+{len:#x} ends past the data ({:#x} bytes after the header)",
                    data.len().saturating_sub(hdr_len)
                ))),
            }
        };
        let types = section(8, "type")?;
        let strings = section(16, "string")?;
        if types.0 % 4 != 0 {
            return Err(invalid(format!(
                "type section at {:#x} is unaligned",
                types.0
            )));
        }
        let mut btf = Btf {
            data: Vec::new(),
            big_endian,
            types,
            strings,
            offsets: Vec::new(),
        };
        btf.offsets = btf.index(&data)?;
        btf.data = data;
        Ok(btf)
    }

    fn index(&self, data: &[u8]) -> Result<Vec<u32>, BtfError> {
        let section = data.get(self.types.0..self.types.1).unwrap_or(&[]);
        let f = Fields::new(section, self.big_endian);
        // Every record is at least RECORD bytes: the count is bounded by the section.
        let mut offsets = Vec::with_capacity((section.len() / RECORD).min(MAX_TYPES));
        let mut at = 0usize;
        while at < section.len() {
            let id = offsets.len().saturating_add(1);
            if id > MAX_TYPES {
                return Err(invalid(format!("more than {MAX_TYPES} types")));
            }
            let info = f
                .u32(at.saturating_add(4))
                .filter(|_| at.checked_add(RECORD).is_some_and(|e| e <= section.len()))
                .ok_or_else(|| invalid(format!("type {id} at {at:#x} cut short")))?;
            let raw_kind = (info >> 24) & 0x1f;
            let kind = Kind::from_raw(raw_kind)
                .filter(|k| *k != Kind::Void)
                .ok_or_else(|| invalid(format!("type {id} has unknown kind {raw_kind}")))?;
            let vlen = (info & 0xffff) as usize;
            let end = at
                .checked_add(RECORD)
                .and_then(|e| e.checked_add(kind.extra(vlen)))
                .filter(|&e| e <= section.len())
                .ok_or_else(|| {
                    invalid(format!(
                        "type {id} at {at:#x} ({kind:?}, vlen {vlen}) ends past the type section"
                    ))
                })?;
            offsets.push(u32::try_from(at).map_err(|_| invalid("type section over 4 GiB"))?);
            at = end;
        }
        Ok(offsets)
    }

    pub fn big_endian(&self) -> bool {
        self.big_endian
    }

    /// How many types there are (ids 1..=count).
    pub fn type_count(&self) -> usize {
        self.offsets.len()
    }

    fn section(&self) -> &[u8] {
        self.data.get(self.types.0..self.types.1).unwrap_or(&[])
    }

    fn fields(&self) -> Fields<'_> {
        Fields::new(self.section(), self.big_endian)
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        self.fields().u32(at)
    }

    /// The record of type `id`; None for `void` (0) and ids past the last.
    pub fn get(&self, id: u32) -> Option<Type> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        let at = *self.offsets.get(index)? as usize;
        let info = self.u32_at(at.checked_add(4)?)?;
        Some(Type {
            id,
            kind: Kind::from_raw((info >> 24) & 0x1f)?,
            name_off: self.u32_at(at)?,
            vlen: (info & 0xffff) as u16,
            kind_flag: info >> 31 != 0,
            size_or_type: self.u32_at(at.checked_add(8)?)?,
            extra: at.checked_add(RECORD)?,
        })
    }

    /// The string at `off` in the string section (empty for 0, None when out of range or
    /// unterminated within MAX_NAME bytes).
    pub fn string(&self, off: u32) -> Option<&[u8]> {
        let strings = self.data.get(self.strings.0..self.strings.1)?;
        let rest = strings.get(usize::try_from(off).ok()?..)?;
        let window = rest.get(..MAX_NAME).unwrap_or(rest);
        let len = memchr::memchr(0, window)?;
        rest.get(..len)
    }

    pub fn name(&self, id: u32) -> Option<&[u8]> {
        self.string(self.get(id)?.name_off)
    }

    /// Whether the string at `off` is exactly `name` (no scan past it).
    fn name_is(&self, off: u32, name: &[u8]) -> bool {
        let Some(strings) = self.data.get(self.strings.0..self.strings.1) else {
            return false;
        };
        let Ok(off) = usize::try_from(off) else {
            return false;
        };
        let Some(end) = off.checked_add(name.len()) else {
            return false;
        };
        strings.get(off..end) == Some(name) && strings.get(end) == Some(&0)
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the type they name (0 for void);
    /// None past MAX_DEPTH links (a cycle) or at a dangling id.
    pub fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..=MAX_DEPTH {
            if id == 0 {
                return Some(0);
            }
            let ty = self.get(id)?;
            if !ty.kind.is_modifier() {
                return Some(id);
            }
            id = ty.size_or_type;
        }
        None
    }

    /// The first complete struct or union of that name (a declaration has kind Fwd).
    pub fn find_struct(&self, name: &str) -> Option<u32> {
        self.find(name, |k| matches!(k, Kind::Struct | Kind::Union))
    }

    /// The first type of that name whose kind `want` accepts.
    pub fn find(&self, name: &str, want: impl Fn(Kind) -> bool) -> Option<u32> {
        let name = name.as_bytes();
        (1..=self.offsets.len()).find_map(|id| {
            let id = u32::try_from(id).ok()?;
            let ty = self.get(id)?;
            (want(ty.kind) && self.name_is(ty.name_off, name)).then_some(id)
        })
    }

    /// The members of a struct or union (after resolving modifiers): `(name_off, member)`
    /// with offsets relative to that struct.
    pub fn members(&self, id: u32) -> Vec<(u32, Member)> {
        let Some(ty) = self.resolve(id).and_then(|id| self.get(id)) else {
            return Vec::new();
        };
        if !matches!(ty.kind, Kind::Struct | Kind::Union) {
            return Vec::new();
        }
        (0..usize::from(ty.vlen))
            .filter_map(|i| {
                let at = ty.extra.checked_add(i.checked_mul(12)?)?;
                let name_off = self.u32_at(at)?;
                let type_id = self.u32_at(at.checked_add(4)?)?;
                let offset = self.u32_at(at.checked_add(8)?)?;
                let (bit_offset, bitfield_size) = if ty.kind_flag {
                    (offset & 0x00ff_ffff, offset >> 24)
                } else {
                    (offset, 0)
                };
                Some((
                    name_off,
                    Member {
                        type_id,
                        bit_offset: u64::from(bit_offset),
                        bitfield_size,
                    },
                ))
            })
            .collect()
    }

    /// The member `name` of struct/union `id`, searching nested anonymous structs and unions
    /// too (task_struct keeps fields in some); its offset counts from the start of `id`.
    pub fn member(&self, id: u32, name: &str) -> Option<Member> {
        let mut steps = 0usize;
        self.member_in(id, name.as_bytes(), 0, &mut steps)
    }

    fn member_in(&self, id: u32, name: &[u8], depth: usize, steps: &mut usize) -> Option<Member> {
        if depth > MAX_DEPTH || *steps > MAX_STEPS {
            return None;
        }
        let members = self.members(id);
        // Named members first: the field a struct declares itself wins over one nested.
        for (name_off, member) in &members {
            *steps = steps.saturating_add(1);
            if *steps > MAX_STEPS {
                return None;
            }
            if *name_off != 0 && self.name_is(*name_off, name) {
                return Some(*member);
            }
        }
        for (name_off, member) in &members {
            if *steps > MAX_STEPS {
                return None;
            }
            if *name_off != 0 {
                continue;
            }
            // Every anonymous member costs a step too: a wide DAG of them ends.
            *steps = steps.saturating_add(1);
            let Some(nested) = self.member_in(member.type_id, name, depth.saturating_add(1), steps)
            else {
                continue;
            };
            return Some(Member {
                bit_offset: member.bit_offset.checked_add(nested.bit_offset)?,
                ..nested
            });
        }
        None
    }

    /// Byte offset of a dotted member path (`"thread_info.cpu"`, `"uid.val"`) in `id`.
    pub fn offset_of(&self, id: u32, path: &str) -> Option<(u64, Member)> {
        let mut offset = 0u64;
        let mut here = id;
        let mut last = None;
        for part in path.split('.') {
            let member = self.member(here, part)?;
            if member.bit_offset % 8 != 0 || member.bitfield_size != 0 {
                return None;
            }
            offset = offset.checked_add(member.byte_offset())?;
            here = member.type_id;
            last = Some(member);
        }
        Some((offset, last?))
    }

    pub fn array(&self, id: u32) -> Option<Array> {
        let ty = self.get(self.resolve(id)?)?;
        if ty.kind != Kind::Array {
            return None;
        }
        Some(Array {
            elem_type: self.u32_at(ty.extra)?,
            index_type: self.u32_at(ty.extra.checked_add(4)?)?,
            count: self.u32_at(ty.extra.checked_add(8)?)?,
        })
    }

    pub fn int(&self, id: u32) -> Option<Int> {
        let ty = self.get(self.resolve(id)?)?;
        if ty.kind != Kind::Int {
            return None;
        }
        let encoding = self.u32_at(ty.extra)?;
        Some(Int {
            size: ty.size_or_type,
            signed: (encoding >> 24) & 1 != 0,
            bits: encoding & 0xff,
            bit_offset: (encoding >> 16) & 0xff,
        })
    }

    /// The type a pointer points to (after resolving modifiers on the pointer itself).
    pub fn pointee(&self, id: u32) -> Option<u32> {
        let ty = self.get(self.resolve(id)?)?;
        (ty.kind == Kind::Ptr).then_some(ty.size_or_type)
    }

    /// The size in bytes of a value of type `id` (`pointer_size` for pointers); None for
    /// void, functions and types with no size.
    pub fn size_of(&self, id: u32, pointer_size: u64) -> Option<u64> {
        let mut id = id;
        let mut factor = 1u64;
        for _ in 0..=MAX_DEPTH {
            let ty = self.get(self.resolve(id)?)?;
            let size = match ty.kind {
                Kind::Int
                | Kind::Struct
                | Kind::Union
                | Kind::Enum
                | Kind::Enum64
                | Kind::Float
                | Kind::Datasec => u64::from(ty.size_or_type),
                Kind::Ptr => pointer_size,
                Kind::Array => {
                    let array = self.array(ty.id)?;
                    factor = factor.checked_mul(u64::from(array.count))?;
                    id = array.elem_type;
                    continue;
                }
                _ => return None,
            };
            return factor.checked_mul(size);
        }
        None
    }

    /// The enumerators of an enum (`Enum` or `Enum64`, after resolving modifiers):
    /// `(name_off, value)`, signed where the enum says so (`kind_flag`).
    pub fn enumerators(&self, id: u32) -> Vec<(u32, i64)> {
        let Some(ty) = self.resolve(id).and_then(|id| self.get(id)) else {
            return Vec::new();
        };
        let wide = match ty.kind {
            Kind::Enum => false,
            Kind::Enum64 => true,
            _ => return Vec::new(),
        };
        let per = if wide { 12 } else { 8 };
        (0..usize::from(ty.vlen))
            .filter_map(|i| {
                let at = ty.extra.checked_add(i.checked_mul(per)?)?;
                let name_off = self.u32_at(at)?;
                let low = self.u32_at(at.checked_add(4)?)?;
                let value = if wide {
                    let high = self.u32_at(at.checked_add(8)?)?;
                    let raw = u64::from(high) << 32 | u64::from(low);
                    i64::from_ne_bytes(raw.to_ne_bytes())
                } else if ty.kind_flag {
                    i64::from(i32::from_ne_bytes(low.to_ne_bytes()))
                } else {
                    i64::from(low)
                };
                Some((name_off, value))
            })
            .collect()
    }

    /// The value of the enumerator `name`, in the first enum that has one.
    pub fn enumerator(&self, name: &str) -> Option<i64> {
        let name = name.as_bytes();
        (1..=self.offsets.len()).find_map(|id| {
            let id = u32::try_from(id).ok()?;
            let ty = self.get(id)?;
            if !matches!(ty.kind, Kind::Enum | Kind::Enum64) {
                return None;
            }
            self.enumerators(id)
                .into_iter()
                .find(|(off, _)| self.name_is(*off, name))
                .map(|(_, value)| value)
        })
    }

    /// The name of the enumerator of enum `id` whose value is `value`.
    pub fn enumerator_name(&self, id: u32, value: i64) -> Option<&[u8]> {
        let (off, _) = self
            .enumerators(id)
            .into_iter()
            .find(|(_, v)| *v == value)?;
        self.string(off)
    }

    /// The first struct, named `name` or anonymous (`name` empty), that declares every
    /// member of `members` itself: how an anonymous struct (`tk_core`'s) is found.
    pub fn find_struct_with(&self, name: &str, members: &[&str]) -> Option<u32> {
        let name = name.as_bytes();
        (1..=self.offsets.len()).find_map(|id| {
            let id = u32::try_from(id).ok()?;
            let ty = self.get(id)?;
            let named = if name.is_empty() {
                ty.name_off == 0
            } else {
                self.name_is(ty.name_off, name)
            };
            if ty.kind != Kind::Struct || !named || usize::from(ty.vlen) < members.len() {
                return None;
            }
            let declared = self.members(id);
            members
                .iter()
                .all(|m| {
                    declared
                        .iter()
                        .any(|(off, _)| *off != 0 && self.name_is(*off, m.as_bytes()))
                })
                .then_some(id)
        })
    }

    /// The kind of `id` after resolving modifiers.
    pub fn kind(&self, id: u32) -> Option<Kind> {
        let id = self.resolve(id)?;
        if id == 0 {
            return Some(Kind::Void);
        }
        Some(self.get(id)?.kind)
    }
}

#[cfg(test)]
mod tests;
