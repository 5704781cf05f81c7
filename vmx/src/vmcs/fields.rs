//! The catalogue of VMCS fields (SDM Vol. 3D Appendix B) and what their encodings say about them
//! (SDM Vol. 3C 25.11.2).
//!
//! Only "full" encodings are listed: the "high" halves of 64-bit fields (encoding | 1) exist for
//! 32-bit software and a 64-bit hypervisor never needs them.

/// Width of a VMCS field, taken from bits 14:13 of its encoding (SDM Vol. 3C 25.11.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Width {
    Bits16,
    Bits64,
    Bits32,
    /// Natural width: 64 bits on processors that support Intel 64.
    Natural,
}

impl Width {
    /// Mask of the bits a field of this width can hold on a 64-bit processor.
    pub const fn mask(self) -> u64 {
        match self {
            Width::Bits16 => 0xffff,
            Width::Bits32 => 0xffff_ffff,
            Width::Bits64 | Width::Natural => u64::MAX,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Width::Bits16 => "16-bit",
            Width::Bits32 => "32-bit",
            Width::Bits64 => "64-bit",
            Width::Natural => "natural-width",
        }
    }
}

/// Which area of the VMCS a field belongs to, taken from bits 11:10 of its encoding
/// (SDM Vol. 3C 25.11.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// VM-execution, VM-exit and VM-entry control fields.
    Control,
    /// VM-exit information fields: read-only unless IA32_VMX_MISC bit 29 is set.
    ReadOnly,
    Guest,
    Host,
}

impl Kind {
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Control => "control",
            Kind::ReadOnly => "exit information",
            Kind::Guest => "guest state",
            Kind::Host => "host state",
        }
    }
}

macro_rules! vmcs_fields {
    ($( $(#[$meta:meta])* $variant:ident = $enc:literal, $name:literal; )*) => {
        /// One VMCS field, identified by its full encoding (SDM Vol. 3D Appendix B).
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Field {
            $( $(#[$meta])* $variant = $enc, )*
        }

        impl Field {
            /// Every field the SDM defines, in encoding order within each width/kind group.
            pub const ALL: &'static [Field] = &[ $( Field::$variant, )* ];

            /// A readable name in the SDM's own terms.
            pub fn name(self) -> &'static str {
                match self {
                    $( Field::$variant => $name, )*
                }
            }

            /// The field with this full encoding, if the SDM defines one.
            pub fn from_encoding(encoding: u32) -> Option<Field> {
                match encoding {
                    $( $enc => Some(Field::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

vmcs_fields! {
    // 16-bit control fields (SDM Vol. 3D B.1.1)
    VirtualProcessorId = 0x0000, "virtual-processor identifier (VPID)";
    PostedInterruptNotificationVector = 0x0002, "posted-interrupt notification vector";
    EptpIndex = 0x0004, "EPTP index";
    HlatPrefixSize = 0x0006, "HLAT prefix size";
    LastPidPointerIndex = 0x0008, "last PID-pointer index";

    // 16-bit guest-state fields (B.1.2)
    GuestEsSelector = 0x0800, "guest ES selector";
    GuestCsSelector = 0x0802, "guest CS selector";
    GuestSsSelector = 0x0804, "guest SS selector";
    GuestDsSelector = 0x0806, "guest DS selector";
    GuestFsSelector = 0x0808, "guest FS selector";
    GuestGsSelector = 0x080A, "guest GS selector";
    GuestLdtrSelector = 0x080C, "guest LDTR selector";
    GuestTrSelector = 0x080E, "guest TR selector";
    GuestInterruptStatus = 0x0810, "guest interrupt status";
    PmlIndex = 0x0812, "PML index";
    GuestUinv = 0x0814, "guest UINV";

    // 16-bit host-state fields (B.1.3)
    HostEsSelector = 0x0C00, "host ES selector";
    HostCsSelector = 0x0C02, "host CS selector";
    HostSsSelector = 0x0C04, "host SS selector";
    HostDsSelector = 0x0C06, "host DS selector";
    HostFsSelector = 0x0C08, "host FS selector";
    HostGsSelector = 0x0C0A, "host GS selector";
    HostTrSelector = 0x0C0C, "host TR selector";

    // 64-bit control fields (B.2.1)
    IoBitmapA = 0x2000, "address of I/O bitmap A";
    IoBitmapB = 0x2002, "address of I/O bitmap B";
    MsrBitmap = 0x2004, "address of MSR bitmaps";
    VmExitMsrStoreAddress = 0x2006, "VM-exit MSR-store address";
    VmExitMsrLoadAddress = 0x2008, "VM-exit MSR-load address";
    VmEntryMsrLoadAddress = 0x200A, "VM-entry MSR-load address";
    ExecutiveVmcsPointer = 0x200C, "executive-VMCS pointer";
    PmlAddress = 0x200E, "PML address";
    TscOffset = 0x2010, "TSC offset";
    VirtualApicAddress = 0x2012, "virtual-APIC address";
    ApicAccessAddress = 0x2014, "APIC-access address";
    PostedInterruptDescriptorAddress = 0x2016, "posted-interrupt descriptor address";
    VmFunctionControls = 0x2018, "VM-function controls";
    EptPointer = 0x201A, "EPT pointer";
    EoiExitBitmap0 = 0x201C, "EOI-exit bitmap 0";
    EoiExitBitmap1 = 0x201E, "EOI-exit bitmap 1";
    EoiExitBitmap2 = 0x2020, "EOI-exit bitmap 2";
    EoiExitBitmap3 = 0x2022, "EOI-exit bitmap 3";
    EptpListAddress = 0x2024, "EPTP-list address";
    VmreadBitmapAddress = 0x2026, "VMREAD-bitmap address";
    VmwriteBitmapAddress = 0x2028, "VMWRITE-bitmap address";
    VirtualizationExceptionInfoAddress = 0x202A, "virtualization-exception information address";
    XssExitingBitmap = 0x202C, "XSS-exiting bitmap";
    EnclsExitingBitmap = 0x202E, "ENCLS-exiting bitmap";
    SubPagePermissionTablePointer = 0x2030, "sub-page-permission-table pointer";
    TscMultiplier = 0x2032, "TSC multiplier";
    TertiaryProcBasedControls = 0x2034, "tertiary processor-based VM-execution controls";
    EnclvExitingBitmap = 0x2036, "ENCLV-exiting bitmap";
    LowPasidDirectoryAddress = 0x2038, "low PASID directory address";
    HighPasidDirectoryAddress = 0x203A, "high PASID directory address";
    SharedEptPointer = 0x203C, "shared EPT pointer";
    PconfigExitingBitmap = 0x203E, "PCONFIG-exiting bitmap";
    HlatPointer = 0x2040, "hypervisor-managed linear-address translation pointer";
    PidPointerTableAddress = 0x2042, "PID-pointer table address";
    SecondaryExitControls = 0x2044, "secondary VM-exit controls";
    SpecCtrlMask = 0x204A, "IA32_SPEC_CTRL mask";
    SpecCtrlShadow = 0x204C, "IA32_SPEC_CTRL shadow";
    InjectedEventData = 0x2052, "injected-event data";

    // 64-bit read-only data fields (B.2.2)
    GuestPhysicalAddress = 0x2400, "guest-physical address";
    OriginalEventData = 0x2404, "original-event data";

    // 64-bit guest-state fields (B.2.3)
    VmcsLinkPointer = 0x2800, "VMCS link pointer";
    GuestIa32Debugctl = 0x2802, "guest IA32_DEBUGCTL";
    GuestIa32Pat = 0x2804, "guest IA32_PAT";
    GuestIa32Efer = 0x2806, "guest IA32_EFER";
    GuestIa32PerfGlobalCtrl = 0x2808, "guest IA32_PERF_GLOBAL_CTRL";
    GuestPdpte0 = 0x280A, "guest PDPTE0";
    GuestPdpte1 = 0x280C, "guest PDPTE1";
    GuestPdpte2 = 0x280E, "guest PDPTE2";
    GuestPdpte3 = 0x2810, "guest PDPTE3";
    GuestIa32Bndcfgs = 0x2812, "guest IA32_BNDCFGS";
    GuestIa32RtitCtl = 0x2814, "guest IA32_RTIT_CTL";
    GuestIa32LbrCtl = 0x2816, "guest IA32_LBR_CTL";
    GuestIa32Pkrs = 0x2818, "guest IA32_PKRS";
    GuestIa32FredConfig = 0x281A, "guest IA32_FRED_CONFIG";
    GuestIa32FredRsp1 = 0x281C, "guest IA32_FRED_RSP1";
    GuestIa32FredRsp2 = 0x281E, "guest IA32_FRED_RSP2";
    GuestIa32FredRsp3 = 0x2820, "guest IA32_FRED_RSP3";
    GuestIa32FredStklvls = 0x2822, "guest IA32_FRED_STKLVLS";
    GuestIa32FredSsp1 = 0x2824, "guest IA32_FRED_SSP1";
    GuestIa32FredSsp2 = 0x2826, "guest IA32_FRED_SSP2";
    GuestIa32FredSsp3 = 0x2828, "guest IA32_FRED_SSP3";

    // 64-bit host-state fields (B.2.4)
    HostIa32Pat = 0x2C00, "host IA32_PAT";
    HostIa32Efer = 0x2C02, "host IA32_EFER";
    HostIa32PerfGlobalCtrl = 0x2C04, "host IA32_PERF_GLOBAL_CTRL";
    HostIa32Pkrs = 0x2C06, "host IA32_PKRS";
    HostIa32FredConfig = 0x2C08, "host IA32_FRED_CONFIG";
    HostIa32FredRsp1 = 0x2C0A, "host IA32_FRED_RSP1";
    HostIa32FredRsp2 = 0x2C0C, "host IA32_FRED_RSP2";
    HostIa32FredRsp3 = 0x2C0E, "host IA32_FRED_RSP3";
    HostIa32FredStklvls = 0x2C10, "host IA32_FRED_STKLVLS";
    HostIa32FredSsp1 = 0x2C12, "host IA32_FRED_SSP1";
    HostIa32FredSsp2 = 0x2C14, "host IA32_FRED_SSP2";
    HostIa32FredSsp3 = 0x2C16, "host IA32_FRED_SSP3";

    // 32-bit control fields (B.3.1)
    PinBasedControls = 0x4000, "pin-based VM-execution controls";
    PrimaryProcBasedControls = 0x4002, "primary processor-based VM-execution controls";
    ExceptionBitmap = 0x4004, "exception bitmap";
    PageFaultErrorCodeMask = 0x4006, "page-fault error-code mask";
    PageFaultErrorCodeMatch = 0x4008, "page-fault error-code match";
    Cr3TargetCount = 0x400A, "CR3-target count";
    ExitControls = 0x400C, "primary VM-exit controls";
    VmExitMsrStoreCount = 0x400E, "VM-exit MSR-store count";
    VmExitMsrLoadCount = 0x4010, "VM-exit MSR-load count";
    EntryControls = 0x4012, "VM-entry controls";
    VmEntryMsrLoadCount = 0x4014, "VM-entry MSR-load count";
    VmEntryInterruptionInfo = 0x4016, "VM-entry interruption-information field";
    VmEntryExceptionErrorCode = 0x4018, "VM-entry exception error code";
    VmEntryInstructionLength = 0x401A, "VM-entry instruction length";
    TprThreshold = 0x401C, "TPR threshold";
    SecondaryProcBasedControls = 0x401E, "secondary processor-based VM-execution controls";
    PleGap = 0x4020, "PLE_Gap";
    PleWindow = 0x4022, "PLE_Window";
    InstructionTimeoutControl = 0x4024, "instruction-timeout control";

    // 32-bit read-only data fields (B.3.2)
    VmInstructionError = 0x4400, "VM-instruction error";
    VmExitReason = 0x4402, "exit reason";
    VmExitInterruptionInfo = 0x4404, "VM-exit interruption information";
    VmExitInterruptionErrorCode = 0x4406, "VM-exit interruption error code";
    IdtVectoringInfo = 0x4408, "IDT-vectoring information field";
    IdtVectoringErrorCode = 0x440A, "IDT-vectoring error code";
    VmExitInstructionLength = 0x440C, "VM-exit instruction length";
    VmExitInstructionInfo = 0x440E, "VM-exit instruction information";

    // 32-bit guest-state fields (B.3.3)
    GuestEsLimit = 0x4800, "guest ES limit";
    GuestCsLimit = 0x4802, "guest CS limit";
    GuestSsLimit = 0x4804, "guest SS limit";
    GuestDsLimit = 0x4806, "guest DS limit";
    GuestFsLimit = 0x4808, "guest FS limit";
    GuestGsLimit = 0x480A, "guest GS limit";
    GuestLdtrLimit = 0x480C, "guest LDTR limit";
    GuestTrLimit = 0x480E, "guest TR limit";
    GuestGdtrLimit = 0x4810, "guest GDTR limit";
    GuestIdtrLimit = 0x4812, "guest IDTR limit";
    GuestEsAccessRights = 0x4814, "guest ES access rights";
    GuestCsAccessRights = 0x4816, "guest CS access rights";
    GuestSsAccessRights = 0x4818, "guest SS access rights";
    GuestDsAccessRights = 0x481A, "guest DS access rights";
    GuestFsAccessRights = 0x481C, "guest FS access rights";
    GuestGsAccessRights = 0x481E, "guest GS access rights";
    GuestLdtrAccessRights = 0x4820, "guest LDTR access rights";
    GuestTrAccessRights = 0x4822, "guest TR access rights";
    GuestInterruptibilityState = 0x4824, "guest interruptibility state";
    GuestActivityState = 0x4826, "guest activity state";
    GuestSmbase = 0x4828, "guest SMBASE";
    GuestIa32SysenterCs = 0x482A, "guest IA32_SYSENTER_CS";
    VmxPreemptionTimerValue = 0x482E, "VMX-preemption timer value";

    // 32-bit host-state field (B.3.4)
    HostIa32SysenterCs = 0x4C00, "host IA32_SYSENTER_CS";

    // Natural-width control fields (B.4.1)
    Cr0GuestHostMask = 0x6000, "CR0 guest/host mask";
    Cr4GuestHostMask = 0x6002, "CR4 guest/host mask";
    Cr0ReadShadow = 0x6004, "CR0 read shadow";
    Cr4ReadShadow = 0x6006, "CR4 read shadow";
    Cr3TargetValue0 = 0x6008, "CR3-target value 0";
    Cr3TargetValue1 = 0x600A, "CR3-target value 1";
    Cr3TargetValue2 = 0x600C, "CR3-target value 2";
    Cr3TargetValue3 = 0x600E, "CR3-target value 3";

    // Natural-width read-only data fields (B.4.2)
    ExitQualification = 0x6400, "exit qualification";
    IoRcx = 0x6402, "I/O RCX";
    IoRsi = 0x6404, "I/O RSI";
    IoRdi = 0x6406, "I/O RDI";
    IoRip = 0x6408, "I/O RIP";
    GuestLinearAddress = 0x640A, "guest-linear address";

    // Natural-width guest-state fields (B.4.3)
    GuestCr0 = 0x6800, "guest CR0";
    GuestCr3 = 0x6802, "guest CR3";
    GuestCr4 = 0x6804, "guest CR4";
    GuestEsBase = 0x6806, "guest ES base";
    GuestCsBase = 0x6808, "guest CS base";
    GuestSsBase = 0x680A, "guest SS base";
    GuestDsBase = 0x680C, "guest DS base";
    GuestFsBase = 0x680E, "guest FS base";
    GuestGsBase = 0x6810, "guest GS base";
    GuestLdtrBase = 0x6812, "guest LDTR base";
    GuestTrBase = 0x6814, "guest TR base";
    GuestGdtrBase = 0x6816, "guest GDTR base";
    GuestIdtrBase = 0x6818, "guest IDTR base";
    GuestDr7 = 0x681A, "guest DR7";
    GuestRsp = 0x681C, "guest RSP";
    GuestRip = 0x681E, "guest RIP";
    GuestRflags = 0x6820, "guest RFLAGS";
    GuestPendingDebugExceptions = 0x6822, "guest pending debug exceptions";
    GuestIa32SysenterEsp = 0x6824, "guest IA32_SYSENTER_ESP";
    GuestIa32SysenterEip = 0x6826, "guest IA32_SYSENTER_EIP";
    GuestIa32SCet = 0x6828, "guest IA32_S_CET";
    GuestSsp = 0x682A, "guest SSP";
    GuestIa32InterruptSspTableAddr = 0x682C, "guest IA32_INTERRUPT_SSP_TABLE_ADDR";

    // Natural-width host-state fields (B.4.4)
    HostCr0 = 0x6C00, "host CR0";
    HostCr3 = 0x6C02, "host CR3";
    HostCr4 = 0x6C04, "host CR4";
    HostFsBase = 0x6C06, "host FS base";
    HostGsBase = 0x6C08, "host GS base";
    HostTrBase = 0x6C0A, "host TR base";
    HostGdtrBase = 0x6C0C, "host GDTR base";
    HostIdtrBase = 0x6C0E, "host IDTR base";
    HostIa32SysenterEsp = 0x6C10, "host IA32_SYSENTER_ESP";
    HostIa32SysenterEip = 0x6C12, "host IA32_SYSENTER_EIP";
    HostRsp = 0x6C14, "host RSP";
    HostRip = 0x6C16, "host RIP";
    HostIa32SCet = 0x6C18, "host IA32_S_CET";
    HostSsp = 0x6C1A, "host SSP";
    HostIa32InterruptSspTableAddr = 0x6C1C, "host IA32_INTERRUPT_SSP_TABLE_ADDR";
}

impl Field {
    /// The 32-bit encoding VMREAD/VMWRITE take (SDM Vol. 3C 25.11.2).
    pub const fn encoding(self) -> u32 {
        self as u32
    }

    /// Width from encoding bits 14:13 (SDM Vol. 3C 25.11.2, Table 25-21).
    pub const fn width(self) -> Width {
        match (self.encoding() >> 13) & 3 {
            0 => Width::Bits16,
            1 => Width::Bits64,
            2 => Width::Bits32,
            _ => Width::Natural,
        }
    }

    /// Area from encoding bits 11:10 (SDM Vol. 3C 25.11.2, Table 25-21).
    pub const fn kind(self) -> Kind {
        match (self.encoding() >> 10) & 3 {
            0 => Kind::Control,
            1 => Kind::ReadOnly,
            2 => Kind::Guest,
            _ => Kind::Host,
        }
    }

    /// Index from encoding bits 9:1 (SDM Vol. 3C 25.11.2): the position within its width and
    /// kind group, which the VMCS-field-index bits of IA32_VMX_VMCS_ENUM bound (SDM Vol. 3D A.9).
    pub const fn index(self) -> u32 {
        (self.encoding() >> 1) & 0x1ff
    }
}

impl core::fmt::Display for Field {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;

    #[test]
    fn encodings_are_unique_and_round_trip() {
        let mut seen = BTreeSet::new();
        for &f in Field::ALL {
            assert!(
                seen.insert(f.encoding()),
                "duplicate encoding {:#x}",
                f.encoding()
            );
            assert_eq!(Field::from_encoding(f.encoding()), Some(f));
        }
        assert_eq!(seen.len(), Field::ALL.len());
        assert!(
            Field::ALL.len() > 180,
            "catalogue looks incomplete: {}",
            Field::ALL.len()
        );
    }

    #[test]
    fn encodings_are_full_and_well_formed() {
        for &f in Field::ALL {
            let e = f.encoding();
            // Bit 0 selects the high half of a 64-bit field; bit 12 and bits 31:15 are reserved.
            assert_eq!(e & 1, 0, "{f:?} is a high encoding");
            assert_eq!(e & 0x1000, 0, "{f:?} sets reserved bit 12");
            assert_eq!(e >> 15, 0, "{f:?} sets reserved high bits");
        }
    }

    #[test]
    fn high_and_unknown_encodings_are_rejected() {
        assert_eq!(Field::from_encoding(0x2001), None); // IO bitmap A high
        assert_eq!(Field::from_encoding(0x482C), None); // hole in the 32-bit guest area
        assert_eq!(Field::from_encoding(0xFFFF_FFFF), None);
    }

    #[test]
    fn width_and_kind_follow_encoding() {
        assert_eq!(Field::GuestRip.width(), Width::Natural);
        assert_eq!(Field::GuestRip.kind(), Kind::Guest);
        assert_eq!(Field::VirtualProcessorId.width(), Width::Bits16);
        assert_eq!(Field::VirtualProcessorId.kind(), Kind::Control);
        assert_eq!(Field::EptPointer.width(), Width::Bits64);
        assert_eq!(Field::VmExitReason.width(), Width::Bits32);
        assert_eq!(Field::VmExitReason.kind(), Kind::ReadOnly);
        assert_eq!(Field::HostTrSelector.kind(), Kind::Host);
        assert_eq!(Field::GuestPhysicalAddress.kind(), Kind::ReadOnly);
        assert_eq!(Field::HostIa32SysenterCs.width(), Width::Bits32);
        assert_eq!(Field::GuestCsAccessRights.encoding(), 0x4816);
        assert_eq!(Field::GuestCsAccessRights.index(), 0xB);
    }

    #[test]
    fn names_carry_their_area() {
        for &f in Field::ALL {
            let n = f.name();
            match f.kind() {
                Kind::Guest => assert!(
                    n.starts_with("guest")
                        || n.starts_with("VMCS link")
                        || n.starts_with("VMX-pre")
                        || n.starts_with("PML index"),
                    "{n}"
                ),
                Kind::Host => assert!(n.starts_with("host"), "{n}"),
                _ => assert!(!n.is_empty()),
            }
        }
    }
}
