//! The completion every exit shares: instruction retirement and event delivery.

use crate::exit::complete::{complete, deliver};
use crate::exit::{Action, Exit};
use crate::testing::{cpu, cpu_with, exit, FakeVcpu};
use crate::vcpu::{msr, Interruptibility, Seg};
use x86_arch::event::{Event, EventKind};
use x86_arch::regs::*;

#[test]
fn advance_moves_rip_by_the_instruction_length() {
    let mut c = cpu("");
    c.vcpu.rip = 0xFFFF_FFFF_8000_0000;
    c.vcpu.len = 3;
    complete(&mut c, Action::Advance);
    assert_eq!(c.vcpu.rip, 0xFFFF_FFFF_8000_0003);
    assert_eq!(c.vcpu.single_steps, 0);
    assert!(c.vcpu.injected.is_empty());
}

#[test]
fn eip_wraps_at_4_gib_outside_64_bit_mode() {
    let mut c = cpu_with("", FakeVcpu::protected32());
    c.vcpu.rip = 0xFFFF_FFFE;
    c.vcpu.len = 3;
    complete(&mut c, Action::Advance);
    assert_eq!(c.vcpu.rip, 1);
    // 64-bit code does not wrap there.
    let mut c = cpu("");
    c.vcpu.rip = 0xFFFF_FFFE;
    c.vcpu.len = 3;
    complete(&mut c, Action::Advance);
    assert_eq!(c.vcpu.rip, 0x1_0000_0001);
}

#[test]
fn ip_wraps_at_64_kib_in_16_bit_code() {
    let mut v = FakeVcpu::protected32();
    v.segs[Seg::Cs as usize].attrs.db = false;
    let mut c = cpu_with("", v);
    c.vcpu.rip = 0xFFFE;
    c.vcpu.len = 2;
    complete(&mut c, Action::Advance);
    assert_eq!(c.vcpu.rip, 0);
}

#[test]
fn sti_and_mov_ss_blocking_end_with_the_emulated_instruction() {
    let mut c = cpu("");
    c.vcpu.intr = Interruptibility {
        sti: true,
        mov_ss: false,
        nmi: true,
    };
    exit(&mut c, Exit::Cpuid);
    assert_eq!(
        c.vcpu.intr,
        Interruptibility {
            sti: false,
            mov_ss: false,
            nmi: true
        },
        "the shadow ends, NMI blocking stays until IRET"
    );
    c.vcpu.intr.mov_ss = true;
    exit(&mut c, Exit::Cpuid);
    assert!(!c.vcpu.intr.mov_ss);
    // A fault does not retire the instruction: the shadow stays.
    c.vcpu.intr.sti = true;
    complete(&mut c, Action::Inject(Event::GP0));
    assert!(c.vcpu.intr.sti);
}

#[test]
fn single_step_over_an_emulated_instruction_traps_after_it() {
    // The guest single-steps CPUID: bare metal raises #DB with DR6.BS after it, with RIP at the
    // next instruction (SDM Vol. 3B 18.3.1.4).
    let mut c = cpu("");
    c.vcpu.rflags |= RFLAGS_TF;
    exit(&mut c, Exit::Cpuid);
    assert_eq!(c.vcpu.rip, 0x1002);
    assert_eq!(c.vcpu.single_steps, 1, "the single-step trap is raised");
    // Also across a MOV SS shadow: the trap the shadow held back comes after the next
    // instruction, which is this one.
    c.vcpu.intr.mov_ss = true;
    exit(&mut c, Exit::Cpuid);
    assert_eq!(c.vcpu.single_steps, 2);
    assert!(!c.vcpu.intr.mov_ss);
}

#[test]
fn branch_only_single_step_does_not_trap_after_an_emulated_instruction() {
    let mut c = cpu("");
    c.vcpu.rflags |= RFLAGS_TF;
    c.vcpu.msrs.insert(msr::IA32_DEBUGCTL, DEBUGCTL_BTF);
    exit(&mut c, Exit::Cpuid);
    assert_eq!(c.vcpu.single_steps, 0);
}

#[test]
fn a_fault_is_delivered_with_rf_set_and_a_trap_without() {
    let mut c = cpu("");
    deliver(&mut c.vcpu, Event::GP0);
    assert_ne!(c.vcpu.rflags & RFLAGS_RF, 0, "faults push RF = 1");
    assert_eq!(c.vcpu.injected, [Event::GP0]);
    let mut c = cpu("");
    let int3 = Event {
        kind: EventKind::SoftwareException,
        instruction_len: 1,
        ..Event::exception(3)
    };
    deliver(&mut c.vcpu, int3);
    assert_eq!(c.vcpu.rflags & RFLAGS_RF, 0, "INT3 is a trap");
    assert_eq!(c.vcpu.injected[0].instruction_len, 1);
}

#[test]
fn real_mode_exceptions_push_no_error_code() {
    let mut v = FakeVcpu::protected32();
    v.cr0 &= !CR0_PE;
    let mut c = cpu_with("", v);
    deliver(&mut c.vcpu, Event::GP0);
    assert_eq!(c.vcpu.injected[0].error_code, None);
    assert_eq!(c.vcpu.injected[0].vector, 13);
}

#[test]
fn a_debug_exception_clears_dr7_gd() {
    let mut c = cpu("");
    c.vcpu.drs[7] = DR7_FIXED1 | DR7_GD | 1;
    deliver(&mut c.vcpu, Event::DB);
    assert_eq!(c.vcpu.drs[7], DR7_FIXED1 | 1);
}

#[test]
fn an_injected_event_ends_a_halt() {
    let mut c = cpu("");
    c.vcpu.activity = crate::vcpu::Activity::Halt;
    complete(&mut c, Action::Inject(Event::external(0x30)));
    assert_eq!(c.vcpu.activity, crate::vcpu::Activity::Active);
}
