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

fn cpuid_of(
    c: &mut crate::cpu::Cpu<crate::testing::FakeVcpu>,
    leaf: u32,
    subleaf: u32,
) -> [u64; 4] {
    c.vcpu.gprs[0] = leaf as u64;
    c.vcpu.gprs[1] = subleaf as u64;
    exit(c, Exit::Cpuid);
    [c.vcpu.gpr(0), c.vcpu.gpr(3), c.vcpu.gpr(1), c.vcpu.gpr(2)]
}

#[test]
fn smx_sgx_pt_pconfig_and_msrlist_are_never_shown() {
    let mut c = cpu("");
    c.vcpu.host.cpuid.insert((1, 0), [0, 0, u32::MAX, 0]);
    c.vcpu
        .host
        .cpuid
        .insert((7, 0), [2, u32::MAX, u32::MAX, u32::MAX]);
    c.vcpu.host.cpuid.insert((7, 1), [u32::MAX, 0, 0, 0]);
    c.vcpu.host.cpuid.insert((0x12, 0), [1, 2, 3, 4]);
    c.vcpu.host.cpuid.insert((0x14, 0), [1, 2, 3, 4]);
    let leaf1 = cpuid_of(&mut c, 1, 0);
    assert_eq!(leaf1[2] & (1 << 6), 0, "SMX: GETSEC would get #UD");
    let leaf7 = cpuid_of(&mut c, 7, 0);
    assert_eq!(leaf7[1] & (1 << 2 | 1 << 25), 0, "SGX and Processor Trace");
    assert_eq!(leaf7[2] & (1 << 30), 0, "SGX launch control");
    assert_eq!(leaf7[3] & (1 << 18), 0, "PCONFIG");
    assert_ne!(
        leaf7[1] & (1 << 10),
        0,
        "INVPCID stays: the fake backend enables it"
    );
    assert_eq!(cpuid_of(&mut c, 7, 1)[0] & (1 << 27), 0, "MSRLIST");
    assert_eq!(cpuid_of(&mut c, 0x12, 0), [0; 4], "SGX's own leaf");
    assert_eq!(
        cpuid_of(&mut c, 0x14, 0),
        [0; 4],
        "Processor Trace's own leaf"
    );
}

#[test]
fn features_the_backend_cannot_enable_are_hidden() {
    use x86_arch::cpuid::{Feature, Features};
    let mut c = cpu("");
    c.vcpu.hidden = Features::of(&[Feature::Waitpkg, Feature::Xsaves, Feature::Rdtscp]);
    c.vcpu.host.cpuid.insert((7, 0), [2, u32::MAX, u32::MAX, 0]);
    c.vcpu.host.cpuid.insert((0xD, 1), [0xF, 0, 0, 0]);
    c.vcpu
        .host
        .cpuid
        .insert((0x8000_0001, 0), [0, 0, 0, u32::MAX]);
    let leaf7 = cpuid_of(&mut c, 7, 0);
    assert_eq!(leaf7[2] & (1 << 5), 0, "WAITPKG");
    assert_ne!(leaf7[2] & (1 << 22), 0, "RDPID was not named");
    assert_eq!(cpuid_of(&mut c, 0xD, 1)[0], 0x7, "XSAVES");
    assert_eq!(
        cpuid_of(&mut c, 0x8000_0001, 0)[3],
        !(1u32 << 27) as u64,
        "RDTSCP"
    );
}
