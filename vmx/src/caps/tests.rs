use super::*;
use alloc::string::ToString;
use alloc::vec;

/// Capability MSRs shaped like a Skylake-class processor with every feature Vigil uses.
fn full_msrs(msr: u32) -> u64 {
    match msr {
        msr::IA32_VMX_BASIC => 4 | (0x1000 << 32) | (6 << 50) | (1 << 54) | (1 << 55),
        msr::IA32_VMX_PINBASED_CTLS | msr::IA32_VMX_TRUE_PINBASED_CTLS => 0x0000_007f_0000_0016,
        msr::IA32_VMX_PROCBASED_CTLS => 0xfff9_fffe_0401_e172,
        msr::IA32_VMX_TRUE_PROCBASED_CTLS => 0xfff9_fffe_0400_6172,
        msr::IA32_VMX_EXIT_CTLS => 0x01ff_ffff_0003_6dff,
        msr::IA32_VMX_TRUE_EXIT_CTLS => 0x01ff_ffff_0003_6dfb,
        msr::IA32_VMX_ENTRY_CTLS => 0x0003_ffff_0000_11ff,
        msr::IA32_VMX_TRUE_ENTRY_CTLS => 0x0003_ffff_0000_11fb,
        msr::IA32_VMX_MISC => 0x7004_c1e7,
        msr::IA32_VMX_CR0_FIXED0 => 0x8000_0021,
        msr::IA32_VMX_CR0_FIXED1 => 0xffff_ffff,
        msr::IA32_VMX_CR4_FIXED0 => 0x2000,
        msr::IA32_VMX_CR4_FIXED1 => 0x3767ff,
        msr::IA32_VMX_PROCBASED_CTLS2 => 0x0257_3cfe_0000_0000,
        msr::IA32_VMX_EPT_VPID_CAP => 0xf01_0673_4141,
        msr::IA32_VMX_VMFUNC => 1,
        other => panic!("unexpected RDMSR {other:#x}"),
    }
}

#[test]
fn true_msrs_are_used_when_basic_bit_55_is_set() {
    let mut read = vec![];
    let caps = VmxCaps::from_msrs(&mut |m| {
        read.push(m);
        full_msrs(m)
    });
    assert!(read.contains(&msr::IA32_VMX_TRUE_PROCBASED_CTLS));
    assert!(!read.contains(&msr::IA32_VMX_PROCBASED_CTLS));
    // With the TRUE MSR, CR3-load/store exiting may be cleared.
    assert!(caps
        .procbased
        .may_be_0(PrimaryProcBased::CR3_LOAD_EXITING.bits()));
    assert_eq!(caps.revision_id(), 4);
    assert_eq!(caps.vmcs_size(), 0x1000);
    assert_eq!(caps.vmcs_memory_type(), 6);
    assert!(caps.has_ept() && caps.has_vpid() && caps.has_unrestricted_guest());
    assert!(caps.has_mtf() && caps.has_preemption_timer());
    assert!(caps.ept_1g_pages() && caps.ept_2m_pages() && caps.ept_wb() && caps.ept_ad_bits());
    assert!(caps.invept_single() && caps.invept_all());
    assert!(caps.invvpid_individual_address() && caps.invvpid_single() && caps.invvpid_all());
    assert!(caps.invvpid_single_retaining_globals());
    assert_eq!(caps.misc_preemption_timer_rate(), 7);
    assert_eq!(caps.misc_activity_states(), 0b111);
    assert!(caps.activity_state_supported(3) && !caps.activity_state_supported(4));
    assert!(caps.misc_stores_lma());
    assert_eq!(caps.misc_cr3_targets(), 4);
    assert!(
        caps.ept_limitations().is_empty(),
        "{:?}",
        caps.ept_limitations()
    );
}

#[test]
fn plain_msrs_keep_default1_controls() {
    let caps = VmxCaps::from_msrs(&mut |m| {
        let v = full_msrs(m);
        if m == msr::IA32_VMX_BASIC {
            v & !(1 << 55)
        } else {
            v
        }
    });
    assert!(!caps.has_true_controls());
    assert!(!caps
        .procbased
        .may_be_0(PrimaryProcBased::CR3_LOAD_EXITING.bits()));
}

#[test]
fn absent_msrs_are_never_read() {
    // No secondary controls: neither PROCBASED_CTLS2, EPT_VPID_CAP nor VMFUNC may be read.
    let caps = VmxCaps::from_msrs(&mut |m| match m {
        msr::IA32_VMX_PROCBASED_CTLS2 | msr::IA32_VMX_EPT_VPID_CAP | msr::IA32_VMX_VMFUNC => {
            panic!("read absent MSR {m:#x}")
        }
        msr::IA32_VMX_TRUE_PROCBASED_CTLS => full_msrs(m) & !(1 << 63),
        _ => full_msrs(m),
    });
    assert!(!caps.has_secondary() && !caps.has_ept() && !caps.has_vpid());
    assert_eq!(caps.procbased2, Allowed::NONE);

    // Secondary controls without EPT or VPID: no EPT_VPID_CAP.
    let caps = VmxCaps::from_msrs(&mut |m| match m {
        msr::IA32_VMX_EPT_VPID_CAP | msr::IA32_VMX_VMFUNC => panic!("read absent MSR {m:#x}"),
        msr::IA32_VMX_PROCBASED_CTLS2 => 0x0000_0088_0000_0000, // RDTSCP, unrestricted guest
        _ => full_msrs(m),
    });
    assert!(caps.has_secondary() && caps.has_rdtscp() && !caps.has_ept());
    assert_eq!(caps.ept_vpid, 0);
}

#[test]
fn adjust_forces_required_bits_and_drops_unsupported_ones() {
    let allowed = Allowed {
        allowed0: 0x16,
        allowed1: 0x3f,
    };
    let a = adjust(
        allowed,
        PinBased::VMX_PREEMPTION_TIMER | PinBased::NMI_EXITING,
    );
    assert_eq!(a.value.bits(), 0x16 | 0x08);
    assert_eq!(a.dropped, PinBased::VMX_PREEMPTION_TIMER);
    assert_eq!(a.forced.bits(), 0x16);
    assert!(allowed.permits(a.value.bits()));
    assert!(!allowed.permits(0x08));
}

#[test]
fn missing_features_read_as_sentences() {
    let caps_allowed = Allowed {
        allowed0: 0,
        allowed1: SecondaryProcBased::ENABLE_EPT.bits(),
    };
    let a = adjust(
        caps_allowed,
        SecondaryProcBased::ENABLE_EPT
            | SecondaryProcBased::UNRESTRICTED_GUEST
            | SecondaryProcBased::ENABLE_VPID,
    );
    let msgs: alloc::vec::Vec<_> = describe_missing(a.dropped)
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(
        msgs,
        [
            "VPID not supported: TLB is flushed on every VM exit and entry",
            "unrestricted guest not supported: the guest will start with paging on",
        ]
    );
}

#[test]
fn ept_limitations_name_the_fallback() {
    let caps = VmxCaps::from_msrs(&mut |m| match m {
        msr::IA32_VMX_EPT_VPID_CAP => full_msrs(m) & !(1 << 17) & !(1 << 41),
        _ => full_msrs(m),
    });
    let msgs: alloc::vec::Vec<_> = caps
        .ept_limitations()
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(
        msgs,
        [
            "EPT 1 GiB pages not supported: 2 MiB pages are used",
            "single-context INVVPID not supported: all-context INVVPID is used instead",
        ]
    );
}

#[test]
fn fixed_bits_and_unrestricted_exception() {
    let caps = VmxCaps::from_msrs(&mut full_msrs);
    // GRUB hands over with NE clear: FIXED0 forces it.
    assert_eq!(caps.fixed_cr0(0x11), 0x8000_0031);
    assert_eq!(caps.fixed_guest_cr0(0x10, true), 0x30);
    assert_eq!(caps.fixed_guest_cr0(0x10, false), 0x8000_0031);
    assert_eq!(
        caps.fixed_cr4(0x20) & crate::regs::CR4_VMXE,
        crate::regs::CR4_VMXE
    );
    // FIXED1 clears bits that may not be 1 (bit 31 of CR4 here).
    assert_eq!(caps.fixed_cr4(1 << 31) & (1 << 31), 0);
}
