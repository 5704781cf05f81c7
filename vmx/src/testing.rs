//! Fixtures shared by the host tests.

use crate::caps::{msr, VmxCaps};

/// Capability MSRs of a processor with every feature the checks look at, shaped like a recent
/// Intel part (TRUE controls, 4 CR3 targets, HLT/shutdown/wait-for-SIPI, 2M/1G EPT pages,
/// A/D bits, all INVEPT/INVVPID types, EPTP switching).
pub fn rich_msrs(m: u32) -> u64 {
    match m {
        msr::IA32_VMX_BASIC => 4 | (0x1000 << 32) | (6 << 50) | (1 << 54) | (1 << 55),
        msr::IA32_VMX_PINBASED_CTLS | msr::IA32_VMX_TRUE_PINBASED_CTLS => 0x0000_00ff_0000_0016,
        msr::IA32_VMX_PROCBASED_CTLS => 0xfff9_fffe_0401_e172,
        msr::IA32_VMX_TRUE_PROCBASED_CTLS => 0xfff9_fffe_0400_6172,
        msr::IA32_VMX_EXIT_CTLS => 0x7fff_ffff_0003_6dff,
        msr::IA32_VMX_TRUE_EXIT_CTLS => 0x7fff_ffff_0003_6dfb,
        msr::IA32_VMX_ENTRY_CTLS => 0x00ff_ffff_0000_11ff,
        msr::IA32_VMX_TRUE_ENTRY_CTLS => 0x00ff_ffff_0000_11fb,
        msr::IA32_VMX_MISC => 0x7004_c1e7,
        msr::IA32_VMX_CR0_FIXED0 => 0x8000_0021,
        msr::IA32_VMX_CR0_FIXED1 => 0xffff_ffff,
        msr::IA32_VMX_CR4_FIXED0 => 0x2000,
        msr::IA32_VMX_CR4_FIXED1 => 0x01f7_7fff,
        msr::IA32_VMX_PROCBASED_CTLS2 => 0xdfff_ffff_0000_0000,
        msr::IA32_VMX_EPT_VPID_CAP => 0xf01_0673_4141,
        msr::IA32_VMX_VMFUNC => 1,
        other => panic!("unexpected RDMSR {other:#x}"),
    }
}

pub fn rich_caps() -> VmxCaps {
    VmxCaps::from_msrs(&mut rich_msrs)
}
