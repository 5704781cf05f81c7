//! The VMCB's fields: offset, width and name of each (APM Vol. 2 Appendix B, Table B-1 for the
//! control area at offset 0, Table B-2 for the state save area at offset 400h).

/// Which half of the VMCB a field is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Area {
    /// Offsets 0-3FFh: intercepts, controls, exit information (Table B-1).
    Control,
    /// Offsets 400h-FFFh: the guest's processor state (Table B-2).
    Save,
}

macro_rules! fields {
    ($( $(#[$doc:meta])* $var:ident = $off:literal, $width:literal, $area:ident, $name:literal; )*) => {
        /// One VMCB field.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field {
            $( $(#[$doc])* $var, )*
        }

        impl Field {
            /// Every field, in offset order.
            pub const ALL: &'static [Field] = &[ $( Field::$var, )* ];

            /// Byte offset from the start of the VMCB.
            #[inline(always)]
            pub const fn offset(self) -> usize {
                match self { $( Field::$var => $off, )* }
            }

            /// Width in bytes: 1, 2, 4 or 8.
            #[inline(always)]
            pub const fn width(self) -> usize {
                match self { $( Field::$var => $width, )* }
            }

            #[inline(always)]
            pub const fn area(self) -> Area {
                match self { $( Field::$var => Area::$area, )* }
            }

            /// The field's name, as reports print it.
            pub const fn name(self) -> &'static str {
                match self { $( Field::$var => $name, )* }
            }
        }
    };
}

fields! {
    // ---- Control area (Table B-1) --------------------------------------------------------
    /// Bits 15:0: intercept reads of CR0-CR15.
    InterceptCrRead = 0x000, 2, Control, "intercept CR reads";
    /// Bits 31:16 of the first doubleword: intercept writes of CR0-CR15.
    InterceptCrWrite = 0x002, 2, Control, "intercept CR writes";
    InterceptDrRead = 0x004, 2, Control, "intercept DR reads";
    InterceptDrWrite = 0x006, 2, Control, "intercept DR writes";
    /// One bit per exception vector.
    InterceptExceptions = 0x008, 4, Control, "intercept exceptions";
    /// INTR ... shutdown (`intercept::Misc1`).
    InterceptMisc1 = 0x00C, 4, Control, "intercept vector 3";
    /// VMRUN ... CR write traps (`intercept::Misc2`).
    InterceptMisc2 = 0x010, 4, Control, "intercept vector 4";
    /// INVLPGB, INVPCID, MCOMMIT, TLBSYNC... (`intercept::Misc3`).
    InterceptMisc3 = 0x014, 4, Control, "intercept vector 5";
    PauseFilterThreshold = 0x03C, 2, Control, "PAUSE filter threshold";
    PauseFilterCount = 0x03E, 2, Control, "PAUSE filter count";
    /// Physical base of the 12-KiB I/O permission map (15.10.1).
    IopmBase = 0x040, 8, Control, "IOPM_BASE_PA";
    /// Physical base of the 8-KiB MSR permission map (15.11).
    MsrpmBase = 0x048, 8, Control, "MSRPM_BASE_PA";
    TscOffset = 0x050, 8, Control, "TSC_OFFSET";
    GuestAsid = 0x058, 4, Control, "guest ASID";
    /// 00h nothing, 01h flush all, 03h this guest's ASID, 07h its non-global entries (15.16.2).
    TlbControl = 0x05C, 1, Control, "TLB_CONTROL";
    /// V_TPR, V_IRQ, VGIF, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR
    /// (`intercept::vintr`, 15.21.4).
    VIntr = 0x060, 8, Control, "virtual interrupt control";
    /// Bit 0: the guest is in an interrupt shadow; bit 1: GIF with virtual GIF (15.21.5).
    InterruptShadow = 0x068, 8, Control, "interrupt shadow";
    ExitCode = 0x070, 8, Control, "EXITCODE";
    ExitInfo1 = 0x078, 8, Control, "EXITINFO1";
    ExitInfo2 = 0x080, 8, Control, "EXITINFO2";
    /// The event being delivered when the intercept happened (15.7.2).
    ExitIntInfo = 0x088, 8, Control, "EXITINTINFO";
    /// Bit 0: nested paging (NP_ENABLE); bits 1, 2: SEV, SEV-ES; bit 3: GMET.
    NestedControl = 0x090, 8, Control, "nested paging and SEV enables";
    AvicApicBar = 0x098, 8, Control, "AVIC APIC_BAR";
    GhcbPa = 0x0A0, 8, Control, "GHCB physical address";
    /// An event to inject at VMRUN (15.20).
    EventInj = 0x0A8, 8, Control, "EVENTINJ";
    /// The nested page tables' root (15.25.3).
    NestedCr3 = 0x0B0, 8, Control, "N_CR3";
    /// Bit 0: LBR virtualization; bit 1: virtualized VMSAVE/VMLOAD.
    VirtExt = 0x0B8, 8, Control, "LBR and VMSAVE/VMLOAD virtualization";
    /// Set bits mark fields unchanged since the last VMRUN (15.15.3).
    VmcbClean = 0x0C0, 4, Control, "VMCB clean bits";
    /// With NRIP save: the address of the instruction after the intercepted one (15.7.1).
    NextRip = 0x0C8, 8, Control, "nRIP";
    /// With decode assists: the number of instruction bytes fetched (byte 0) and the first 7.
    GuestInstructionBytes0 = 0x0D0, 8, Control, "guest instruction bytes 0-7";
    GuestInstructionBytes1 = 0x0D8, 8, Control, "guest instruction bytes 8-15";
    AvicBackingPage = 0x0E0, 8, Control, "AVIC backing page";
    AvicLogicalTable = 0x0F0, 8, Control, "AVIC logical table";
    AvicPhysicalTable = 0x0F8, 8, Control, "AVIC physical table";
    VmsaPa = 0x108, 8, Control, "VMSA pointer";

    // ---- State save area (Table B-2) -----------------------------------------------------
    EsSelector = 0x400, 2, Save, "ES selector";
    EsAttrib = 0x402, 2, Save, "ES attributes";
    EsLimit = 0x404, 4, Save, "ES limit";
    EsBase = 0x408, 8, Save, "ES base";
    CsSelector = 0x410, 2, Save, "CS selector";
    CsAttrib = 0x412, 2, Save, "CS attributes";
    CsLimit = 0x414, 4, Save, "CS limit";
    CsBase = 0x418, 8, Save, "CS base";
    SsSelector = 0x420, 2, Save, "SS selector";
    SsAttrib = 0x422, 2, Save, "SS attributes";
    SsLimit = 0x424, 4, Save, "SS limit";
    SsBase = 0x428, 8, Save, "SS base";
    DsSelector = 0x430, 2, Save, "DS selector";
    DsAttrib = 0x432, 2, Save, "DS attributes";
    DsLimit = 0x434, 4, Save, "DS limit";
    DsBase = 0x438, 8, Save, "DS base";
    FsSelector = 0x440, 2, Save, "FS selector";
    FsAttrib = 0x442, 2, Save, "FS attributes";
    FsLimit = 0x444, 4, Save, "FS limit";
    FsBase = 0x448, 8, Save, "FS base";
    GsSelector = 0x450, 2, Save, "GS selector";
    GsAttrib = 0x452, 2, Save, "GS attributes";
    GsLimit = 0x454, 4, Save, "GS limit";
    GsBase = 0x458, 8, Save, "GS base";
    GdtrLimit = 0x464, 4, Save, "GDTR limit";
    GdtrBase = 0x468, 8, Save, "GDTR base";
    LdtrSelector = 0x470, 2, Save, "LDTR selector";
    LdtrAttrib = 0x472, 2, Save, "LDTR attributes";
    LdtrLimit = 0x474, 4, Save, "LDTR limit";
    LdtrBase = 0x478, 8, Save, "LDTR base";
    IdtrLimit = 0x484, 4, Save, "IDTR limit";
    IdtrBase = 0x488, 8, Save, "IDTR base";
    TrSelector = 0x490, 2, Save, "TR selector";
    TrAttrib = 0x492, 2, Save, "TR attributes";
    TrLimit = 0x494, 4, Save, "TR limit";
    TrBase = 0x498, 8, Save, "TR base";
    /// The guest's CPL: VMRUN takes it from here, not from SS (15.5.1).
    Cpl = 0x4CB, 1, Save, "CPL";
    Efer = 0x4D0, 8, Save, "EFER";
    Cr4 = 0x548, 8, Save, "CR4";
    Cr3 = 0x550, 8, Save, "CR3";
    Cr0 = 0x558, 8, Save, "CR0";
    Dr7 = 0x560, 8, Save, "DR7";
    Dr6 = 0x568, 8, Save, "DR6";
    Rflags = 0x570, 8, Save, "RFLAGS";
    Rip = 0x578, 8, Save, "RIP";
    Rsp = 0x5D8, 8, Save, "RSP";
    SCet = 0x5E0, 8, Save, "S_CET";
    Ssp = 0x5E8, 8, Save, "SSP";
    IsstAddr = 0x5F0, 8, Save, "ISST_ADDR";
    /// VMRUN loads the guest's RAX from here and #VMEXIT saves it here.
    Rax = 0x5F8, 8, Save, "RAX";
    Star = 0x600, 8, Save, "STAR";
    Lstar = 0x608, 8, Save, "LSTAR";
    Cstar = 0x610, 8, Save, "CSTAR";
    Sfmask = 0x618, 8, Save, "SFMASK";
    KernelGsBase = 0x620, 8, Save, "KernelGsBase";
    SysenterCs = 0x628, 8, Save, "SYSENTER_CS";
    SysenterEsp = 0x630, 8, Save, "SYSENTER_ESP";
    SysenterEip = 0x638, 8, Save, "SYSENTER_EIP";
    Cr2 = 0x640, 8, Save, "CR2";
    /// The guest's PAT with nested paging (15.25.8).
    GPat = 0x668, 8, Save, "G_PAT";
    DbgCtl = 0x670, 8, Save, "DBGCTL";
    BrFrom = 0x678, 8, Save, "BR_FROM";
    BrTo = 0x680, 8, Save, "BR_TO";
    LastExcpFrom = 0x688, 8, Save, "LASTEXCPFROM";
    LastExcpTo = 0x690, 8, Save, "LASTEXCPTO";
}

/// The four fields of a segment register in the state save area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegFields {
    pub selector: Field,
    pub attrib: Field,
    pub limit: Field,
    pub base: Field,
}

/// Segment registers by the encoding instructions use (0 = ES ... 5 = GS), then LDTR (6) and
/// TR (7).
pub fn seg_fields(n: u8) -> SegFields {
    use Field::*;
    let f = |selector, attrib, limit, base| SegFields {
        selector,
        attrib,
        limit,
        base,
    };
    match n {
        0 => f(EsSelector, EsAttrib, EsLimit, EsBase),
        1 => f(CsSelector, CsAttrib, CsLimit, CsBase),
        2 => f(SsSelector, SsAttrib, SsLimit, SsBase),
        3 => f(DsSelector, DsAttrib, DsLimit, DsBase),
        4 => f(FsSelector, FsAttrib, FsLimit, FsBase),
        5 => f(GsSelector, GsAttrib, GsLimit, GsBase),
        6 => f(LdtrSelector, LdtrAttrib, LdtrLimit, LdtrBase),
        _ => f(TrSelector, TrAttrib, TrLimit, TrBase),
    }
}
