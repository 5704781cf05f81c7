//! VMX capability MSRs (SDM Vol. 3D Appendix A) and adjusting control words to what the
//! processor allows.

mod controls;
mod instructions;
pub mod msr;

pub use instructions::{instruction_controls, INSTRUCTION_CONTROLS};

pub use controls::{
    ControlSet, EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased,
};

use alloc::vec::Vec;
use core::fmt;

/// The allowed settings of one 32-bit control word (SDM Vol. 3D A.3-A.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Bits that must be 1 (the MSR's low half: "allowed 0-settings" are 0 only where this is 0).
    pub allowed0: u32,
    /// Bits that may be 1 (the MSR's high half).
    pub allowed1: u32,
}

impl Allowed {
    /// Splits a capability MSR: bits 31:0 give the allowed 0-settings, bits 63:32 the allowed
    /// 1-settings (SDM Vol. 3D A.3.1).
    pub const fn from_msr(value: u64) -> Self {
        Allowed {
            allowed0: value as u32,
            allowed1: (value >> 32) as u32,
        }
    }

    /// Everything may be 0 and nothing may be 1: how a control word the processor lacks
    /// (e.g. secondary controls without "activate secondary controls") behaves.
    pub const NONE: Allowed = Allowed {
        allowed0: 0,
        allowed1: 0,
    };

    pub const fn may_be_1(self, bits: u32) -> bool {
        self.allowed1 & bits == bits
    }

    pub const fn may_be_0(self, bits: u32) -> bool {
        self.allowed0 & bits == 0
    }

    /// True if `value` respects both halves (SDM Vol. 3C 27.2.1.1).
    pub const fn permits(self, value: u32) -> bool {
        value & self.allowed0 == self.allowed0 && value & !self.allowed1 == 0
    }
}

/// The outcome of [`adjust`]: the value to write and how it differs from the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adjusted<T> {
    /// `(requested | allowed0) & allowed1`: what to write into the VMCS.
    pub value: T,
    /// Requested bits the processor does not allow to be 1.
    pub dropped: T,
    /// Bits the processor forces to 1 although they were not requested.
    pub forced: T,
}

/// Fits a requested control word to the processor (SDM Vol. 3D A.3-A.5): bits that must be 1
/// are set, bits that may not be 1 are cleared, and both changes are reported.
pub fn adjust<T: bitflags::Flags<Bits = u32>>(allowed: Allowed, requested: T) -> Adjusted<T> {
    let req = requested.bits();
    Adjusted {
        value: T::from_bits_retain((req | allowed.allowed0) & allowed.allowed1),
        dropped: T::from_bits_retain(req & !allowed.allowed1),
        forced: T::from_bits_retain(allowed.allowed0 & !req),
    }
}

/// One feature the processor lacks and what happens without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingFeature {
    pub feature: &'static str,
    pub consequence: &'static str,
}

impl fmt::Display for MissingFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} not supported: {}", self.feature, self.consequence)
    }
}

/// Explains each dropped bit of an [`Adjusted`] result, e.g.
/// "unrestricted guest not supported: the guest will start with paging on".
pub fn describe_missing<T: ControlSet>(dropped: T) -> Vec<MissingFeature> {
    let bits = dropped.bits();
    (0..32)
        .filter(|b| bits & (1 << b) != 0)
        .map(|b| MissingFeature {
            feature: T::feature(b),
            consequence: T::fallback(b),
        })
        .collect()
}

/// The VMX capabilities of one processor, as read from its capability MSRs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxCaps {
    pub basic: u64,
    pub pinbased: Allowed,
    pub procbased: Allowed,
    pub procbased2: Allowed,
    pub exit: Allowed,
    pub entry: Allowed,
    pub misc: u64,
    pub ept_vpid: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    pub vmfunc: u64,
}

impl VmxCaps {
    /// Reads the capability MSRs through `rdmsr`, touching only MSRs that exist (reading an
    /// absent one raises #GP):
    /// - the TRUE_* control MSRs replace the plain ones when IA32_VMX_BASIC bit 55 says they
    ///   exist, because only they allow clearing "default1" controls such as CR3-load exiting
    ///   (SDM Vol. 3D A.2);
    /// - IA32_VMX_PROCBASED_CTLS2 only if "activate secondary controls" may be 1 (A.3.3);
    /// - IA32_VMX_EPT_VPID_CAP only if EPT or VPID may be 1 (A.10);
    /// - IA32_VMX_VMFUNC only if "enable VM functions" may be 1 (A.11).
    pub fn from_msrs(rdmsr: &mut dyn FnMut(u32) -> u64) -> VmxCaps {
        let basic = rdmsr(msr::IA32_VMX_BASIC);
        let true_ctls = basic & (1 << 55) != 0;
        let pick = |plain: u32, tru: u32| if true_ctls { tru } else { plain };
        let pinbased = Allowed::from_msr(rdmsr(pick(
            msr::IA32_VMX_PINBASED_CTLS,
            msr::IA32_VMX_TRUE_PINBASED_CTLS,
        )));
        let procbased = Allowed::from_msr(rdmsr(pick(
            msr::IA32_VMX_PROCBASED_CTLS,
            msr::IA32_VMX_TRUE_PROCBASED_CTLS,
        )));
        let exit = Allowed::from_msr(rdmsr(pick(
            msr::IA32_VMX_EXIT_CTLS,
            msr::IA32_VMX_TRUE_EXIT_CTLS,
        )));
        let entry = Allowed::from_msr(rdmsr(pick(
            msr::IA32_VMX_ENTRY_CTLS,
            msr::IA32_VMX_TRUE_ENTRY_CTLS,
        )));
        let misc = rdmsr(msr::IA32_VMX_MISC);
        let cr0_fixed0 = rdmsr(msr::IA32_VMX_CR0_FIXED0);
        let cr0_fixed1 = rdmsr(msr::IA32_VMX_CR0_FIXED1);
        let cr4_fixed0 = rdmsr(msr::IA32_VMX_CR4_FIXED0);
        let cr4_fixed1 = rdmsr(msr::IA32_VMX_CR4_FIXED1);
        let procbased2 = if procbased.may_be_1(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits())
        {
            Allowed::from_msr(rdmsr(msr::IA32_VMX_PROCBASED_CTLS2))
        } else {
            Allowed::NONE
        };
        let ept_or_vpid = SecondaryProcBased::ENABLE_EPT | SecondaryProcBased::ENABLE_VPID;
        let ept_vpid = if procbased2.allowed1 & ept_or_vpid.bits() != 0 {
            rdmsr(msr::IA32_VMX_EPT_VPID_CAP)
        } else {
            0
        };
        let vmfunc = if procbased2.may_be_1(SecondaryProcBased::ENABLE_VM_FUNCTIONS.bits()) {
            rdmsr(msr::IA32_VMX_VMFUNC)
        } else {
            0
        };
        VmxCaps {
            basic,
            pinbased,
            procbased,
            procbased2,
            exit,
            entry,
            misc,
            ept_vpid,
            cr0_fixed0,
            cr0_fixed1,
            cr4_fixed0,
            cr4_fixed1,
            vmfunc,
        }
    }

    // IA32_VMX_BASIC (SDM Vol. 3D A.1)

    /// VMCS revision identifier: bits 30:0, written to the first word of VMXON and VMCS regions.
    pub const fn revision_id(&self) -> u32 {
        self.basic as u32 & 0x7fff_ffff
    }
    /// Bytes to allocate for a VMXON or VMCS region (bits 44:32, at most 4096).
    pub const fn vmcs_size(&self) -> u32 {
        ((self.basic >> 32) & 0x1fff) as u32
    }
    /// Bit 48: VMXON/VMCS/bitmap addresses limited to 32 bits.
    pub const fn addresses_limited_to_32_bits(&self) -> bool {
        self.basic & (1 << 48) != 0
    }
    /// Bits 53:50: memory type the processor uses for the VMCS (6 = write-back).
    pub const fn vmcs_memory_type(&self) -> u8 {
        ((self.basic >> 50) & 0xf) as u8
    }
    /// Bit 54: INS/OUTS exits report instruction information.
    pub const fn ins_outs_info(&self) -> bool {
        self.basic & (1 << 54) != 0
    }
    /// Bit 55: TRUE_* control MSRs exist.
    pub const fn has_true_controls(&self) -> bool {
        self.basic & (1 << 55) != 0
    }
    /// Bit 56: hardware exceptions may be injected with or without an error code regardless of
    /// vector, which lifts one event-injection check (SDM Vol. 3C 27.2.1.3).
    pub const fn relaxed_error_code_injection(&self) -> bool {
        self.basic & (1 << 56) != 0
    }

    // Control availability

    pub const fn has_secondary(&self) -> bool {
        self.procbased
            .may_be_1(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits())
    }
    const fn secondary_allows(&self, bit: SecondaryProcBased) -> bool {
        self.has_secondary() && self.procbased2.may_be_1(bit.bits())
    }
    pub const fn has_ept(&self) -> bool {
        self.secondary_allows(SecondaryProcBased::ENABLE_EPT)
    }
    pub const fn has_vpid(&self) -> bool {
        self.secondary_allows(SecondaryProcBased::ENABLE_VPID)
    }
    pub const fn has_unrestricted_guest(&self) -> bool {
        self.secondary_allows(SecondaryProcBased::UNRESTRICTED_GUEST)
    }
    pub const fn has_tsc_scaling(&self) -> bool {
        self.secondary_allows(SecondaryProcBased::USE_TSC_SCALING)
    }
    pub const fn has_rdtscp(&self) -> bool {
        self.secondary_allows(SecondaryProcBased::ENABLE_RDTSCP)
    }
    pub const fn has_invpcid(&self) -> bool {
        self.secondary_allows(SecondaryProcBased::ENABLE_INVPCID)
    }
    pub const fn has_xsaves(&self) -> bool {
        self.secondary_allows(SecondaryProcBased::ENABLE_XSAVES_XRSTORS)
    }
    pub const fn has_pml(&self) -> bool {
        self.secondary_allows(SecondaryProcBased::ENABLE_PML)
    }
    pub const fn has_mtf(&self) -> bool {
        self.procbased
            .may_be_1(PrimaryProcBased::MONITOR_TRAP_FLAG.bits())
    }
    pub const fn has_msr_bitmaps(&self) -> bool {
        self.procbased
            .may_be_1(PrimaryProcBased::USE_MSR_BITMAPS.bits())
    }
    pub const fn has_io_bitmaps(&self) -> bool {
        self.procbased
            .may_be_1(PrimaryProcBased::USE_IO_BITMAPS.bits())
    }
    pub const fn has_tsc_offsetting(&self) -> bool {
        self.procbased
            .may_be_1(PrimaryProcBased::USE_TSC_OFFSETTING.bits())
    }
    pub const fn has_preemption_timer(&self) -> bool {
        self.pinbased
            .may_be_1(PinBased::VMX_PREEMPTION_TIMER.bits())
    }
    pub const fn has_virtual_nmis(&self) -> bool {
        self.pinbased.may_be_1(PinBased::VIRTUAL_NMIS.bits())
    }

    // IA32_VMX_MISC (SDM Vol. 3D A.6)

    /// The preemption timer counts down by 1 each time TSC bit `rate` changes (bits 4:0).
    pub const fn misc_preemption_timer_rate(&self) -> u8 {
        (self.misc & 0x1f) as u8
    }
    /// Bit 5: VM exits store EFER.LMA into the "IA-32e mode guest" entry control.
    pub const fn misc_stores_lma(&self) -> bool {
        self.misc & (1 << 5) != 0
    }
    /// Bits 8:6 as a mask: bit 0 = HLT, bit 1 = shutdown, bit 2 = wait-for-SIPI.
    pub const fn misc_activity_states(&self) -> u8 {
        ((self.misc >> 6) & 0x7) as u8
    }
    /// Whether the guest activity state `state` (1 = HLT, 2 = shutdown, 3 = wait-for-SIPI)
    /// may be used; active (0) always may.
    pub const fn activity_state_supported(&self, state: u64) -> bool {
        match state {
            0 => true,
            1..=3 => self.misc_activity_states() & (1 << (state - 1)) != 0,
            _ => false,
        }
    }
    /// Bits 24:16: how many CR3-target values the processor supports.
    pub const fn misc_cr3_targets(&self) -> u32 {
        ((self.misc >> 16) & 0x1ff) as u32
    }
    /// Bits 27:25: recommended maximum entries per MSR list, 512 * (N + 1).
    pub const fn misc_max_msr_list(&self) -> u32 {
        512 * (((self.misc >> 25) & 7) as u32 + 1)
    }
    /// Bit 29: VMWRITE may write the VM-exit information fields.
    pub const fn misc_vmwrite_exit_info(&self) -> bool {
        self.misc & (1 << 29) != 0
    }
    /// Bit 30: software interrupts and exceptions may be injected with instruction length 0.
    pub const fn misc_zero_length_injection(&self) -> bool {
        self.misc & (1 << 30) != 0
    }

    // IA32_VMX_EPT_VPID_CAP (SDM Vol. 3D A.10)

    const fn ept_bit(&self, bit: u32) -> bool {
        self.ept_vpid & (1 << bit) != 0
    }
    pub const fn ept_execute_only(&self) -> bool {
        self.ept_bit(0)
    }
    pub const fn ept_walk_length_4(&self) -> bool {
        self.ept_bit(6)
    }
    pub const fn ept_walk_length_5(&self) -> bool {
        self.ept_bit(7)
    }
    pub const fn ept_uc(&self) -> bool {
        self.ept_bit(8)
    }
    pub const fn ept_wb(&self) -> bool {
        self.ept_bit(14)
    }
    pub const fn ept_2m_pages(&self) -> bool {
        self.ept_bit(16)
    }
    pub const fn ept_1g_pages(&self) -> bool {
        self.ept_bit(17)
    }
    pub const fn has_invept(&self) -> bool {
        self.ept_bit(20)
    }
    pub const fn ept_ad_bits(&self) -> bool {
        self.ept_bit(21)
    }
    pub const fn ept_advanced_exit_info(&self) -> bool {
        self.ept_bit(22)
    }
    pub const fn invept_single(&self) -> bool {
        self.ept_bit(25)
    }
    pub const fn invept_all(&self) -> bool {
        self.ept_bit(26)
    }
    pub const fn has_invvpid(&self) -> bool {
        self.ept_bit(32)
    }
    pub const fn invvpid_individual_address(&self) -> bool {
        self.ept_bit(40)
    }
    pub const fn invvpid_single(&self) -> bool {
        self.ept_bit(41)
    }
    pub const fn invvpid_all(&self) -> bool {
        self.ept_bit(42)
    }
    pub const fn invvpid_single_retaining_globals(&self) -> bool {
        self.ept_bit(43)
    }

    /// EPT-related gaps in an otherwise usable EPT/VPID implementation, each with the fallback a
    /// hypervisor takes. Empty when EPT and VPID are absent altogether: that is reported through
    /// [`describe_missing`] on the secondary controls.
    pub fn ept_limitations(&self) -> Vec<MissingFeature> {
        let mut out = Vec::new();
        let mut note = |missing: bool, feature, consequence| {
            if missing {
                out.push(MissingFeature {
                    feature,
                    consequence,
                });
            }
        };
        if self.has_ept() {
            note(
                !self.ept_walk_length_4(),
                "EPT 4-level walk",
                "EPT cannot be used",
            );
            note(
                !self.ept_wb(),
                "EPT write-back paging structures",
                "EPT tables are accessed uncached",
            );
            note(
                !self.ept_2m_pages(),
                "EPT 2 MiB pages",
                "only 4 KiB pages are used, so EPT tables take more memory",
            );
            note(
                !self.ept_1g_pages(),
                "EPT 1 GiB pages",
                "2 MiB pages are used",
            );
            note(
                !self.ept_ad_bits(),
                "EPT accessed/dirty flags",
                "dirty tracking needs write protection",
            );
            note(
                !self.has_invept(),
                "INVEPT",
                "stale EPT translations cannot be flushed",
            );
            note(
                self.has_invept() && !self.invept_single(),
                "single-context INVEPT",
                "all-context INVEPT is used instead",
            );
        }
        if self.has_vpid() {
            note(
                !self.has_invvpid(),
                "INVVPID",
                "VPID is left off, so the TLB is flushed on every exit and entry",
            );
            note(
                self.has_invvpid() && !self.invvpid_single(),
                "single-context INVVPID",
                "all-context INVVPID is used instead",
            );
            note(
                self.has_invvpid() && !self.invvpid_individual_address(),
                "individual-address INVVPID",
                "a single-context flush is used instead",
            );
        }
        out
    }

    // CR0/CR4 fixed bits (SDM Vol. 3D A.7, A.8)

    /// Forces the bits FIXED0 says must be 1 and clears those FIXED1 says must be 0. Use it for
    /// CR0 before VMXON and for the host CR0 (SDM Vol. 3C 24.8, 27.2.2).
    pub const fn fixed_cr0(&self, value: u64) -> u64 {
        (value | self.cr0_fixed0) & self.cr0_fixed1
    }

    /// Like [`Self::fixed_cr0`] for a guest CR0: with unrestricted guest, PE and PG may be 0
    /// even though FIXED0 requires them (SDM Vol. 3C 27.3.1.1).
    pub const fn fixed_guest_cr0(&self, value: u64, unrestricted: bool) -> u64 {
        (value | self.guest_cr0_must_be_1(unrestricted)) & self.cr0_fixed1
    }

    /// The CR0 bits that must be 1 in a guest (PE and PG exempt under unrestricted guest).
    pub const fn guest_cr0_must_be_1(&self, unrestricted: bool) -> u64 {
        if unrestricted {
            self.cr0_fixed0 & !(crate::regs::CR0_PE | crate::regs::CR0_PG)
        } else {
            self.cr0_fixed0
        }
    }

    /// Forces the CR4 bits that FIXED0/FIXED1 fix (SDM Vol. 3D A.8).
    pub const fn fixed_cr4(&self, value: u64) -> u64 {
        (value | self.cr4_fixed0) & self.cr4_fixed1
    }
}

#[cfg(test)]
mod bochs_models;
#[cfg(test)]
mod bochs_tests;
#[cfg(test)]
mod tests;
