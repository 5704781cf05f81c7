//! EXITCODE: why a #VMEXIT happened (APM Vol. 2 Appendix C, Table C-1). Codes 0-9Fh are
//! intercepts (with ranges for CR, DR and exception vectors), 400h and up nested-paging and
//! AVIC exits, and negative values say VMRUN did not enter the guest.

use core::fmt;

/// An EXITCODE value (the whole 64-bit field: the negative codes use all of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExitCode(pub u64);

macro_rules! codes {
    ($( $name:ident = $value:expr, $text:literal; )*) => {
        impl ExitCode {
            $( pub const $name: ExitCode = ExitCode($value as u64); )*

            /// The names of the single codes (not the CR/DR/exception ranges).
            const NAMED: &'static [(ExitCode, &'static str)] = &[ $( (ExitCode::$name, $text), )* ];
        }
    };
}

codes! {
    INTR = 0x60, "INTR";
    NMI = 0x61, "NMI";
    SMI = 0x62, "SMI";
    INIT = 0x63, "INIT";
    VINTR = 0x64, "VINTR";
    CR0_SEL_WRITE = 0x65, "CR0_SEL_WRITE";
    IDTR_READ = 0x66, "IDTR_READ";
    GDTR_READ = 0x67, "GDTR_READ";
    LDTR_READ = 0x68, "LDTR_READ";
    TR_READ = 0x69, "TR_READ";
    IDTR_WRITE = 0x6A, "IDTR_WRITE";
    GDTR_WRITE = 0x6B, "GDTR_WRITE";
    LDTR_WRITE = 0x6C, "LDTR_WRITE";
    TR_WRITE = 0x6D, "TR_WRITE";
    RDTSC = 0x6E, "RDTSC";
    RDPMC = 0x6F, "RDPMC";
    PUSHF = 0x70, "PUSHF";
    POPF = 0x71, "POPF";
    CPUID = 0x72, "CPUID";
    RSM = 0x73, "RSM";
    IRET = 0x74, "IRET";
    SWINT = 0x75, "SWINT";
    INVD = 0x76, "INVD";
    PAUSE = 0x77, "PAUSE";
    HLT = 0x78, "HLT";
    INVLPG = 0x79, "INVLPG";
    INVLPGA = 0x7A, "INVLPGA";
    IOIO = 0x7B, "IOIO";
    MSR = 0x7C, "MSR";
    TASK_SWITCH = 0x7D, "TASK_SWITCH";
    FERR_FREEZE = 0x7E, "FERR_FREEZE";
    SHUTDOWN = 0x7F, "SHUTDOWN";
    VMRUN = 0x80, "VMRUN";
    VMMCALL = 0x81, "VMMCALL";
    VMLOAD = 0x82, "VMLOAD";
    VMSAVE = 0x83, "VMSAVE";
    STGI = 0x84, "STGI";
    CLGI = 0x85, "CLGI";
    SKINIT = 0x86, "SKINIT";
    RDTSCP = 0x87, "RDTSCP";
    ICEBP = 0x88, "ICEBP";
    WBINVD = 0x89, "WBINVD";
    MONITOR = 0x8A, "MONITOR";
    MWAIT = 0x8B, "MWAIT";
    MWAIT_CONDITIONAL = 0x8C, "MWAIT_CONDITIONAL";
    XSETBV = 0x8D, "XSETBV";
    RDPRU = 0x8E, "RDPRU";
    EFER_WRITE_TRAP = 0x8F, "EFER_WRITE_TRAP";
    INVLPGB = 0xA0, "INVLPGB";
    INVLPGB_ILLEGAL = 0xA1, "INVLPGB_ILLEGAL";
    INVPCID = 0xA2, "INVPCID";
    MCOMMIT = 0xA3, "MCOMMIT";
    TLBSYNC = 0xA4, "TLBSYNC";
    NPF = 0x400, "NPF";
    AVIC_INCOMPLETE_IPI = 0x401, "AVIC_INCOMPLETE_IPI";
    AVIC_NOACCEL = 0x402, "AVIC_NOACCEL";
    VMGEXIT = 0x403, "VMGEXIT";
    INVALID = -1i64, "VMEXIT_INVALID";
    BUSY = -2i64, "VMEXIT_BUSY";
    IDLE_REQUIRED = -3i64, "VMEXIT_IDLE_REQUIRED";
    INVALID_PMC = -4i64, "VMEXIT_INVALID_PMC";
}

impl ExitCode {
    /// MOV from CRn (codes 0-Fh).
    pub const fn cr_read(self) -> Option<u8> {
        if self.0 < 0x10 {
            Some(self.0 as u8)
        } else {
            None
        }
    }

    /// MOV to CRn, CLTS and LMSW (codes 10h-1Fh).
    pub const fn cr_write(self) -> Option<u8> {
        if self.0 >= 0x10 && self.0 < 0x20 {
            Some((self.0 - 0x10) as u8)
        } else {
            None
        }
    }

    /// MOV from DRn (20h-2Fh).
    pub const fn dr_read(self) -> Option<u8> {
        if self.0 >= 0x20 && self.0 < 0x30 {
            Some((self.0 - 0x20) as u8)
        } else {
            None
        }
    }

    /// MOV to DRn (30h-3Fh).
    pub const fn dr_write(self) -> Option<u8> {
        if self.0 >= 0x30 && self.0 < 0x40 {
            Some((self.0 - 0x30) as u8)
        } else {
            None
        }
    }

    /// Exception vector n (40h-5Fh).
    pub const fn exception(self) -> Option<u8> {
        if self.0 >= 0x40 && self.0 < 0x60 {
            Some((self.0 - 0x40) as u8)
        } else {
            None
        }
    }

    /// A CR write trap (90h-9Fh, SEV-ES).
    pub const fn cr_write_trap(self) -> Option<u8> {
        if self.0 >= 0x90 && self.0 < 0xA0 {
            Some((self.0 - 0x90) as u8)
        } else {
            None
        }
    }

    /// VMRUN did not enter the guest: a consistency check failed (15.5.1) or the VMCB is in use
    /// elsewhere.
    pub const fn is_failed_vmrun(self) -> bool {
        (self.0 as i64) < 0
    }

    /// The manual's name for the code.
    pub fn name(self) -> &'static str {
        const CR_READ: [&str; 16] = [
            "CR0_READ",
            "CR1_READ",
            "CR2_READ",
            "CR3_READ",
            "CR4_READ",
            "CR5_READ",
            "CR6_READ",
            "CR7_READ",
            "CR8_READ",
            "CR9_READ",
            "CR10_READ",
            "CR11_READ",
            "CR12_READ",
            "CR13_READ",
            "CR14_READ",
            "CR15_READ",
        ];
        const CR_WRITE: [&str; 16] = [
            "CR0_WRITE",
            "CR1_WRITE",
            "CR2_WRITE",
            "CR3_WRITE",
            "CR4_WRITE",
            "CR5_WRITE",
            "CR6_WRITE",
            "CR7_WRITE",
            "CR8_WRITE",
            "CR9_WRITE",
            "CR10_WRITE",
            "CR11_WRITE",
            "CR12_WRITE",
            "CR13_WRITE",
            "CR14_WRITE",
            "CR15_WRITE",
        ];
        const DR: [&str; 16] = [
            "DR0", "DR1", "DR2", "DR3", "DR4", "DR5", "DR6", "DR7", "DR8", "DR9", "DR10", "DR11",
            "DR12", "DR13", "DR14", "DR15",
        ];
        const EXC: [&str; 32] = [
            "EXCP_DE", "EXCP_DB", "EXCP_NMI", "EXCP_BP", "EXCP_OF", "EXCP_BR", "EXCP_UD",
            "EXCP_NM", "EXCP_DF", "EXCP_9", "EXCP_TS", "EXCP_NP", "EXCP_SS", "EXCP_GP", "EXCP_PF",
            "EXCP_15", "EXCP_MF", "EXCP_AC", "EXCP_MC", "EXCP_XF", "EXCP_20", "EXCP_CP", "EXCP_22",
            "EXCP_23", "EXCP_24", "EXCP_25", "EXCP_26", "EXCP_27", "EXCP_28", "EXCP_VC", "EXCP_SX",
            "EXCP_31",
        ];
        if let Some(n) = self.cr_read() {
            return CR_READ[n as usize];
        }
        if let Some(n) = self.cr_write() {
            return CR_WRITE[n as usize];
        }
        if let Some(n) = self.dr_read() {
            // Read and write ranges share the register names; the report prints the code too.
            return DR[n as usize];
        }
        if let Some(n) = self.dr_write() {
            return DR[n as usize];
        }
        if let Some(n) = self.exception() {
            return EXC[n as usize];
        }
        if self.cr_write_trap().is_some() {
            return "CR_WRITE_TRAP";
        }
        Self::NAMED
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("unknown exit code", |(_, n)| n)
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_failed_vmrun() {
            write!(f, "{} ({})", self.0 as i64, self.name())
        } else {
            write!(f, "{:#x} ({})", self.0, self.name())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn ranges_and_names() {
        assert_eq!(ExitCode(0x03).cr_read(), Some(3));
        assert_eq!(ExitCode(0x13).cr_write(), Some(3));
        assert_eq!(ExitCode(0x13).name(), "CR3_WRITE");
        assert_eq!(ExitCode(0x27).dr_read(), Some(7));
        assert_eq!(ExitCode(0x3D).dr_write(), Some(13));
        assert_eq!(ExitCode(0x4E).exception(), Some(14));
        assert_eq!(ExitCode(0x4E).name(), "EXCP_PF");
        assert_eq!(ExitCode(0x5E).name(), "EXCP_SX");
        assert_eq!(ExitCode::CPUID.name(), "CPUID");
        assert_eq!(ExitCode::NPF.0, 0x400);
        assert!(ExitCode::INVALID.is_failed_vmrun());
        assert_eq!(ExitCode::INVALID.0, u64::MAX);
        assert!(!ExitCode::SHUTDOWN.is_failed_vmrun());
        assert_eq!(format!("{}", ExitCode::INVALID), "-1 (VMEXIT_INVALID)");
        assert_eq!(format!("{}", ExitCode::VMMCALL), "0x81 (VMMCALL)");
        assert_eq!(ExitCode(0x9F).name(), "CR_WRITE_TRAP");
        assert_eq!(ExitCode(0x3FF).name(), "unknown exit code");
    }
}
