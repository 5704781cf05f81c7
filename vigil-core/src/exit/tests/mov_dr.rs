//! MOV DR in the processor's order of checks.

use crate::exit::{Action, DrAccess, Exit};
use crate::testing::{cpu, cpu_with, exit, FakeVcpu};
use crate::vcpu::Seg;
use x86_arch::event::Event;
use x86_arch::regs::*;

fn mov(dr: u8, read: bool, gpr: u8) -> Exit {
    Exit::Dr(DrAccess { dr, read, gpr })
}

#[test]
fn reads_and_writes_reach_the_guests_registers() {
    let mut c = cpu("trap=movdr");
    c.vcpu.gprs[3] = 0xffff_8000_0000_1000;
    assert_eq!(exit(&mut c, mov(0, false, 3)), Action::Advance);
    assert_eq!(c.vcpu.drs[0], 0xffff_8000_0000_1000);
    assert_eq!(exit(&mut c, mov(6, true, 4)), Action::Advance);
    assert_eq!(c.vcpu.gprs[4], DR6_FIXED1);
}

#[test]
fn cpl_above_0_gets_gp() {
    let mut c = cpu("trap=movdr");
    c.vcpu.segs[Seg::Ss as usize].attrs.dpl = 3;
    assert_eq!(exit(&mut c, mov(0, true, 0)), Action::Inject(Event::GP0));
}

#[test]
fn dr4_and_dr5_alias_or_fault_by_cr4_de() {
    let mut c = cpu("trap=movdr");
    c.vcpu.drs[7] = DR7_FIXED1 | 3;
    exit(&mut c, mov(5, true, 0));
    assert_eq!(c.vcpu.gprs[0], DR7_FIXED1 | 3, "DR5 is DR7");
    c.vcpu.cr4 |= CR4_DE;
    assert_eq!(exit(&mut c, mov(4, true, 0)), Action::Inject(Event::UD));
}

#[test]
fn general_detect_raises_db_before_the_access() {
    let mut c = cpu("trap=movdr");
    c.vcpu.drs[7] = DR7_FIXED1 | DR7_GD;
    c.vcpu.drs[6] = DR6_FIXED1 | DR6_BS;
    c.vcpu.gprs[1] = 0x1234;
    assert_eq!(exit(&mut c, mov(0, false, 1)), Action::Inject(Event::DB));
    assert_eq!(c.vcpu.drs[0], 0, "the access did not happen");
    assert_eq!(c.vcpu.drs[6], DR6_FIXED1 | DR6_BS | DR6_BD);
    assert_eq!(c.vcpu.drs[7] & DR7_GD, 0, "cleared for the #DB handler");
    assert_eq!(c.vcpu.rip, 0x1000, "a fault: RIP stays at the MOV");
    assert_eq!(c.vcpu.injected, [Event::DB]);
}

#[test]
fn writing_ones_to_the_upper_half_of_dr6_or_dr7_gets_gp() {
    let mut c = cpu("trap=movdr");
    c.vcpu.gprs[0] = 1 << 40;
    assert_eq!(exit(&mut c, mov(7, false, 0)), Action::Inject(Event::GP0));
    assert_eq!(
        exit(&mut c, mov(3, false, 0)),
        Action::Advance,
        "DR3 takes any address"
    );
}

#[test]
fn outside_64_bit_mode_the_operand_has_32_bits() {
    let mut c = cpu_with("trap=movdr", FakeVcpu::protected32());
    c.vcpu.drs[1] = 0x1_2345_6789;
    exit(&mut c, mov(1, true, 2));
    assert_eq!(c.vcpu.gprs[2], 0x2345_6789);
    c.vcpu.gprs[2] = 1 << 40 | 0x7;
    assert_eq!(exit(&mut c, mov(7, false, 2)), Action::Advance);
    assert_eq!(c.vcpu.drs[7], 0x7);
}
