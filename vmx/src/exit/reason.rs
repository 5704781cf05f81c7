//! Basic exit reasons (SDM Vol. 3D Appendix C) and the exit-reason field (SDM Vol. 3C 25.9.1).

use core::fmt;

macro_rules! exit_reasons {
    ($( $variant:ident = $n:literal, $name:literal; )*) => {
        /// A basic exit reason: bits 15:0 of the exit-reason field (SDM Vol. 3D Appendix C).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum ExitReason {
            $( $variant, )*
            /// A number Appendix C does not define (35, 38, 42, 78 and above).
            Unknown(u16),
        }

        impl ExitReason {
            /// Every defined basic exit reason, in numeric order.
            pub const ALL: &'static [ExitReason] = &[ $( ExitReason::$variant, )* ];

            #[inline]
            pub const fn from_u16(n: u16) -> ExitReason {
                match n {
                    $( $n => ExitReason::$variant, )*
                    other => ExitReason::Unknown(other),
                }
            }

            pub const fn as_u16(self) -> u16 {
                match self {
                    $( ExitReason::$variant => $n, )*
                    ExitReason::Unknown(n) => n,
                }
            }

            /// The reason in the SDM's words.
            pub const fn name(self) -> &'static str {
                match self {
                    $( ExitReason::$variant => $name, )*
                    ExitReason::Unknown(_) => "undefined exit reason",
                }
            }
        }
    };
}

exit_reasons! {
    ExceptionOrNmi = 0, "exception or NMI";
    ExternalInterrupt = 1, "external interrupt";
    TripleFault = 2, "triple fault";
    InitSignal = 3, "INIT signal";
    StartupIpi = 4, "start-up IPI";
    IoSmi = 5, "I/O SMI";
    OtherSmi = 6, "other SMI";
    InterruptWindow = 7, "interrupt window";
    NmiWindow = 8, "NMI window";
    TaskSwitch = 9, "task switch";
    Cpuid = 10, "CPUID";
    Getsec = 11, "GETSEC";
    Hlt = 12, "HLT";
    Invd = 13, "INVD";
    Invlpg = 14, "INVLPG";
    Rdpmc = 15, "RDPMC";
    Rdtsc = 16, "RDTSC";
    Rsm = 17, "RSM";
    Vmcall = 18, "VMCALL";
    Vmclear = 19, "VMCLEAR";
    Vmlaunch = 20, "VMLAUNCH";
    Vmptrld = 21, "VMPTRLD";
    Vmptrst = 22, "VMPTRST";
    Vmread = 23, "VMREAD";
    Vmresume = 24, "VMRESUME";
    Vmwrite = 25, "VMWRITE";
    Vmxoff = 26, "VMXOFF";
    Vmxon = 27, "VMXON";
    ControlRegisterAccess = 28, "control-register access";
    MovDr = 29, "MOV DR";
    IoInstruction = 30, "I/O instruction";
    Rdmsr = 31, "RDMSR";
    Wrmsr = 32, "WRMSR";
    InvalidGuestState = 33, "VM-entry failure due to invalid guest state";
    MsrLoading = 34, "VM-entry failure due to MSR loading";
    Mwait = 36, "MWAIT";
    MonitorTrapFlag = 37, "monitor trap flag";
    Monitor = 39, "MONITOR";
    Pause = 40, "PAUSE";
    MachineCheckDuringEntry = 41, "VM-entry failure due to machine-check event";
    TprBelowThreshold = 43, "TPR below threshold";
    ApicAccess = 44, "APIC access";
    VirtualizedEoi = 45, "virtualized EOI";
    GdtrIdtrAccess = 46, "access to GDTR or IDTR";
    LdtrTrAccess = 47, "access to LDTR or TR";
    EptViolation = 48, "EPT violation";
    EptMisconfiguration = 49, "EPT misconfiguration";
    Invept = 50, "INVEPT";
    Rdtscp = 51, "RDTSCP";
    PreemptionTimer = 52, "VMX-preemption timer expired";
    Invvpid = 53, "INVVPID";
    Wbinvd = 54, "WBINVD or WBNOINVD";
    Xsetbv = 55, "XSETBV";
    ApicWrite = 56, "APIC write";
    Rdrand = 57, "RDRAND";
    Invpcid = 58, "INVPCID";
    Vmfunc = 59, "VMFUNC";
    Encls = 60, "ENCLS";
    Rdseed = 61, "RDSEED";
    PmlFull = 62, "page-modification log full";
    Xsaves = 63, "XSAVES";
    Xrstors = 64, "XRSTORS";
    Pconfig = 65, "PCONFIG";
    SppEvent = 66, "SPP-related event";
    Umwait = 67, "UMWAIT";
    Tpause = 68, "TPAUSE";
    Loadiwkey = 69, "LOADIWKEY";
    Enclv = 70, "ENCLV";
    SgxConflict = 71, "SGX conflict";
    EnqcmdPasidFailure = 72, "ENQCMD PASID translation failure";
    EnqcmdsPasidFailure = 73, "ENQCMDS PASID translation failure";
    BusLock = 74, "bus lock";
    InstructionTimeout = 75, "instruction timeout";
    Seamcall = 76, "SEAMCALL";
    Tdcall = 77, "TDCALL";
}

impl ExitReason {
    /// Reasons that only arise from a failed VM entry (SDM Vol. 3C 27.8): the guest never ran.
    pub const fn is_entry_failure(self) -> bool {
        matches!(
            self,
            ExitReason::InvalidGuestState
                | ExitReason::MsrLoading
                | ExitReason::MachineCheckDuringEntry
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Unknown(n) => write!(f, "undefined exit reason {n}"),
            r => write!(f, "{} ({})", r.name(), r.as_u16()),
        }
    }
}

/// The whole 32-bit exit-reason field (SDM Vol. 3C 25.9.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitReasonField(pub u32);

impl ExitReasonField {
    /// Bits 15:0.
    pub const fn basic(self) -> u16 {
        self.0 as u16
    }
    pub const fn reason(self) -> ExitReason {
        ExitReason::from_u16(self.basic())
    }
    /// Bit 26: a bus lock was detected while the instruction ran (with VMM bus-lock detection).
    pub const fn bus_lock_detected(self) -> bool {
        self.0 & (1 << 26) != 0
    }
    /// Bit 27: the exit came from enclave mode.
    pub const fn from_enclave(self) -> bool {
        self.0 & (1 << 27) != 0
    }
    /// Bit 28: an MTF VM exit was pending when an SMI arrived (dual-monitor treatment).
    pub const fn pending_mtf(self) -> bool {
        self.0 & (1 << 28) != 0
    }
    /// Bit 29: the exit was from VMX root operation (SMM VM exits only).
    pub const fn from_vmx_root(self) -> bool {
        self.0 & (1 << 29) != 0
    }
    /// Bit 31: VM entry failed; the guest state was never loaded.
    pub const fn entry_failure(self) -> bool {
        self.0 & (1 << 31) != 0
    }
}

impl fmt::Display for ExitReasonField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason())?;
        if self.entry_failure() {
            f.write_str(", VM-entry failure")?;
        }
        if self.from_enclave() {
            f.write_str(", from enclave")?;
        }
        if self.bus_lock_detected() {
            f.write_str(", bus lock detected")?;
        }
        if self.pending_mtf() {
            f.write_str(", pending MTF")?;
        }
        if self.from_vmx_root() {
            f.write_str(", from VMX root")?;
        }
        Ok(())
    }
}

/// Exit qualification for the VM-entry failures with reasons 33 and 34
/// (SDM Vol. 3C 27.8, Table 28-1).
pub fn entry_failure_qualification_name(reason: ExitReason, qualification: u64) -> &'static str {
    match (reason, qualification) {
        (ExitReason::MsrLoading, _) => "entry number (from 1) of the MSR-load entry that failed",
        (_, 0) => "no further information",
        (_, 2) => "PDPTE could not be loaded",
        (_, 3) => "injected NMI blocked by a pending NMI-unblocking condition",
        (_, 4) => "invalid VMCS link pointer",
        _ => "reserved entry-failure qualification",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn numbers_round_trip_and_holes_are_unknown() {
        for &r in ExitReason::ALL {
            assert_eq!(ExitReason::from_u16(r.as_u16()), r);
        }
        assert_eq!(ExitReason::ALL.len(), 78 - 3);
        for hole in [35, 38, 42, 78, 0xffff] {
            assert_eq!(ExitReason::from_u16(hole), ExitReason::Unknown(hole));
        }
        assert_eq!(ExitReason::from_u16(48), ExitReason::EptViolation);
        assert_eq!(ExitReason::from_u16(77), ExitReason::Tdcall);
    }

    #[test]
    fn field_decodes_flags() {
        let f = ExitReasonField(0x8000_0021);
        assert!(f.entry_failure());
        assert_eq!(f.reason(), ExitReason::InvalidGuestState);
        assert!(f.reason().is_entry_failure());
        assert_eq!(
            format!("{f}"),
            "VM-entry failure due to invalid guest state (33), VM-entry failure"
        );
        let g = ExitReasonField((1 << 27) | 10);
        assert!(g.from_enclave() && !g.entry_failure());
        assert_eq!(format!("{g}"), "CPUID (10), from enclave");
        assert_eq!(
            format!("{}", ExitReason::Unknown(35)),
            "undefined exit reason 35"
        );
    }

    #[test]
    fn entry_failure_qualifications() {
        assert_eq!(
            entry_failure_qualification_name(ExitReason::InvalidGuestState, 4),
            "invalid VMCS link pointer"
        );
        assert!(entry_failure_qualification_name(ExitReason::MsrLoading, 4).contains("MSR-load"));
    }
}
