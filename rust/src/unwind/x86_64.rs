//! x86_64: the crash registers in `user_regs_struct` order (r15 … ss, then the segment
//! bases; its first 21 words are `struct pt_regs`), unwound with the kernel's ORC tables as
//! `unwind_orc.c` does: CALL frames, full `pt_regs` (REGS: exceptions, the syscall entry)
//! and iret frames (REGS_PARTIAL: interrupts). Where ORC has no answer (no tables, an
//! address outside them, a broken chain), the rest of the stack is scanned for text
//! addresses, each frame so found marked unreliable, as the kernel's own `?` entries.

use super::orc::{self, Kind, Table};
use super::{Env, RawFrame, StackGuard, Unwind, MAX_FRAMES, PR_REG_64};

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

/// One ORC step: `Some(true)` moved to the caller, `Some(false)` the end of the stack,
/// None where the tables or the stack do not allow a step.
fn step(env: &Env<'_>, table: &Table, state: &mut State, new_indirect: bool) -> Option<bool> {
    let at = if state.signal {
        state.ip
    } else {
        state.ip.checked_sub(1)?
    };
    let entry = table.find(env, at)?;
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
        let mut frames = Vec::new();
        let (Some(&ip), Some(&sp), Some(&bp)) =
            (registers.get(IP), registers.get(SP), registers.get(BP))
        else {
            return frames;
        };
        if user_mode(registers) || !is_kernel(ip) {
            return frames;
        }
        let table = Table::locate(env);
        let text = table
            .and_then(|t| t.text)
            .or_else(|| (env.symbol)("_stext").zip((env.symbol)("_etext")));
        let new_indirect = env.release().is_none_or(|r| r >= (5, 12));
        let mut state = State {
            ip,
            sp,
            bp,
            regs: Some(registers.iter().copied().take(PT_REGS).collect()),
            full: true,
            signal: true,
        };
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
            let stepped = table.and_then(|t| step(env, &t, &mut state, new_indirect));
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
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::super::testing::Fake;
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
        let pcs: Vec<(u64, u64, bool)> = frames
            .iter()
            .map(|f| (f.pc, f.lookup, f.reliable))
            .collect();
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
