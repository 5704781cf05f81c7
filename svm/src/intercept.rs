//! The intercept vectors of the VMCB control area and the smaller control fields next to them
//! (APM Vol. 2 Table B-1). An intercept bit set to 1 makes the event or instruction cause a
//! #VMEXIT instead of running in the guest (15.9-15.14).

use bitflags::bitflags;

bitflags! {
    /// Offset 0Ch (the manual's "vector 3"): interrupts and the first group of instructions.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Misc1: u32 {
        /// Physical maskable interrupts (15.13.1).
        const INTR = 1 << 0;
        const NMI = 1 << 1;
        const SMI = 1 << 2;
        /// INIT (15.13.3); without it, and with VM_CR.R_INIT, INIT becomes #SX in the host.
        const INIT = 1 << 3;
        /// A virtual interrupt the guest can take now (15.21.4): the interrupt window.
        const VINTR = 1 << 4;
        /// Writes to CR0 that change bits other than TS and MP (15.9.1).
        const CR0_SEL_WRITE = 1 << 5;
        const IDTR_READ = 1 << 6;
        const GDTR_READ = 1 << 7;
        const LDTR_READ = 1 << 8;
        const TR_READ = 1 << 9;
        const IDTR_WRITE = 1 << 10;
        const GDTR_WRITE = 1 << 11;
        const LDTR_WRITE = 1 << 12;
        const TR_WRITE = 1 << 13;
        const RDTSC = 1 << 14;
        const RDPMC = 1 << 15;
        const PUSHF = 1 << 16;
        const POPF = 1 << 17;
        const CPUID = 1 << 18;
        const RSM = 1 << 19;
        const IRET = 1 << 20;
        /// INTn.
        const INTN = 1 << 21;
        const INVD = 1 << 22;
        const PAUSE = 1 << 23;
        const HLT = 1 << 24;
        const INVLPG = 1 << 25;
        const INVLPGA = 1 << 26;
        /// I/O instructions, filtered by the I/O permission map (15.10).
        const IOIO_PROT = 1 << 27;
        /// RDMSR/WRMSR, filtered by the MSR permission map (15.11).
        const MSR_PROT = 1 << 28;
        const TASK_SWITCH = 1 << 29;
        const FERR_FREEZE = 1 << 30;
        /// Shutdown (a triple fault, 15.12).
        const SHUTDOWN = 1 << 31;
    }
}

bitflags! {
    /// Offset 10h (the manual's "vector 4"): the SVM instructions and the second group.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Misc2: u32 {
        /// Must be set, or VMRUN fails its consistency checks (15.5.1).
        const VMRUN = 1 << 0;
        const VMMCALL = 1 << 1;
        const VMLOAD = 1 << 2;
        const VMSAVE = 1 << 3;
        const STGI = 1 << 4;
        const CLGI = 1 << 5;
        const SKINIT = 1 << 6;
        const RDTSCP = 1 << 7;
        const ICEBP = 1 << 8;
        const WBINVD = 1 << 9;
        const MONITOR = 1 << 10;
        const MWAIT = 1 << 11;
        const MWAIT_ARMED = 1 << 12;
        const XSETBV = 1 << 13;
        const RDPRU = 1 << 14;
        /// A trap after EFER writes (SEV-ES).
        const EFER_WRITE_TRAP = 1 << 15;
    }
}

bitflags! {
    /// Offset 14h (the manual's "vector 5").
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Misc3: u32 {
        const INVLPGB = 1 << 0;
        const INVLPGB_ILLEGAL = 1 << 1;
        const INVPCID = 1 << 2;
        const MCOMMIT = 1 << 3;
        const TLBSYNC = 1 << 4;
    }
}

/// The instructions of the SVM instruction set in this vector that a guest must not execute
/// while SVM is hidden from it (15.4, 15.5, 15.14): each is intercepted and answered with #UD.
/// INVLPGA, the last of them, is intercepted by [`Misc1::INVLPGA`]. VMMCALL is intercepted too
/// but handled as a hypercall.
pub const SVM_INSTRUCTIONS: Misc2 = Misc2::VMRUN
    .union(Misc2::VMLOAD)
    .union(Misc2::VMSAVE)
    .union(Misc2::STGI)
    .union(Misc2::CLGI)
    .union(Misc2::SKINIT);

/// TLB_CONTROL values (15.16.2).
pub mod tlb {
    /// Do nothing.
    pub const NOTHING: u64 = 0x00;
    /// Flush the entire TLB, every ASID (the only flush without the flush-by-ASID feature).
    pub const ALL: u64 = 0x01;
    /// Flush this guest's ASID (flush-by-ASID).
    pub const GUEST: u64 = 0x03;
    /// Flush this guest's non-global translations (flush-by-ASID).
    pub const GUEST_NON_GLOBAL: u64 = 0x07;
}

/// The virtual interrupt control field at offset 60h (15.21.4).
pub mod vintr {
    /// Bits 7:0: V_TPR.
    pub const TPR_MASK: u64 = 0xFF;
    /// A virtual interrupt is pending.
    pub const V_IRQ: u64 = 1 << 8;
    /// Bits 19:16: the virtual interrupt's priority.
    pub const PRIO_SHIFT: u32 = 16;
    /// Deliver the virtual interrupt whatever V_TPR says.
    pub const IGN_TPR: u64 = 1 << 20;
    /// Virtualize EFLAGS.IF and the TPR (the host's IF then masks physical interrupts).
    pub const INTR_MASKING: u64 = 1 << 24;
    /// Bits 39:32: the virtual interrupt's vector.
    pub const VECTOR_SHIFT: u32 = 32;
}

/// The nested-paging and SEV enables at offset 90h.
pub mod nested_control {
    pub const NP_ENABLE: u64 = 1 << 0;
    pub const SEV: u64 = 1 << 1;
    pub const SEV_ES: u64 = 1 << 2;
}

/// EFER.SVME: SVM enabled. VMRUN needs it in the host (else #UD) and in the guest's VMCB (else
/// VMEXIT_INVALID, 15.5.1).
pub const EFER_SVME: u64 = 1 << 12;

/// The MSRs of SVM itself (15.30).
pub mod msr {
    /// VM_CR: SVM disable and lock, INIT redirection, A20M masking (15.30.1).
    pub const VM_CR: u32 = 0xC001_0114;
    pub const IGNNE: u32 = 0xC001_0115;
    /// SMM_CTL: SMI entry and exit control (15.30.3).
    pub const SMM_CTL: u32 = 0xC001_0116;
    /// VM_HSAVE_PA: where VMRUN saves the host's state (15.30.4).
    pub const VM_HSAVE_PA: u32 = 0xC001_0117;
    /// The SVM lock key (15.31).
    pub const SVM_KEY: u32 = 0xC001_0118;
    /// TSC_RATIO, with the TscRateMsr feature (15.30.5).
    pub const TSC_RATIO: u32 = 0xC000_0104;

    /// VM_CR bits (15.30.1).
    pub const VM_CR_R_INIT: u64 = 1 << 1;
    pub const VM_CR_DIS_A20M: u64 = 1 << 2;
    pub const VM_CR_LOCK: u64 = 1 << 3;
    pub const VM_CR_SVMDIS: u64 = 1 << 4;
}

/// The MSR permission map (15.11): three 2-KiB vectors, two bits per MSR (read at 2n, write at
/// 2n + 1), for MSRs 0-1FFFh, C000_0000h-C000_1FFFh and C001_0000h-C001_1FFFh. Any other MSR
/// always exits.
pub mod msrpm {
    /// Bytes of the map (two pages).
    pub const SIZE: usize = 8192;
    /// The first MSR of each vector and the vector's byte offset in the map.
    pub const RANGES: [(u32, usize); 3] = [(0, 0), (0xC000_0000, 0x800), (0xC001_0000, 0x1000)];

    /// The bit of `msr`'s read (`write` false) or write permission: (byte, bit), or `None` if
    /// the MSR is outside the three vectors.
    pub const fn bit(msr: u32, write: bool) -> Option<(usize, u8)> {
        let mut i = 0;
        while i < RANGES.len() {
            let (first, base) = RANGES[i];
            if msr >= first && msr - first < 0x2000 {
                let n = (msr - first) as usize * 2 + write as usize;
                return Some((base + n / 8, (n % 8) as u8));
            }
            i += 1;
        }
        None
    }
}

/// The I/O permission map (15.10.1): one bit per port over 12 KiB, so that an access of up to
/// four bytes starting at port FFFFh still finds its bits. An access exits when any of the
/// bits of the ports it touches is set.
pub mod iopm {
    pub const SIZE: usize = 12288;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_permission_bits_follow_the_three_vectors() {
        assert_eq!(msrpm::bit(0, false), Some((0, 0)));
        assert_eq!(msrpm::bit(0, true), Some((0, 1)));
        assert_eq!(msrpm::bit(0x10, false), Some((4, 0)), "IA32_TSC");
        assert_eq!(msrpm::bit(0x1FFF, true), Some((0x7FF, 7)));
        assert_eq!(
            msrpm::bit(0xC000_0080, false),
            Some((0x800 + 0x20, 0)),
            "EFER"
        );
        assert_eq!(
            msrpm::bit(0xC001_0114, true),
            Some((0x1000 + 0x45, 1)),
            "VM_CR"
        );
        assert_eq!(msrpm::bit(0x2000, false), None);
        assert_eq!(msrpm::bit(0xC000_2000, false), None);
        assert_eq!(msrpm::bit(0x4000_0000, false), None);
    }

    #[test]
    fn the_svm_instructions_include_vmrun_but_not_vmmcall() {
        assert!(SVM_INSTRUCTIONS.contains(Misc2::VMRUN | Misc2::SKINIT | Misc2::CLGI));
        assert!(!SVM_INSTRUCTIONS.contains(Misc2::VMMCALL));
        assert_eq!(Misc1::SHUTDOWN.bits(), 0x8000_0000);
        assert_eq!(Misc1::CPUID.bits(), 1 << 18);
    }
}
