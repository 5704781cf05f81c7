use crate::exit::{Action, Exit};
use crate::testing::{cpu, exit};
use crate::vcpu::Vcpu;
use x86_arch::regs::{CR4_OSXSAVE, CR4_PKE};

#[test]
fn hides_vmx_and_svm_and_zero_extends() {
    let mut c = cpu("");
    c.vcpu
        .host
        .cpuid
        .insert((1, 0), [0x50654, 0, 0x7FFF_FFFF, 0xBFEB_FBFF]);
    c.vcpu
        .host
        .cpuid
        .insert((0x8000_0001, 0), [0, 0, 0xFFFF_FFFF, 0]);
    c.vcpu.gprs = [u64::MAX; 16];
    c.vcpu.gprs[0] = 1;
    c.vcpu.gprs[1] = 0;
    assert_eq!(exit(&mut c, Exit::Cpuid), Action::Advance);
    assert_eq!(c.vcpu.gpr(1) & (1 << 5), 0, "VMX hidden");
    assert_eq!(c.vcpu.gpr(1) >> 32, 0, "ECX zero-extended");
    assert_eq!(c.vcpu.gpr(0), 0x50654);
    assert_eq!(c.vcpu.gpr(2), 0xBFEB_FBFF);
    assert_eq!(c.vcpu.gpr(1) & (1 << 31), 0, "no hypervisor bit by default");
    assert_eq!(c.vcpu.rip, 0x1002, "the instruction retired");
    c.vcpu.gprs[0] = 0x8000_0001;
    exit(&mut c, Exit::Cpuid);
    assert_eq!(c.vcpu.gpr(1) & (1 << 2), 0, "SVM hidden");
}

#[test]
fn osxsave_and_ospke_follow_the_guests_cr4() {
    let mut c = cpu("");
    c.vcpu.host.cpuid.insert((1, 0), [0, 0, 1 << 27, 0]);
    c.vcpu.host.cpuid.insert((7, 0), [0, 0, 1 << 4, 0]);
    c.vcpu.gprs[0] = 1;
    exit(&mut c, Exit::Cpuid);
    assert_eq!(c.vcpu.gpr(1) & (1 << 27), 0, "guest CR4.OSXSAVE is clear");
    c.vcpu.cr4 |= CR4_OSXSAVE;
    c.vcpu.gprs[0] = 1;
    exit(&mut c, Exit::Cpuid);
    assert_ne!(c.vcpu.gpr(1) & (1 << 27), 0);
    c.vcpu.gprs[0] = 7;
    c.vcpu.gprs[1] = 0;
    exit(&mut c, Exit::Cpuid);
    assert_eq!(c.vcpu.gpr(1) & (1 << 4), 0, "guest CR4.PKE is clear");
    c.vcpu.cr4 |= CR4_PKE;
    c.vcpu.gprs[0] = 7;
    c.vcpu.gprs[1] = 0;
    exit(&mut c, Exit::Cpuid);
    assert_ne!(c.vcpu.gpr(1) & (1 << 4), 0);
}

#[test]
fn hypervisor_leaves_only_on_request() {
    let mut c = cpu("");
    c.vcpu.host.cpuid.insert((0x4000_0000, 0), [7, 7, 7, 7]);
    c.vcpu.gprs[0] = 0x4000_0000;
    exit(&mut c, Exit::Cpuid);
    assert_eq!(c.vcpu.gpr(0), 7, "the host's values pass through");
    let mut c = cpu("cpuid-hv=on");
    c.vcpu.gprs[0] = 0x4000_0000;
    exit(&mut c, Exit::Cpuid);
    assert_eq!(c.vcpu.gpr(0), 0x4000_0001);
    let sig: alloc::vec::Vec<u8> = [3u8, 1, 2]
        .iter()
        .flat_map(|&r| (c.vcpu.gpr(r) as u32).to_le_bytes())
        .collect();
    assert_eq!(&sig, b"VigilVigilHV");
    c.vcpu.gprs[0] = 1;
    exit(&mut c, Exit::Cpuid);
    assert_ne!(c.vcpu.gpr(1) & (1 << 31), 0, "hypervisor-present bit");
}

#[test]
fn user_policy_clears_and_sets_bits() {
    let mut c = cpu("cpuid-clear=7.0:edx:4 cpuid-set=1:ecx:0");
    c.vcpu.host.cpuid.insert((7, 0), [0, 0, 0, 0x10]);
    c.vcpu.gprs[0] = 7;
    exit(&mut c, Exit::Cpuid);
    assert_eq!(c.vcpu.gpr(2), 0);
    c.vcpu.gprs[0] = 1;
    exit(&mut c, Exit::Cpuid);
    assert_eq!(c.vcpu.gpr(1) & 1, 1);
}
