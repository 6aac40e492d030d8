//! aarch64: the crash registers in `user_pt_regs` order (x0–x30, sp, pc, pstate), unwound
//! through the frame records the kernel keeps with frame pointers: x29 points at
//! `[caller's x29, return address]`, the chain ending at a record of two zeros (the one in
//! the `pt_regs` of an entry from user space). Return addresses lose their pointer
//! authentication code (VMCOREINFO `KERNELPACMASK`).
//!
//! The first frame is the pc. A leaf function that has not pushed a record yet (the usual
//! state of a CPU stopped in a delay loop) still has its return address in x30 only: that
//! frame is added, marked unreliable, where x30 lies in another function than the pc and
//! is not the return address the current record holds.

use super::{
    btf_offset, on_stack, saved_word, Env, RawFrame, SavedLayout, StackGuard, Unwind, MAX_FRAMES,
    PR_REG_64,
};
use crate::btf::Btf;

pub struct Aarch64;

/// `user_pt_regs`: 34 words.
const USER_REGS: usize = 34;
const FP: usize = 29;
const LR: usize = 30;
const PC: usize = 32;
const PSTATE: usize = 33;
/// The kernel stacks' size (THREAD_SIZE with 4 KiB pages, no KASAN).
const STACK_SIZE: u64 = 16 << 10;
/// A frame record: two words.
const RECORD: u64 = 16;
/// Kernel addresses: the top of the address space (up to 52-bit VAs).
const KERNEL_START: u64 = 0xfff0_0000_0000_0000;

fn is_kernel(addr: u64) -> bool {
    addr >= KERNEL_START
}

/// A return address without its pointer authentication code: kernel addresses (bit 55
/// set) get the PAC bits set, user addresses cleared.
fn strip(addr: u64, mask: u64) -> u64 {
    if addr >> 55 & 1 != 0 {
        addr | mask
    } else {
        addr & !mask
    }
}

impl Unwind for Aarch64 {
    fn registers(&self, prstatus: &[u8], big_endian: bool) -> Option<Vec<u64>> {
        super::words(prstatus, PR_REG_64, USER_REGS, big_endian)
    }

    fn unwind(&self, env: &Env<'_>, registers: &[u64]) -> Vec<RawFrame> {
        let mut frames = Vec::new();
        let (Some(&pc), Some(&pstate), Some(&fp), Some(&lr)) = (
            registers.get(PC),
            registers.get(PSTATE),
            registers.get(FP),
            registers.get(LR),
        ) else {
            return frames;
        };
        // PSTATE.M[3:0] = 0: EL0, user mode.
        if pstate & 0xf == 0 || !is_kernel(pc) {
            return frames;
        }
        let mask = pac_mask(env);
        frames.push(RawFrame::interrupted(pc));
        let lr = strip(lr, mask);
        if is_kernel(lr) {
            let saved = record(env, fp).map(|(_, ret)| strip(ret, mask));
            let caller = (env.function_start)(lr.saturating_sub(1));
            if caller.is_some() && caller != (env.function_start)(pc) && saved != Some(lr) {
                frames.push(RawFrame::returned(lr, false));
            }
        }
        records(env, mask, fp, &mut frames);
        frames
    }

    fn saved_layout(&self, btf: &Btf) -> Result<SavedLayout, String> {
        let context =
            |member: &str| btf_offset(btf, "task_struct", &format!("thread.cpu_context.{member}"));
        Ok(SavedLayout {
            stack: btf_offset(btf, "task_struct", "stack")?,
            task: vec![context("fp")?, context("sp")?, context("pc")?],
            frame: Vec::new(),
        })
    }

    /// As `start_backtrace` from `thread_saved_fp`/`thread_saved_pc`: the saved pc (the
    /// return address into `__switch_to` that `cpu_switch_to` kept) first, then the frame
    /// records from the saved fp.
    fn blocked(
        &self,
        env: &Env<'_>,
        layout: &SavedLayout,
        task: u64,
    ) -> Result<Vec<RawFrame>, String> {
        let [fp_at, sp_at, pc_at] = layout.task[..] else {
            return Err("no saved-context layout".into());
        };
        let stack = saved_word(env, task.saturating_add(layout.stack), "task_struct.stack")?;
        let fp = saved_word(env, task.saturating_add(fp_at), "cpu_context.fp")?;
        let sp = saved_word(env, task.saturating_add(sp_at), "cpu_context.sp")?;
        let pc = saved_word(env, task.saturating_add(pc_at), "cpu_context.pc")?;
        on_stack(sp, stack, STACK_SIZE, RECORD)?;
        let mask = pac_mask(env);
        let pc = strip(pc, mask);
        if !is_kernel(pc) {
            return Err(format!("the saved pc {pc:#x} is not kernel text"));
        }
        let mut frames = vec![RawFrame::returned(pc, true)];
        records(env, mask, fp, &mut frames);
        Ok(frames)
    }
}

fn pac_mask(env: &Env<'_>) -> u64 {
    env.vmcoreinfo
        .number("KERNELPACMASK")
        .map_or(0, |m| m as u64)
}

/// The frame record at `fp`: (the caller's fp, the return address).
fn record(env: &Env<'_>, fp: u64) -> Option<(u64, u64)> {
    if fp % 8 != 0 {
        return None;
    }
    let pair = env.words(fp, 2)?;
    Some((*pair.first()?, *pair.get(1)?))
}

/// Follows the frame records from `fp` to the final one (two zeros), a user return
/// address, or the bounds.
fn records(env: &Env<'_>, mask: u64, fp: u64, frames: &mut Vec<RawFrame>) {
    let mut guard = StackGuard::new(STACK_SIZE);
    let mut fp = fp;
    while frames.len() < MAX_FRAMES && fp != 0 {
        let Some((next, ret)) = record(env, fp) else {
            break;
        };
        if next == 0 && ret == 0 {
            break;
        }
        let ret = strip(ret, mask);
        if !is_kernel(ret) {
            break;
        }
        frames.push(RawFrame::returned(ret, true));
        if next == 0 {
            break;
        }
        if !guard.advance(fp, next) {
            if let Some(last) = frames.last_mut() {
                last.reliable = false;
            }
            break;
        }
        fp = next;
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
mod tests {
    use super::super::testing::{found, Fake};
    use super::*;

    const TEXT: u64 = 0xffff_8000_0801_0000;
    const STACK: u64 = 0xffff_8000_0a00_0000;

    fn registers(pc: u64, lr: u64, fp: u64) -> Vec<u64> {
        let mut regs = vec![0u64; USER_REGS];
        regs[PC] = pc;
        regs[LR] = lr;
        regs[FP] = fp;
        regs[PSTATE] = 0x3c5; // EL1h
        regs
    }

    fn kernel() -> Fake {
        let mut fake = Fake::new("NUMBER(KERNELPACMASK)=0xff80000000000000\n");
        fake.symbols = (0..8u64)
            .map(|i| {
                (
                    ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"][i as usize],
                    TEXT + 0x100 * i,
                )
            })
            .collect();
        fake
    }

    #[test]
    fn a_leaf_then_the_records_to_the_final_one() {
        let mut fake = kernel();
        // f0 is a leaf (lr into f1); f1's record names f2, f2's names f3, then the end.
        let fp1 = STACK + 0x3d00;
        let fp2 = STACK + 0x3e00;
        let end = STACK + 0x3f00;
        fake.put_u64(fp1, fp2);
        // A signed return address: PAC bits in 55..63 cleared by the code.
        fake.put_u64(
            fp1 + 8,
            (TEXT + 0x208) & !0xff80_0000_0000_0000 | 0x0080_0000_0000_0000,
        );
        fake.put_u64(fp2, end);
        fake.put_u64(fp2 + 8, TEXT + 0x30c);
        fake.put_u64(end, 0);
        fake.put_u64(end + 8, 0);
        let frames = fake.run(&Aarch64, &registers(TEXT + 0x10, TEXT + 0x104, fp1));
        let found = found(&frames);
        assert_eq!(
            found,
            vec![
                (TEXT + 0x10, TEXT + 0x10, true),
                (TEXT + 0x104, TEXT + 0x103, false),
                (TEXT + 0x208, TEXT + 0x207, true),
                (TEXT + 0x30c, TEXT + 0x30b, true),
            ]
        );
    }

    #[test]
    fn lr_of_a_function_with_its_record_is_not_a_frame() {
        let mut fake = kernel();
        let fp1 = STACK + 0x3d00;
        fake.put_u64(fp1, 0);
        fake.put_u64(fp1 + 8, TEXT + 0x208);
        // lr inside the pc's own function (a call it made returned), then lr == saved.
        for lr in [TEXT + 0x40, TEXT + 0x208] {
            let frames = fake.run(&Aarch64, &registers(TEXT + 0x10, lr, fp1));
            let pcs: Vec<u64> = frames.iter().map(|f| f.pc).collect();
            assert_eq!(pcs, vec![TEXT + 0x10, TEXT + 0x208]);
        }
    }

    #[test]
    fn a_looping_chain_is_bounded_and_unreliable() {
        let mut fake = kernel();
        let fp = STACK + 0x3000;
        fake.put_u64(fp, fp);
        fake.put_u64(fp + 8, TEXT + 0x208);
        let frames = fake.run(&Aarch64, &registers(TEXT + 0x10, TEXT + 0x20, fp));
        assert_eq!(frames.len(), 2);
        assert!(!frames[1].reliable);
        // Records that go down and up between two stacks: bounded by the switch limit.
        let other = STACK + 0x10_0000;
        fake.put_u64(fp, other);
        fake.put_u64(other, fp);
        fake.put_u64(other + 8, TEXT + 0x308);
        let frames = fake.run(&Aarch64, &registers(TEXT + 0x10, TEXT + 0x20, fp));
        assert!(frames.len() <= 2 + super::super::MAX_STACK_SWITCHES + 1);
        assert!(!frames.last().unwrap().reliable);
    }

    #[test]
    fn a_blocked_task_from_its_cpu_context() {
        let mut fake = kernel();
        let layout = SavedLayout {
            stack: 0x20,
            task: vec![0x300, 0x308, 0x310],
            frame: Vec::new(),
        };
        let task = 0xffff_0000_1000_0000u64;
        let fp = STACK + 0x3e00;
        fake.put_u64(task + 0x20, STACK);
        fake.put_u64(task + 0x300, fp);
        fake.put_u64(task + 0x308, STACK + 0x3d00);
        fake.put_u64(task + 0x310, TEXT + 0x14); // into f0 (__switch_to)
        fake.put_u64(fp, STACK + 0x3f00);
        fake.put_u64(fp + 8, TEXT + 0x104);
        fake.put_u64(STACK + 0x3f00, 0);
        fake.put_u64(STACK + 0x3f08, 0);
        let frames = fake.run_blocked(&Aarch64, &layout, task).unwrap();
        let pcs: Vec<(u64, bool)> = frames.iter().map(|f| (f.pc, f.reliable)).collect();
        assert_eq!(pcs, vec![(TEXT + 0x14, true), (TEXT + 0x104, true)]);
        fake.put_u64(task + 0x308, STACK + 0x4000);
        let error = fake.run_blocked(&Aarch64, &layout, task).unwrap_err();
        assert!(error.contains("is not on the task's stack"), "{error}");
    }

    #[test]
    fn user_mode_gives_nothing() {
        let fake = kernel();
        let mut regs = registers(TEXT, 0, 0);
        regs[PSTATE] = 0;
        assert!(fake.run(&Aarch64, &regs).is_empty());
        let frames = fake.run(&Aarch64, &registers(TEXT, 0, 0));
        assert_eq!(frames.len(), 1);
    }
}
