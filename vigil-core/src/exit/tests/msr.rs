//! RDMSR/WRMSR through the ownership table; values the processor would reject get #GP before
//! they can reach the vCPU's control block (where they would make the next entry fail).

use crate::exit::{Action, Exit};
use crate::owners::{IA32_TSC, IA32_TSC_ADJUST, IA32_TSC_DEADLINE};
use crate::testing::{cpu, exit, FakeVcpu};
use crate::vcpu::msr::*;
use x86_arch::event::Event;
use x86_arch::regs::*;

fn rdmsr(c: &mut crate::cpu::Cpu<FakeVcpu>, msr: u32) -> Action {
    c.vcpu.gprs[1] = msr as u64;
    exit(c, Exit::Rdmsr)
}

fn wrmsr(c: &mut crate::cpu::Cpu<FakeVcpu>, msr: u32, value: u64) -> Action {
    c.vcpu.gprs[1] = msr as u64;
    c.vcpu.gprs[0] = value & 0xFFFF_FFFF;
    c.vcpu.gprs[2] = value >> 32;
    exit(c, Exit::Wrmsr)
}

fn edx_eax(c: &crate::cpu::Cpu<FakeVcpu>) -> u64 {
    c.vcpu.gprs[2] << 32 | c.vcpu.gprs[0]
}

#[test]
fn feature_control_reads_locked_without_vmx_and_refuses_writes() {
    let mut c = cpu("");
    c.vcpu.host.msrs.insert(0x3A, 0b111);
    assert_eq!(rdmsr(&mut c, 0x3A), Action::Advance);
    assert_eq!(edx_eax(&c), 0b001, "lock bit only");
    assert_eq!(wrmsr(&mut c, 0x3A, 0b111), Action::Inject(Event::GP0));
    assert!(c.vcpu.host.msr_writes.is_empty());
}

#[test]
fn vmx_capability_msrs_raise_gp() {
    let mut c = cpu("");
    c.vcpu.host.msrs.insert(0x480, 0x1234);
    assert_eq!(rdmsr(&mut c, 0x480), Action::Inject(Event::GP0));
    assert_eq!(rdmsr(&mut c, 0x491), Action::Inject(Event::GP0));
    assert_eq!(c.vcpu.rip, 0x1000);
}

#[test]
fn a_trapped_switched_msr_reads_the_vcpus_copy() {
    let mut c = cpu("trap=msr:0x277,msr:0xc0000102");
    c.vcpu.host.msrs.insert(IA32_PAT, 0x1111);
    assert_eq!(rdmsr(&mut c, IA32_PAT), Action::Advance);
    assert_eq!(
        edx_eax(&c),
        0x0007_0406_0007_0406,
        "the guest's PAT, not the host's"
    );
    // KERNEL_GS_BASE is not switched by this backend: the host register is the guest's.
    c.vcpu
        .host
        .msrs
        .insert(IA32_KERNEL_GS_BASE, 0xffff_8000_1234_0000);
    rdmsr(&mut c, IA32_KERNEL_GS_BASE);
    assert_eq!(edx_eax(&c), 0xffff_8000_1234_0000);
}

#[test]
fn a_bad_pat_gets_gp_and_changes_nothing() {
    let mut c = cpu("trap=msr:0x277");
    // Memory type 2 is reserved (SDM Vol. 3A 12.12.2).
    assert_eq!(
        wrmsr(&mut c, IA32_PAT, 0x0007_0406_0007_0402),
        Action::Inject(Event::GP0)
    );
    assert_eq!(c.vcpu.msrs[&IA32_PAT], 0x0007_0406_0007_0406);
    assert_eq!(wrmsr(&mut c, IA32_PAT, 0x0106), Action::Advance);
    assert_eq!(c.vcpu.msrs[&IA32_PAT], 0x0106);
}

#[test]
fn non_canonical_bases_get_gp() {
    let mut c = cpu("trap=msr:0xc0000100,msr:0xc0000101,msr:0xc0000102");
    for msr in [IA32_FS_BASE, IA32_GS_BASE, IA32_KERNEL_GS_BASE] {
        assert_eq!(
            wrmsr(&mut c, msr, 0x0000_8000_0000_0000),
            Action::Inject(Event::GP0),
            "{msr:#x}"
        );
    }
    assert_eq!(c.vcpu.msrs[&IA32_FS_BASE], 0);
    assert!(c.vcpu.host.msr_writes.is_empty());
    assert_eq!(
        wrmsr(&mut c, IA32_FS_BASE, 0xffff_8000_0000_0000),
        Action::Advance
    );
    assert_eq!(c.vcpu.msrs[&IA32_FS_BASE], 0xffff_8000_0000_0000);
}

#[test]
fn non_canonical_sysenter_addresses_get_gp() {
    let mut c = cpu("trap=msr:0x175,msr:0x176,msr:0x174");
    assert_eq!(
        wrmsr(&mut c, IA32_SYSENTER_EIP, 1 << 47),
        Action::Inject(Event::GP0)
    );
    assert_eq!(
        wrmsr(&mut c, IA32_SYSENTER_ESP, 1 << 50),
        Action::Inject(Event::GP0)
    );
    assert_eq!(wrmsr(&mut c, IA32_SYSENTER_CS, 0x10), Action::Advance);
    assert_eq!(c.vcpu.msrs[&IA32_SYSENTER_CS], 0x10);
    // With 5-level paging the canonical width is 57 bits.
    c.vcpu.cr4 |= CR4_LA57;
    assert_eq!(wrmsr(&mut c, IA32_SYSENTER_EIP, 1 << 50), Action::Advance);
}

#[test]
fn reserved_efer_bits_get_gp() {
    let mut c = cpu("trap=msr:0xc0000080");
    let efer = c.vcpu.efer;
    assert_eq!(
        wrmsr(&mut c, IA32_EFER, efer | 1 << 20),
        Action::Inject(Event::GP0)
    );
    assert_eq!(c.vcpu.efer, efer);
    // LME may not change while paging is on.
    assert_eq!(
        wrmsr(&mut c, IA32_EFER, efer & !EFER_LME),
        Action::Inject(Event::GP0)
    );
    // Clearing NXE is fine; LMA is the processor's and stays as it was.
    assert_eq!(
        wrmsr(&mut c, IA32_EFER, EFER_LME | EFER_SCE),
        Action::Advance
    );
    assert_eq!(c.vcpu.efer, EFER_LME | EFER_SCE | EFER_LMA);
}

#[test]
fn reserved_debugctl_bits_get_gp() {
    let mut c = cpu("trap=msr:0x1d9");
    assert_eq!(
        wrmsr(&mut c, IA32_DEBUGCTL, 1 << 20),
        Action::Inject(Event::GP0)
    );
    assert_eq!(wrmsr(&mut c, IA32_DEBUGCTL, DEBUGCTL_BTF), Action::Advance);
    assert_eq!(c.vcpu.msrs[&IA32_DEBUGCTL], DEBUGCTL_BTF);
}

#[test]
fn other_msrs_go_to_the_host_and_its_gp_comes_back() {
    let mut c = cpu("trap=msr:0x1b");
    c.vcpu.host.msrs.insert(0x1B, 0xfee0_0900);
    assert_eq!(rdmsr(&mut c, 0x1B), Action::Advance);
    assert_eq!(edx_eax(&c), 0xfee0_0900);
    assert_eq!(wrmsr(&mut c, 0x1B, 0xfee0_0800), Action::Advance);
    assert_eq!(c.vcpu.host.msr_writes, [(0x1B, 0xfee0_0800)]);
    // An MSR outside the bitmaps that the processor lacks: #GP, as on bare metal.
    assert_eq!(rdmsr(&mut c, 0xC001_1029), Action::Inject(Event::GP0));
    assert_eq!(wrmsr(&mut c, 0xC001_1029, 0), Action::Inject(Event::GP0));
}

#[test]
fn the_tsc_msrs_are_virtual_in_a_virtual_time_mode() {
    let mut c = cpu("tsc=offset:0x1000");
    c.vcpu.host.tsc = 5000;
    c.exit_tsc = 5000;
    assert_eq!(rdmsr(&mut c, IA32_TSC), Action::Advance);
    assert_eq!(edx_eax(&c), 5000 + 0x1000, "host + offset");
    // Writing the TSC moves the guest's clock, never the host's, and TSC_ADJUST with it.
    wrmsr(&mut c, IA32_TSC, 1_000_000);
    assert!(c.vcpu.host.msr_writes.is_empty());
    let now = c.vcpu.host.tsc;
    assert_eq!(c.time.v.guest_at(now), 1_000_000);
    assert_eq!(
        c.vcpu.tsc_offset, c.time.v.offset,
        "the processor has the new offset"
    );
    rdmsr(&mut c, IA32_TSC_ADJUST);
    assert_eq!(
        edx_eax(&c),
        1_000_000 - now - 0x1000,
        "TSC_ADJUST moved by the same amount"
    );
}

#[test]
fn the_deadline_is_programmed_in_host_time() {
    let mut c = cpu("tsc=offset:0x1000");
    c.vcpu.host.msrs.insert(IA32_TSC_DEADLINE, 0);
    assert_eq!(wrmsr(&mut c, IA32_TSC_DEADLINE, 0x9000), Action::Advance);
    assert_eq!(c.vcpu.host.msr_writes, [(IA32_TSC_DEADLINE, 0x8000)]);
    rdmsr(&mut c, IA32_TSC_DEADLINE);
    assert_eq!(edx_eax(&c), 0x9000, "pending: reads back in guest time");
}

#[test]
fn a_deadline_already_passed_fires_at_once_even_below_the_offset() {
    // The guest's TSC runs 2^44 ahead of the host's: a deadline of 1 is long past, and must be
    // armed as "now" (1), not as the wrapped difference, which never comes.
    let mut c = cpu("tsc=offset:0x100000000000");
    c.vcpu.host.msrs.insert(IA32_TSC_DEADLINE, 0);
    assert_eq!(wrmsr(&mut c, IA32_TSC_DEADLINE, 1), Action::Advance);
    assert_eq!(c.vcpu.host.msr_writes, [(IA32_TSC_DEADLINE, 1)]);
}

#[test]
fn under_native_time_a_trapped_tsc_is_the_hosts() {
    // tsc=native has no offset in use: a trapped IA32_TSC is executed on the host, so RDTSC
    // and RDMSR agree.
    let mut c = cpu("trap=msr:0x10");
    c.vcpu.host.msrs.insert(IA32_TSC, 777);
    rdmsr(&mut c, IA32_TSC);
    assert_eq!(edx_eax(&c), 777);
    wrmsr(&mut c, IA32_TSC, 5);
    assert_eq!(c.vcpu.host.msr_writes, [(IA32_TSC, 5)]);
    assert_eq!(c.time.v.offset, 0);
}
