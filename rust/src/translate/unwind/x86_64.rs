//! x86_64: the crash registers in `user_regs_struct` order (r15 … ss, then the segment
//! bases; its first 21 words are `struct pt_regs`), unwound with the kernel's ORC tables as
//! `unwind_orc.c` does: CALL frames, full `pt_regs` (REGS: exceptions, the syscall entry)
//! and iret frames (REGS_PARTIAL: interrupts). Where ORC has no answer (no tables, an
//! address outside them, a broken chain), the rest of the stack is scanned for text
//! addresses, each frame so found marked unreliable, as the kernel's own `?` entries.

use super::orc::{self, Kind, Table, Version};
use super::{
    btf_offset, on_stack, saved_word, Env, RawFrame, SavedLayout, StackGuard, Unwind, MAX_FRAMES,
    PR_REG_64,
};
use crate::btf::Btf;

pub struct X86_64;

/// `user_regs_struct`: 27 words.
const USER_REGS: usize = 27;
/// `struct pt_regs`: the first 21 of them.
const PT_REGS: usize = 21;
const R13: usize = 2;
const BP: usize = 4;
const R10: usize = 7;
const DX: usize = 12;
const DI: usize = 14;
const IP: usize = 16;
const CS: usize = 17;
const SP: usize = 19;
/// An iret frame: the last 5 words of a `pt_regs` (ip, cs, flags, sp, ss).
const IRET_WORDS: usize = 5;
/// The kernel stacks' size and alignment (THREAD_SIZE without KASAN).
const STACK_SIZE: u64 = 16 << 10;
/// Kernel addresses are the upper half.
const KERNEL_START: u64 = 0xffff_8000_0000_0000;

fn is_kernel(addr: u64) -> bool {
    addr >= KERNEL_START
}

fn user_mode(regs: &[u64]) -> bool {
    regs.get(CS).is_some_and(|cs| cs & 3 != 0)
}

/// The unwinder's registers between frames.
struct State {
    ip: u64,
    sp: u64,
    bp: u64,
    /// The last `pt_regs` found (the crash registers first); `full` unless an iret frame.
    regs: Option<Vec<u64>>,
    full: bool,
    /// `ip` is an interrupted pc, not a return address.
    signal: bool,
}

impl State {
    fn reg(&self, index: usize) -> Option<u64> {
        if !self.full {
            return None;
        }
        self.regs.as_ref()?.get(index).copied()
    }
}

/// The kernel's ORC tables and the modules'.
struct Tables {
    kernel: Option<Table>,
    version: Option<Version>,
}

impl Tables {
    fn find(&self, env: &Env<'_>, addr: u64) -> Option<orc::Entry> {
        if let Some(found) = self.kernel.and_then(|t| t.find(env, addr)) {
            return Some(found);
        }
        let module = (env.module)(addr)?;
        let (ip_start, entries, count) = module.orc?;
        let table = Table::module(ip_start, entries, count, self.version?, &module)?;
        table.find(env, addr)
    }
}

/// One ORC step: `Some(true)` moved to the caller, `Some(false)` the end of the stack,
/// None where the tables or the stack do not allow a step.
fn step(env: &Env<'_>, tables: &Tables, state: &mut State, new_indirect: bool) -> Option<bool> {
    let at = if state.signal {
        state.ip
    } else {
        state.ip.checked_sub(1)?
    };
    let entry = tables.find(env, at)?;
    match entry.kind {
        Kind::Undefined => return None,
        Kind::EndOfStack => return Some(false),
        Kind::Call | Kind::Regs | Kind::RegsPartial => {}
    }
    let offset = i64::from(entry.sp_offset);
    let sp = match entry.sp_reg {
        orc::REG_SP => state.sp.checked_add_signed(offset)?,
        orc::REG_BP => state.bp.checked_add_signed(offset)?,
        // Since 5.12 the offset applies after the load (call_on_stack's saved sp).
        orc::REG_SP_INDIRECT if new_indirect => env.u64(state.sp)?.checked_add_signed(offset)?,
        orc::REG_SP_INDIRECT => env.u64(state.sp.checked_add_signed(offset)?)?,
        orc::REG_BP_INDIRECT => env.u64(state.bp.checked_add_signed(offset)?)?,
        orc::REG_R10 => state.reg(R10)?,
        orc::REG_R13 => state.reg(R13)?,
        orc::REG_DI => state.reg(DI)?,
        orc::REG_DX => state.reg(DX)?,
        _ => return None,
    };
    let old_bp = state.bp;
    match entry.kind {
        Kind::Call => {
            state.ip = env.u64(sp.checked_sub(8)?)?;
            state.sp = sp;
            state.regs = None;
            state.full = false;
        }
        Kind::Regs => {
            let regs = env.words(sp, PT_REGS)?;
            state.ip = *regs.get(IP)?;
            state.sp = *regs.get(SP)?;
            state.regs = Some(regs);
            state.full = true;
        }
        Kind::RegsPartial => {
            let iret = env.words(sp, IRET_WORDS)?;
            let mut regs = vec![0u64; IP];
            regs.extend_from_slice(&iret);
            state.ip = *regs.get(IP)?;
            state.sp = *regs.get(SP)?;
            state.regs = Some(regs);
            state.full = false;
        }
        Kind::Undefined | Kind::EndOfStack => return None,
    }
    let bp_offset = i64::from(entry.bp_offset);
    match entry.bp_reg {
        orc::REG_UNDEFINED => {
            if let Some(bp) = state.reg(BP) {
                state.bp = bp;
            }
        }
        orc::REG_PREV_SP => state.bp = env.u64(sp.checked_add_signed(bp_offset)?)?,
        orc::REG_BP => state.bp = env.u64(old_bp.checked_add_signed(bp_offset)?)?,
        _ => return None,
    }
    state.signal = entry.signal;
    Some(true)
}

/// Text addresses on the stack from `sp` to the end of its stack, as unreliable frames.
fn scan(env: &Env<'_>, sp: u64, text: Option<(u64, u64)>, frames: &mut Vec<RawFrame>) {
    let Some((start, end)) = text else {
        return;
    };
    let top = (sp | (STACK_SIZE - 1)).saturating_add(1);
    let Ok(len) = usize::try_from(top.saturating_sub(sp)) else {
        return;
    };
    let Ok(stack) = (env.read)(sp & !7, len) else {
        return;
    };
    for word in stack.chunks_exact(8) {
        if frames.len() >= MAX_FRAMES {
            return;
        }
        let value = super::words(word, 0, 1, env.big_endian)
            .and_then(|w| w.first().copied())
            .unwrap_or(0);
        if (start..end).contains(&value) {
            frames.push(RawFrame::returned(value, false));
        }
    }
}

impl Unwind for X86_64 {
    fn registers(&self, prstatus: &[u8], big_endian: bool) -> Option<Vec<u64>> {
        super::words(prstatus, PR_REG_64, USER_REGS, big_endian)
    }

    fn unwind(&self, env: &Env<'_>, registers: &[u64]) -> Vec<RawFrame> {
        let (Some(&ip), Some(&sp), Some(&bp)) =
            (registers.get(IP), registers.get(SP), registers.get(BP))
        else {
            return Vec::new();
        };
        if user_mode(registers) || !is_kernel(ip) {
            return Vec::new();
        }
        let state = State {
            ip,
            sp,
            bp,
            regs: Some(registers.iter().copied().take(PT_REGS).collect()),
            full: true,
            signal: true,
        };
        walk(env, state)
    }

    fn saved_layout(&self, btf: &Btf) -> Result<SavedLayout, String> {
        let frame = "inactive_task_frame";
        let size = btf
            .find_struct(frame)
            .and_then(|id| btf.size_of(id, 8))
            .ok_or_else(|| format!("struct {frame}"))?;
        Ok(SavedLayout {
            stack: btf_offset(btf, "task_struct", "stack")?,
            task: vec![btf_offset(btf, "task_struct", "thread.sp")?],
            frame: vec![
                btf_offset(btf, frame, "bp")?,
                btf_offset(btf, frame, "ret_addr")?,
                size,
            ],
        })
    }

    /// As `unwind_start` for a task that is not running: `thread.sp` points at the
    /// `inactive_task_frame` `__switch_to_asm` pushed; its `ret_addr` (into `__schedule`)
    /// is the first frame, a return address, and the walk goes on above the frame.
    fn blocked(
        &self,
        env: &Env<'_>,
        layout: &SavedLayout,
        task: u64,
    ) -> Result<Vec<RawFrame>, String> {
        let (Some(&sp_at), Some(&bp_at), Some(&ret_at), Some(&size)) = (
            layout.task.first(),
            layout.frame.first(),
            layout.frame.get(1),
            layout.frame.get(2),
        ) else {
            return Err("no saved-context layout".into());
        };
        let stack = saved_word(env, task.saturating_add(layout.stack), "task_struct.stack")?;
        let sp = saved_word(env, task.saturating_add(sp_at), "thread.sp")?;
        on_stack(sp, stack, STACK_SIZE, size)?;
        let bp = saved_word(env, sp.saturating_add(bp_at), "inactive_task_frame.bp")?;
        let ip = saved_word(
            env,
            sp.saturating_add(ret_at),
            "inactive_task_frame.ret_addr",
        )?;
        if !is_kernel(ip) {
            return Err(format!(
                "the saved return address {ip:#x} is not kernel text"
            ));
        }
        let state = State {
            ip,
            sp: sp.saturating_add(size),
            bp,
            regs: None,
            full: false,
            signal: false,
        };
        Ok(walk(env, state))
    }
}

/// The walk from `state`: its pc first, then each caller ORC finds, then (where ORC has
/// no answer) a scan of the rest of the stack.
fn walk(env: &Env<'_>, mut state: State) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    let kernel = Table::locate(env);
    let tables = Tables {
        kernel,
        version: kernel.map(|t| t.version).or_else(|| orc::version(env)),
    };
    let text = kernel
        .and_then(|t| t.text)
        .or_else(|| (env.symbol)("_stext").zip((env.symbol)("_etext")));
    let new_indirect = env.release().is_none_or(|r| r >= (5, 12));
    let mut guard = StackGuard::new(STACK_SIZE);
    loop {
        if frames.len() >= MAX_FRAMES {
            break;
        }
        frames.push(if state.signal {
            RawFrame::interrupted(state.ip)
        } else {
            RawFrame::returned(state.ip, true)
        });
        let before = state.sp;
        let stepped = if tables.kernel.is_some() {
            step(env, &tables, &mut state, new_indirect)
        } else {
            None
        };
        match stepped {
            Some(false) => break,
            Some(true) => {
                let user = state.regs.as_deref().is_some_and(user_mode);
                if user || !is_kernel(state.ip) {
                    break;
                }
                if !guard.advance(before, state.sp) {
                    // A chain that loops or runs down the stack: what it gave is suspect.
                    if let Some(last) = frames.last_mut() {
                        last.reliable = false;
                    }
                    break;
                }
            }
            None => {
                scan(env, state.sp, text, &mut frames);
                break;
            }
        }
    }
    frames
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::super::testing::{found, Fake};
    use super::*;

    const TEXT: u64 = 0xffff_ffff_8100_0000;
    const STACK: u64 = 0xffff_c900_0001_0000;
    const IP_TABLE: u64 = 0xffff_ffff_8200_0000;
    const ORC: u64 = 0xffff_ffff_8210_0000;

    /// A kernel whose text has functions at TEXT + 0x100 * i, one ORC entry each.
    fn kernel(entries: &[[u8; 6]]) -> Fake {
        let mut fake = Fake::new("OSRELEASE=6.1.0-test\n");
        for (i, entry) in entries.iter().enumerate() {
            let at = IP_TABLE + 4 * i as u64;
            let target = TEXT + 0x100 * i as u64;
            fake.put(at, &((target as i64 - at as i64) as i32).to_le_bytes());
            fake.put(ORC + 6 * i as u64, entry);
        }
        let stop = IP_TABLE + 4 * entries.len() as u64;
        fake.symbols = vec![
            ("__start_orc_unwind_ip", IP_TABLE),
            ("__stop_orc_unwind_ip", stop),
            ("__start_orc_unwind", ORC),
            ("_stext", TEXT),
            ("_etext", TEXT + 0x100 * entries.len() as u64),
        ];
        fake
    }

    /// CALL: sp = SP + `off`, bp unchanged (v1 layout).
    fn call(off: i16) -> [u8; 6] {
        let [a, b] = off.to_le_bytes();
        [a, b, 0, 0, orc::REG_SP, 0]
    }

    fn registers(ip: u64, sp: u64) -> Vec<u64> {
        let mut regs = vec![0u64; USER_REGS];
        regs[IP] = ip;
        regs[SP] = sp;
        regs[CS] = 0x10;
        regs
    }

    #[test]
    fn call_frames_then_the_syscall_pt_regs() {
        // f0 (leaf, sp+8) called by f1 (sp+16) called from the entry code f2 (REGS at sp).
        let mut regs_entry = [0u8; 6];
        regs_entry[4] = orc::REG_SP;
        regs_entry[5] = 1; // REGS, v1
        let mut fake = kernel(&[call(8), call(16), regs_entry, [0, 0, 0, 0, 0, 4]]);
        let sp = STACK + 0x3e00;
        fake.put_u64(sp, TEXT + 0x100 + 0x20); // f0's return into f1
        fake.put_u64(sp + 8, 0xdead); // f1's local
        fake.put_u64(sp + 16, TEXT + 0x200 + 0x10); // f1's return into f2
        let pt_regs = sp + 24;
        for i in 0..PT_REGS as u64 {
            fake.put_u64(pt_regs + 8 * i, 0);
        }
        fake.put_u64(pt_regs + 8 * IP as u64, 0x47_b7a0);
        fake.put_u64(pt_regs + 8 * CS as u64, 0x33);
        fake.put_u64(pt_regs + 8 * SP as u64, 0x7ffc_0000);
        let frames = fake.run(&X86_64, &registers(TEXT + 0x33, sp));
        let pcs = found(&frames);
        assert_eq!(
            pcs,
            vec![
                (TEXT + 0x33, TEXT + 0x33, true),
                (TEXT + 0x120, TEXT + 0x11f, true),
                (TEXT + 0x210, TEXT + 0x20f, true),
            ]
        );
    }

    #[test]
    fn a_module_frame_unwinds_with_the_module_orc() {
        // f0 in the kernel called from the module's m0 (CALL sp+16), called from f1.
        let mut fake = kernel(&[call(8), call(8)]);
        let module = 0xffff_ffff_c000_0000u64;
        let (ip_table, orc_table) = (0xffff_ffff_c010_0000u64, 0xffff_ffff_c011_0000u64);
        fake.put(
            ip_table,
            &((module as i64 - ip_table as i64) as i32).to_le_bytes(),
        );
        fake.put(orc_table, &call(16));
        fake.modules.push(crate::translate::unwind::ModuleText {
            name: "demo".into(),
            base: module,
            size: 0x1000,
            orc: Some((ip_table, orc_table, 1)),
        });
        let sp = STACK + 0x3e00;
        fake.put_u64(sp, module + 0x40); // f0's return into m0
        fake.put_u64(sp + 8, 0); // m0's local
        fake.put_u64(sp + 16, TEXT + 0x110); // m0's return into f1
        let frames = fake.run(&X86_64, &registers(TEXT + 0x10, sp));
        let pcs: Vec<u64> = frames.iter().map(|f| f.pc).collect();
        assert_eq!(pcs[..3], [TEXT + 0x10, module + 0x40, TEXT + 0x110]);
        assert!(frames[..3].iter().all(|f| f.reliable));
    }

    #[test]
    fn a_blocked_task_starts_at_its_saved_return_address() {
        // inactive_task_frame: r15 r14 r13 r12 bx bp ret_addr (7 words).
        let mut fake = kernel(&[call(8), call(8), [0, 0, 0, 0, 0, 4]]);
        let layout = SavedLayout {
            stack: 0x20,
            task: vec![0x100],
            frame: vec![40, 48, 56],
        };
        let task = 0xffff_8880_0000_0000u64;
        let sp = STACK + 0x3f00;
        fake.put_u64(task + 0x20, STACK);
        fake.put_u64(task + 0x100, sp);
        fake.put_u64(sp + 40, 0x1234);
        fake.put_u64(sp + 48, TEXT + 0x20); // into f0
        fake.put_u64(sp + 56, TEXT + 0x120); // f0's return into f1
        fake.put_u64(sp + 64, TEXT + 0x210); // f1's return into f2, the end
        let frames = fake.run_blocked(&X86_64, &layout, task).unwrap();
        let found = found(&frames);
        assert_eq!(
            found,
            vec![
                (TEXT + 0x20, TEXT + 0x1f, true),
                (TEXT + 0x120, TEXT + 0x11f, true),
                (TEXT + 0x210, TEXT + 0x20f, true),
            ]
        );
        // A saved sp off the task's stack: a clear error, no walk.
        fake.put_u64(task + 0x100, STACK - 0x100);
        let error = fake.run_blocked(&X86_64, &layout, task).unwrap_err();
        assert!(error.contains("is not on the task's stack"), "{error}");
        // The task's page missing.
        let error = fake.run_blocked(&X86_64, &layout, 0x1000).unwrap_err();
        assert_eq!(error, "task_struct.stack at 0x1020 is not in the dump");
    }

    #[test]
    fn zeroed_tables_fall_back_to_an_unreliable_scan() {
        let mut fake = kernel(&[[0; 6], [0; 6], [0; 6]]);
        let sp = STACK + 0x3fe0;
        fake.put_u64(sp, 0x1234);
        fake.put_u64(sp + 8, TEXT + 0x150);
        fake.put_u64(sp + 16, TEXT + 0x250);
        fake.put_u64(sp + 24, TEXT + 0x9999); // past _etext
        let frames = fake.run(&X86_64, &registers(TEXT + 0x10, sp));
        let found: Vec<(u64, bool)> = frames.iter().map(|f| (f.pc, f.reliable)).collect();
        assert_eq!(
            found,
            vec![
                (TEXT + 0x10, true),
                (TEXT + 0x150, false),
                (TEXT + 0x250, false)
            ]
        );
    }

    #[test]
    fn a_looping_chain_stops_unreliable() {
        // sp + 0 with the return address at sp - 8 = the same frame again, forever.
        let mut fake = kernel(&[call(0), call(0)]);
        let sp = STACK + 0x100;
        fake.put_u64(sp - 8, TEXT + 0x10);
        let frames = fake.run(&X86_64, &registers(TEXT + 0x10, sp));
        assert!(frames.len() <= 2, "{frames:?}");
        assert!(!frames.last().unwrap().reliable);
    }

    #[test]
    fn user_mode_and_short_notes_give_nothing() {
        let fake = kernel(&[call(8)]);
        let mut regs = registers(TEXT, STACK);
        regs[CS] = 0x33;
        assert!(fake.run(&X86_64, &regs).is_empty());
        assert!(fake.run(&X86_64, &[]).is_empty());
        assert_eq!(X86_64.registers(&[0; 200], false), None);
        let mut note = vec![0u8; PR_REG_64 + 27 * 8];
        note[PR_REG_64 + IP * 8..PR_REG_64 + IP * 8 + 8].copy_from_slice(&7u64.to_le_bytes());
        assert_eq!(X86_64.registers(&note, false).unwrap()[IP], 7);
    }
}
