//! The reader on hand-built blobs: every kind, both byte orders, and broken input.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]

use super::*;

/// Builds a BTF blob a record at a time.
struct Builder {
    big_endian: bool,
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Builder {
    fn new(big_endian: bool) -> Builder {
        Builder {
            big_endian,
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    fn u32(&mut self, v: u32) {
        let raw = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.types.extend_from_slice(&raw);
    }

    fn name(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        off
    }

    /// A record; `extra` words follow it.
    fn record(
        &mut self,
        name: &str,
        kind: u32,
        vlen: u32,
        flag: bool,
        size: u32,
        extra: &[u32],
    ) -> u32 {
        let name_off = self.name(name);
        self.u32(name_off);
        self.u32(vlen | kind << 24 | u32::from(flag) << 31);
        self.u32(size);
        for &word in extra {
            self.u32(word);
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn int(&mut self, name: &str, size: u32, signed: bool) -> u32 {
        self.record(
            name,
            1,
            0,
            false,
            size,
            &[(u32::from(signed) << 24) | (size * 8)],
        )
    }

    fn ptr(&mut self, to: u32) -> u32 {
        self.record("", 2, 0, false, to, &[])
    }

    fn array(&mut self, elem: u32, index: u32, count: u32) -> u32 {
        self.record("", 3, 0, false, 0, &[elem, index, count])
    }

    /// `members`: (name, type, bit offset, bitfield size).
    fn compound(
        &mut self,
        kind: u32,
        name: &str,
        size: u32,
        members: &[(&str, u32, u32, u32)],
    ) -> u32 {
        let flag = members.iter().any(|m| m.3 != 0);
        let mut extra = Vec::new();
        for &(member, ty, bits, bitfield) in members {
            extra.push(self.name(member));
            extra.push(ty);
            extra.push(if flag { bitfield << 24 | bits } else { bits });
        }
        self.record(name, kind, members.len() as u32, flag, size, &extra)
    }

    fn modifier(&mut self, kind: u32, name: &str, to: u32) -> u32 {
        self.record(name, kind, 0, false, to, &[])
    }

    fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let word = |v: u32| {
            if self.big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let magic = if self.big_endian {
            MAGIC.to_be_bytes()
        } else {
            MAGIC.to_le_bytes()
        };
        out.extend_from_slice(&magic);
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&word(24));
        out.extend_from_slice(&word(0));
        out.extend_from_slice(&word(self.types.len() as u32));
        out.extend_from_slice(&word(self.types.len() as u32));
        out.extend_from_slice(&word(self.strings.len() as u32));
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// A task_struct-shaped blob with every kind in it. Returns the blob and the task id.
fn sample(big_endian: bool) -> (Vec<u8>, u32) {
    let mut b = Builder::new(big_endian);
    let int = b.int("int", 4, true); // 1
    let uint = b.int("unsigned int", 4, false); // 2
    let char_ = b.int("char", 1, true); // 3
    let long = b.int("long", 8, true); // 4
    let comm = b.array(char_, int, 16); // 5
    let pid_t = b.modifier(8, "pid_t", int); // 6 typedef
    let cpid = b.modifier(10, "", pid_t); // 7 const
    let vlong = b.modifier(9, "", long); // 8 volatile
    let list = b.compound(4, "list_head", 16, &[]); // 9 (members patched below)
    let _ = list;
    let fwd = b.record("cred", 7, 0, false, 0, &[]); // 10 fwd
    let pcred = b.ptr(fwd); // 11
    let inner = b.compound(4, "", 8, &[("on_cpu", int, 0, 0), ("cpu", uint, 32, 0)]); // 12
    let anon_union = b.compound(5, "", 8, &[("", inner, 0, 0), ("other", long, 0, 0)]); // 13
    let restrict = b.modifier(11, "", pcred); // 14
    let tag = b.modifier(18, "user", restrict); // 15 type_tag
    let task = b.compound(
        4,
        "task_struct",
        96,
        &[
            ("state", vlong, 0, 0),
            ("pid", cpid, 64, 0),
            ("tgid", pid_t, 96, 0),
            ("comm", comm, 128, 0),
            ("", anon_union, 256, 0),
            ("cred", tag, 320, 0),
            ("flag_a", uint, 384, 3),
            ("flag_b", uint, 387, 5),
        ],
    ); // 16
    b.record("e", 6, 2, false, 4, &[b"A\0".len() as u32, 0, 0, 1]); // 17 enum
    b.record("e64", 19, 1, false, 8, &[0, 1, 2]); // 18 enum64
    b.record("f", 13, 2, false, int, &[0, int, 0, long]); // 19 func_proto
    b.record("main", 12, 1, false, 19, &[]); // 20 func
    b.record("v", 14, 0, false, int, &[1]); // 21 var
    b.record(".data", 15, 1, false, 4, &[21, 0, 4]); // 22 datasec
    b.record("double", 16, 0, false, 8, &[]); // 23 float
    b.record("tag", 17, 0, false, 21, &[u32::MAX]); // 24 decl_tag
    (b.build(), task)
}

#[test]
fn every_kind_both_byte_orders() {
    for big_endian in [false, true] {
        let (blob, task) = sample(big_endian);
        let btf = Btf::parse(blob).unwrap();
        assert_eq!(btf.big_endian(), big_endian);
        assert_eq!(btf.type_count(), 24);
        assert_eq!(btf.find_struct("task_struct"), Some(task));
        assert_eq!(btf.find_struct("cred"), None, "a Fwd is not a struct");
        assert_eq!(btf.find("cred", |k| k == Kind::Fwd), Some(10));
        assert_eq!(btf.size_of(task, 8), Some(96));
        let pid = btf.member(task, "pid").unwrap();
        assert_eq!(pid.byte_offset(), 8);
        assert_eq!(btf.resolve(pid.type_id), Some(1));
        assert_eq!(btf.size_of(pid.type_id, 8), Some(4));
        assert!(btf.int(pid.type_id).unwrap().signed);
        let state = btf.member(task, "state").unwrap();
        assert_eq!(btf.int(state.type_id).unwrap().size, 8);
        let comm = btf.member(task, "comm").unwrap();
        assert_eq!(comm.byte_offset(), 16);
        let array = btf.array(comm.type_id).unwrap();
        assert_eq!((array.elem_type, array.count), (3, 16));
        assert_eq!(btf.size_of(comm.type_id, 8), Some(16));
        // Nested anonymous union -> anonymous struct.
        assert_eq!(btf.member(task, "on_cpu").unwrap().byte_offset(), 32);
        assert_eq!(btf.member(task, "cpu").unwrap().byte_offset(), 36);
        assert_eq!(btf.member(task, "other").unwrap().byte_offset(), 32);
        assert_eq!(btf.offset_of(task, "cpu").unwrap().0, 36);
        // Pointer through a type_tag and restrict.
        let cred = btf.member(task, "cred").unwrap();
        assert_eq!(btf.kind(cred.type_id), Some(Kind::Ptr));
        assert_eq!(btf.pointee(cred.type_id), Some(10));
        assert_eq!(btf.size_of(cred.type_id, 4), Some(4));
        // Bitfields.
        let b = btf.member(task, "flag_b").unwrap();
        assert_eq!((b.bit_offset, b.bitfield_size), (387, 5));
        assert_eq!(
            btf.offset_of(task, "flag_b"),
            None,
            "a bitfield has no byte offset"
        );
        assert_eq!(btf.member(task, "absent"), None);
        assert_eq!(btf.name(task), Some(&b"task_struct"[..]));
        assert_eq!(btf.kind(20), Some(Kind::Func));
        assert_eq!(btf.kind(24), Some(Kind::DeclTag));
        assert_eq!(btf.size_of(20, 8), None);
        assert_eq!(btf.size_of(23, 8), Some(8));
        assert_eq!(btf.get(0), None);
        assert_eq!(btf.get(25), None);
        assert_eq!(btf.kind(0), Some(Kind::Void));
    }
}

#[test]
fn header_errors() {
    assert_eq!(Btf::parse(Vec::new()).unwrap_err(), BtfError::NoMagic);
    assert_eq!(Btf::parse(vec![0; 4096]).unwrap_err(), BtfError::NoMagic);
    let (blob, _) = sample(false);
    for cut in [2, 3, 10, 23] {
        assert!(matches!(
            Btf::parse(blob[..cut].to_vec()),
            Err(BtfError::Invalid(_))
        ));
    }
    // Every cut inside the sections: an error, never a panic.
    for cut in 24..blob.len() {
        assert!(Btf::parse(blob[..cut].to_vec()).is_err(), "cut at {cut}");
    }
    let mut version = blob.clone();
    version[2] = 2;
    assert_eq!(
        Btf::parse(version).unwrap_err(),
        BtfError::Invalid("version 2".into())
    );
    // Sections claiming far more than is there.
    for field in [4usize, 8, 12, 16, 20] {
        let mut bad = blob.clone();
        bad[field..field + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Btf::parse(bad).is_err(), "field at {field}");
    }
    let mut unaligned = blob.clone();
    unaligned[8..12].copy_from_slice(&1u32.to_le_bytes());
    assert!(Btf::parse(unaligned).is_err());
}

#[test]
fn absurd_vlen_and_unknown_kind() {
    let mut b = Builder::new(false);
    b.record("s", 4, 0xffff, false, 8, &[]);
    let err = Btf::parse(b.build()).unwrap_err();
    assert!(
        err.to_string().contains("ends past the type section"),
        "{err}"
    );
    let mut b = Builder::new(false);
    b.record("k", 31, 0, false, 0, &[]);
    assert_eq!(
        Btf::parse(b.build()).unwrap_err(),
        BtfError::Invalid("type 1 has unknown kind 31".into())
    );
    let mut b = Builder::new(false);
    b.record("v", 0, 0, false, 0, &[]);
    assert!(Btf::parse(b.build()).is_err(), "kind 0 is no record");
}

#[test]
fn cycles_and_dangling_ids_end() {
    let mut b = Builder::new(false);
    let a = b.modifier(8, "a", 2); // typedef a -> b
    let c = b.modifier(10, "", 1); // const -> a
    let s = b.compound(4, "self", 8, &[("", 3, 0, 0)]); // anonymous member of itself
    let arr = b.array(4, 0, 2); // array of itself
    let dangling = b.modifier(8, "d", 999);
    let btf = Btf::parse(b.build()).unwrap();
    assert_eq!(btf.resolve(a), None);
    assert_eq!(btf.resolve(c), None);
    assert_eq!(btf.size_of(a, 8), None);
    assert_eq!(btf.member(s, "x"), None);
    assert_eq!(btf.size_of(arr, 8), None);
    assert_eq!(btf.array(arr).unwrap().elem_type, arr);
    assert_eq!(btf.resolve(dangling), None);
    assert_eq!(btf.kind(dangling), None);
    assert_eq!(btf.members(dangling), Vec::new());
}

#[test]
fn a_wide_anonymous_dag_is_bounded() {
    // Each level has 0xffff anonymous members of the next: 65535^depth paths unbounded.
    let mut b = Builder::new(false);
    let int = b.int("int", 4, true);
    let mut below = b.compound(4, "", 4, &[("leaf", int, 0, 0)]);
    for _ in 0..MAX_DEPTH {
        let members: Vec<(&str, u32, u32, u32)> = (0..0xffff).map(|_| ("", below, 0, 0)).collect();
        below = b.compound(4, "", 4, &members);
    }
    let btf = Btf::parse(b.build()).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(btf.member(below, "absent"), None);
    assert!(started.elapsed().as_secs() < 5);
}

#[test]
fn strings_are_bounded() {
    let mut b = Builder::new(false);
    let id = b.int("int", 4, true);
    let mut blob = b.build();
    // Drop the string section's terminator: the name no longer ends.
    blob.pop();
    let len = blob.len() as u32 - 24 - 16;
    blob[20..24].copy_from_slice(&len.to_le_bytes());
    let btf = Btf::parse(blob).unwrap();
    assert_eq!(btf.name(id), None);
    assert_eq!(btf.string(u32::MAX), None);
    assert!(!btf.name_is(u32::MAX, b"x"));
}

#[test]
fn enumerators_and_structs_found_by_members() {
    for big_endian in [false, true] {
        let mut b = Builder::new(big_endian);
        let int = b.int("int", 4, true); // 1
        let (live, going) = (b.name("MODULE_STATE_LIVE"), b.name("MODULE_STATE_GOING"));
        let state = b.record("module_state", 6, 2, false, 4, &[live, 0, going, 2]); // 2
        let neg = b.name("PANIC_CPU_INVALID");
        let signed = b.record("", 6, 1, true, 4, &[neg, u32::MAX]); // 3
        let big = b.name("BIG");
        let wide = b.record("wide", 19, 1, false, 8, &[big, 1, 2]); // 4
        let seq = b.compound(4, "", 8, &[("seq", int, 0, 0), ("timekeeper", int, 64, 0)]); // 5
        let named = b.compound(
            4,
            "tk_data",
            8,
            &[("seq", int, 0, 0), ("timekeeper", int, 64, 0)],
        );
        let btf = Btf::parse(b.build()).unwrap();
        assert_eq!(btf.enumerator("MODULE_STATE_GOING"), Some(2));
        assert_eq!(btf.enumerator("PANIC_CPU_INVALID"), Some(-1));
        assert_eq!(btf.enumerator("BIG"), Some(0x2_0000_0001));
        assert_eq!(btf.enumerator("NOPE"), None);
        assert_eq!(
            btf.enumerator_name(state, 0),
            Some(&b"MODULE_STATE_LIVE"[..])
        );
        assert_eq!(btf.enumerator_name(state, 1), None);
        assert_eq!(btf.enumerators(signed).len(), 1);
        assert_eq!(btf.enumerators(wide).len(), 1);
        assert!(btf.enumerators(int).is_empty());
        assert_eq!(btf.find_struct_with("", &["seq", "timekeeper"]), Some(seq));
        assert_eq!(
            btf.find_struct_with("tk_data", &["timekeeper"]),
            Some(named)
        );
        assert_eq!(btf.find_struct_with("", &["seq", "nothing"]), None);
    }
}
