//! Vigil's hypercall interface, and its absence by default.

use crate::exit::{Action, Exit};
use crate::testing::{cpu, exit};
use crate::vcpu::{gpr, Seg};
use x86_arch::event::Event;

const MAGIC: u64 = 0x5647_4C00;

fn call(c: &mut crate::cpu::Cpu<crate::testing::FakeVcpu>, function: u64) -> Action {
    c.vcpu.gprs[gpr::RAX as usize] = MAGIC | function;
    exit(c, Exit::Hypercall)
}

#[test]
fn off_by_default_every_vmcall_is_ud() {
    let mut c = cpu("");
    assert_eq!(call(&mut c, 0), Action::Inject(Event::UD));
    assert_eq!(c.vcpu.gprs[gpr::RBX as usize], 0, "nothing answered");
}

#[test]
fn wrong_magic_or_user_mode_is_ud() {
    let mut c = cpu("hypercall=on");
    c.vcpu.gprs[0] = 0x1234_5600;
    assert_eq!(exit(&mut c, Exit::Hypercall), Action::Inject(Event::UD));
    c.vcpu.segs[Seg::Ss as usize].attrs.dpl = 3;
    assert_eq!(call(&mut c, 0), Action::Inject(Event::UD));
}

#[test]
fn ping_answers_with_the_signature_and_version() {
    let mut c = cpu("hypercall=on");
    assert_eq!(call(&mut c, 0), Action::Advance);
    assert_eq!(c.vcpu.gprs[gpr::RAX as usize], 0);
    assert_eq!(c.vcpu.gprs[gpr::RBX as usize], 0x6967_6956);
    assert_eq!(c.vcpu.gprs[gpr::RCX as usize], 1);
}

#[test]
fn tsc_offset_and_confirm_tsc() {
    let mut c = cpu("hypercall=on tsc=offset:0x100000000000 trap=rdtsc");
    c.vcpu.rdtsc_exit = true;
    call(&mut c, 1);
    assert_eq!(c.vcpu.gprs[gpr::RBX as usize], 0);
    assert_eq!(c.vcpu.gprs[gpr::RCX as usize], 0x1000);
    assert_eq!(
        c.vcpu.gprs[gpr::RDX as usize],
        1 | 1 << 8,
        "intercepted, offset mode"
    );
    // The guest confirms the value its RDTSC returned.
    c.exit_tsc = 500;
    exit(&mut c, Exit::Rdtsc);
    let seen = c.vcpu.gprs[2] << 32 | c.vcpu.gprs[0];
    c.vcpu.gprs[gpr::RBX as usize] = seen & 0xFFFF_FFFF;
    c.vcpu.gprs[gpr::RCX as usize] = seen >> 32;
    call(&mut c, 2);
    assert_eq!(c.vcpu.gprs[gpr::RAX as usize], 0, "matches");
    c.vcpu.gprs[gpr::RBX as usize] = 1;
    call(&mut c, 2);
    assert_eq!(c.vcpu.gprs[gpr::RAX as usize], 2, "mismatch");
}

#[test]
fn vigil_range_checksum_hold_and_host_tsc() {
    let mut c = cpu("hypercall=on");
    c.vcpu.gprs[gpr::RBX as usize] = 1;
    call(&mut c, 3);
    assert_eq!(
        (
            c.vcpu.gprs[gpr::RBX as usize],
            c.vcpu.gprs[gpr::RCX as usize]
        ),
        (0xee0_0000, 0xfe0_0000)
    );
    c.vcpu.gprs[gpr::RBX as usize] = 7;
    call(&mut c, 3);
    assert_eq!(c.vcpu.gprs[gpr::RAX as usize], 1, "unknown range");
    call(&mut c, 4);
    assert_eq!(c.vcpu.gprs[gpr::RBX as usize], 0x1234_5678_9abc_def0);
    let before = c.vcpu.host.tsc;
    c.vcpu.gprs[gpr::RBX as usize] = 100;
    call(&mut c, 5);
    assert!(c.vcpu.host.tsc - before >= 100, "held for the ticks asked");
    c.exit_tsc = 0x4242;
    call(&mut c, 6);
    assert_eq!(c.vcpu.gprs[gpr::RBX as usize], 0x4242);
    call(&mut c, 99);
    assert_eq!(c.vcpu.gprs[gpr::RAX as usize], 1, "unknown function");
}
