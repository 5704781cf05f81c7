//! Every VM-entry check this crate knows, with a stable id, the SDM section it comes from and
//! how the processor reports its failure.
//!
//! Ids are meant to be quoted in logs and bug reports: keep them stable once published.

use super::EntryFailureKind;

/// One VM-entry rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Stable id, e.g. "guest.cr0.fixed".
    pub id: &'static str,
    /// SDM Vol. 3C section, e.g. "27.3.1.1".
    pub sdm: &'static str,
    /// How a processor reports a VMCS that breaks this rule.
    pub failure: EntryFailureKind,
    /// What the rule requires, in a sentence.
    pub requires: &'static str,
}

const C: EntryFailureKind = EntryFailureKind::InstructionError(7);
const H: EntryFailureKind = EntryFailureKind::InstructionError(8);
const G: EntryFailureKind = EntryFailureKind::ExitReason33;
const M: EntryFailureKind = EntryFailureKind::ExitReason34;

macro_rules! rules {
    ($( $konst:ident = $id:literal, $sdm:literal, $kind:ident, $text:literal; )*) => {
        $( pub const $konst: Rule = Rule { id: $id, sdm: $sdm, failure: $kind, requires: $text }; )*
        /// All rules, in the order the checks run.
        pub const ALL: &[Rule] = &[ $( $konst, )* ];
    };
}

rules! {
    // VM-execution control fields (SDM Vol. 3C 27.2.1.1)
    CTL_PIN_ALLOWED = "controls.pin.allowed", "27.2.1.1", C,
        "pin-based controls within the capability MSR's allowed settings";
    CTL_PROC_ALLOWED = "controls.proc.allowed", "27.2.1.1", C,
        "primary processor-based controls within the allowed settings";
    CTL_PROC2_ALLOWED = "controls.proc2.allowed", "27.2.1.1", C,
        "secondary processor-based controls within the allowed settings";
    CTL_CR3_TARGETS = "controls.cr3_target_count", "27.2.1.1", C,
        "CR3-target count no larger than the processor supports";
    CTL_IO_BITMAPS = "controls.io_bitmaps.address", "27.2.1.1", C,
        "I/O bitmap addresses 4-KiB aligned and within the physical-address width";
    CTL_MSR_BITMAP = "controls.msr_bitmap.address", "27.2.1.1", C,
        "MSR bitmap address 4-KiB aligned and within the physical-address width";
    CTL_VIRTUAL_APIC = "controls.tpr_shadow.address", "27.2.1.1", C,
        "virtual-APIC address 4-KiB aligned and within the physical-address width";
    CTL_TPR_THRESHOLD = "controls.tpr_shadow.threshold", "27.2.1.1", C,
        "TPR threshold bits 31:4 zero with TPR shadow and no virtual-interrupt delivery";
    CTL_APIC_VIRT_NEEDS_TPR = "controls.apic_virtualization.tpr_shadow", "27.2.1.1", C,
        "x2APIC virtualization, APIC-register virtualization and virtual-interrupt delivery only with TPR shadow";
    CTL_VIRTUAL_NMIS = "controls.nmi.virtual_nmis", "27.2.1.1", C,
        "virtual NMIs only with NMI exiting";
    CTL_NMI_WINDOW = "controls.nmi.window", "27.2.1.1", C,
        "NMI-window exiting only with virtual NMIs";
    CTL_APIC_ACCESS = "controls.apic_access.address", "27.2.1.1", C,
        "APIC-access address 4-KiB aligned and within the physical-address width";
    CTL_X2APIC_VS_APIC_ACCESS = "controls.apic_access.x2apic", "27.2.1.1", C,
        "x2APIC-mode virtualization and APIC-access virtualization not both";
    CTL_VID_EXT_INT = "controls.virtual_interrupt_delivery.exiting", "27.2.1.1", C,
        "virtual-interrupt delivery only with external-interrupt exiting";
    CTL_POSTED = "controls.posted_interrupts", "27.2.1.1", C,
        "posted interrupts need virtual-interrupt delivery, acknowledge-on-exit, an 8-bit vector and a 64-byte aligned descriptor";
    CTL_VPID = "controls.vpid.nonzero", "27.2.1.1", C,
        "VPID not 0 when enable VPID is set";
    CTL_EPTP = "controls.ept.pointer", "27.2.1.1", C,
        "EPT pointer with a supported memory type and walk length, A/D only if supported, reserved bits zero";
    CTL_PML = "controls.pml", "27.2.1.1", C,
        "page-modification logging only with EPT, with an aligned PML address";
    CTL_UG_EPT = "controls.unrestricted_guest.ept", "27.2.1.1", C,
        "unrestricted guest only with EPT";
    CTL_MBE_EPT = "controls.mode_based_ept.ept", "27.2.1.1", C,
        "mode-based execute control only with EPT";
    CTL_SPP = "controls.sub_page_permissions", "27.2.1.1", C,
        "sub-page write permissions only with EPT, with an aligned SPPTP";
    CTL_VMFUNC = "controls.vm_functions", "27.2.1.1", C,
        "VM-function controls within IA32_VMX_VMFUNC; EPTP switching needs EPT and an aligned EPTP list";
    CTL_SHADOW = "controls.vmcs_shadowing.bitmaps", "27.2.1.1", C,
        "VMREAD/VMWRITE bitmap addresses aligned when VMCS shadowing is on";
    CTL_VE = "controls.ept_violation_ve.address", "27.2.1.1", C,
        "virtualization-exception information address aligned when EPT-violation #VE is on";
    CTL_TSC_MULTIPLIER = "controls.tsc_scaling.multiplier", "25.6.5", C,
        "a non-zero TSC multiplier when TSC scaling is on";

    // VM-exit control fields (27.2.1.2)
    CTL_EXIT_ALLOWED = "controls.exit.allowed", "27.2.1.2", C,
        "VM-exit controls within the allowed settings";
    CTL_EXIT_TIMER = "controls.exit.save_preemption_timer", "27.2.1.2", C,
        "save VMX-preemption timer only with the preemption timer active";
    CTL_EXIT_MSR_STORE = "controls.exit.msr_store_area", "27.2.1.2", C,
        "VM-exit MSR-store area 16-byte aligned and wholly within the physical-address width";
    CTL_EXIT_MSR_LOAD = "controls.exit.msr_load_area", "27.2.1.2", C,
        "VM-exit MSR-load area 16-byte aligned and wholly within the physical-address width";

    // VM-entry control fields (27.2.1.3)
    CTL_ENTRY_ALLOWED = "controls.entry.allowed", "27.2.1.3", C,
        "VM-entry controls within the allowed settings";
    CTL_ENTRY_SMM = "controls.entry.smm", "27.2.1.3", C,
        "entry to SMM and deactivate dual-monitor treatment clear outside SMM";
    CTL_ENTRY_MSR_LOAD = "controls.entry.msr_load_area", "27.2.1.3", C,
        "VM-entry MSR-load area 16-byte aligned and wholly within the physical-address width";
    CTL_EVENT_TYPE = "controls.entry.event.type", "27.2.1.3", C,
        "injected event type not reserved; type 7 only with monitor trap flag support";
    CTL_EVENT_VECTOR = "controls.entry.event.vector", "27.2.1.3", C,
        "NMI vector 2, hardware exception vector at most 31, other-event vector 0";
    CTL_EVENT_ERROR_CODE = "controls.entry.event.deliver_error_code", "27.2.1.3", C,
        "deliver-error-code set exactly for protected-mode hardware exceptions that push one";
    CTL_EVENT_RESERVED = "controls.entry.event.reserved", "27.2.1.3", C,
        "interruption-information bits 30:12 zero";
    CTL_EVENT_ERROR_VALUE = "controls.entry.event.error_code_value", "27.2.1.3", C,
        "error code bits 31:16 zero when one is delivered";
    CTL_EVENT_LENGTH = "controls.entry.event.instruction_length", "27.2.1.3", C,
        "instruction length 1-15 for software interrupts and exceptions (0 only if IA32_VMX_MISC bit 30)";

    // Host state (27.2.2 - 27.2.4)
    HOST_CR0 = "host.cr0.fixed", "27.2.2", H,
        "host CR0 respects IA32_VMX_CR0_FIXED0/1";
    HOST_CR4 = "host.cr4.fixed", "27.2.2", H,
        "host CR4 respects IA32_VMX_CR4_FIXED0/1";
    HOST_CR3 = "host.cr3.width", "27.2.2", H,
        "host CR3 within the physical-address width";
    HOST_CET_WP = "host.cr4.cet_wp", "27.2.2", H,
        "host CR4.CET only with CR0.WP";
    HOST_SYSENTER = "host.sysenter.canonical", "27.2.2", H,
        "host IA32_SYSENTER_ESP/EIP canonical";
    HOST_PAT = "host.pat", "27.2.2", H,
        "host IA32_PAT holds only valid memory types when loaded on exit";
    HOST_EFER = "host.efer", "27.2.2", H,
        "host IA32_EFER reserved bits zero and LMA = LME = host address-space size when loaded on exit";
    HOST_SELECTOR_RPL_TI = "host.selector.rpl_ti", "27.2.3", H,
        "host selectors with RPL 0 and TI 0";
    HOST_CS_NULL = "host.cs.null", "27.2.3", H,
        "host CS selector not null";
    HOST_TR_NULL = "host.tr.null", "27.2.3", H,
        "host TR selector not null";
    HOST_SS_NULL = "host.ss.null", "27.2.3", H,
        "host SS selector not null for a 32-bit host";
    HOST_BASE_CANONICAL = "host.base.canonical", "27.2.3", H,
        "host FS, GS, TR, GDTR and IDTR bases canonical";
    HOST_ADDRESS_SPACE = "host.address_space_size", "27.2.4", H,
        "host address-space size set in IA-32e mode; clear together with IA-32e mode guest otherwise";
    HOST_64_PAE = "host.cr4.pae", "27.2.4", H,
        "host CR4.PAE for a 64-bit host";
    HOST_RIP = "host.rip", "27.2.4", H,
        "host RIP canonical (64-bit host) or below 4 GiB (32-bit host)";
    HOST_32_PCIDE = "host.cr4.pcide", "27.2.4", H,
        "host CR4.PCIDE clear for a 32-bit host";

    // Guest control registers, debug registers and MSRs (27.3.1.1)
    GUEST_CR0 = "guest.cr0.fixed", "27.3.1.1", G,
        "guest CR0 respects FIXED0/1 (PE and PG exempt under unrestricted guest)";
    GUEST_CR0_PG_PE = "guest.cr0.pg_without_pe", "27.3.1.1", G,
        "guest CR0.PG only with CR0.PE";
    GUEST_CR4 = "guest.cr4.fixed", "27.3.1.1", G,
        "guest CR4 respects FIXED0/1";
    GUEST_CET_WP = "guest.cr4.cet_wp", "27.3.1.1", G,
        "guest CR4.CET only with CR0.WP";
    GUEST_IA32E_PAGING = "guest.ia32e.paging", "27.3.1.1", G,
        "IA-32e mode guest with CR0.PG and CR4.PAE";
    GUEST_PCIDE = "guest.cr4.pcide", "27.3.1.1", G,
        "guest CR4.PCIDE only in IA-32e mode";
    GUEST_CR3 = "guest.cr3.width", "27.3.1.1", G,
        "guest CR3 within the physical-address width";
    GUEST_DEBUGCTL = "guest.debugctl.reserved", "27.3.1.1", G,
        "guest IA32_DEBUGCTL reserved bits zero when debug controls are loaded";
    GUEST_DR7 = "guest.dr7.reserved", "27.3.1.1", G,
        "guest DR7 bits 63:32 zero when debug controls are loaded";
    GUEST_SYSENTER = "guest.sysenter.canonical", "27.3.1.1", G,
        "guest IA32_SYSENTER_ESP/EIP canonical";
    GUEST_PAT = "guest.pat", "27.3.1.1", G,
        "guest IA32_PAT holds only valid memory types when loaded on entry";
    GUEST_EFER_RESERVED = "guest.efer.reserved", "27.3.1.1", G,
        "guest IA32_EFER reserved bits zero when loaded on entry";
    GUEST_EFER_LMA = "guest.efer.lma", "27.3.1.1", G,
        "guest EFER.LMA equal to IA-32e mode guest when loaded on entry";
    GUEST_EFER_LME = "guest.efer.lme", "27.3.1.1", G,
        "guest EFER.LME equal to EFER.LMA when CR0.PG is set and EFER is loaded";

    // Guest segment registers (27.3.1.2)
    GUEST_TR_TI = "guest.tr.ti", "27.3.1.2", G,
        "guest TR selector TI flag clear";
    GUEST_LDTR_TI = "guest.ldtr.ti", "27.3.1.2", G,
        "usable guest LDTR selector TI flag clear";
    GUEST_SS_CS_RPL = "guest.ss.rpl_cs", "27.3.1.2", G,
        "guest SS.RPL equal to CS.RPL (outside virtual-8086 mode, without unrestricted guest)";
    GUEST_V86_BASE = "guest.v86.base", "27.3.1.2", G,
        "virtual-8086 segment base equal to selector * 16";
    GUEST_V86_LIMIT = "guest.v86.limit", "27.3.1.2", G,
        "virtual-8086 segment limit 0xFFFF";
    GUEST_V86_AR = "guest.v86.access_rights", "27.3.1.2", G,
        "virtual-8086 segment access rights 0xF3";
    GUEST_BASE_CANONICAL = "guest.segment.base_canonical", "27.3.1.2", G,
        "guest TR, FS, GS and usable LDTR bases canonical";
    GUEST_BASE_HIGH = "guest.segment.base_high", "27.3.1.2", G,
        "guest CS and usable SS, DS, ES bases below 4 GiB";
    GUEST_CS_TYPE = "guest.cs.type", "27.3.1.2", G,
        "guest CS an accessed code segment (or accessed read/write data under unrestricted guest)";
    GUEST_SS_TYPE = "guest.ss.type", "27.3.1.2", G,
        "usable guest SS an accessed read/write data segment";
    GUEST_DATA_TYPE = "guest.data_segment.type", "27.3.1.2", G,
        "usable guest DS, ES, FS, GS accessed, and readable if code";
    GUEST_SEG_S = "guest.segment.s", "27.3.1.2", G,
        "guest CS and usable SS, DS, ES, FS, GS are code/data descriptors (S = 1)";
    GUEST_CS_DPL = "guest.cs.dpl", "27.3.1.2", G,
        "guest CS.DPL 0 for a data-type CS, equal to SS.DPL if non-conforming, at most SS.DPL if conforming";
    GUEST_SS_DPL = "guest.ss.dpl", "27.3.1.2", G,
        "guest SS.DPL equal to SS.RPL, and 0 in real mode or with a data-type CS";
    GUEST_DATA_DPL = "guest.data_segment.dpl", "27.3.1.2", G,
        "usable DS, ES, FS, GS with DPL not below RPL unless conforming code (without unrestricted guest)";
    GUEST_SEG_PRESENT = "guest.segment.present", "27.3.1.2", G,
        "guest CS, TR and usable segments present";
    GUEST_SEG_RESERVED = "guest.segment.reserved", "27.3.1.2", G,
        "access-rights bits 11:8 and 31:17 zero";
    GUEST_SEG_GRANULARITY = "guest.segment.granularity", "27.3.1.2", G,
        "limit consistent with the G flag";
    GUEST_CS_L_DB = "guest.cs.l_db", "27.3.1.2", G,
        "guest CS.D/B clear when CS.L is set in IA-32e mode";
    GUEST_SYSTEM_S = "guest.system_segment.s", "27.3.1.2", G,
        "guest TR and usable LDTR are system descriptors (S = 0)";
    GUEST_TR_TYPE = "guest.tr.type", "27.3.1.2", G,
        "guest TR a busy TSS (32/64-bit; 16-bit only outside IA-32e mode)";
    GUEST_TR_UNUSABLE = "guest.tr.unusable", "27.3.1.2", G,
        "guest TR usable";
    GUEST_LDTR_TYPE = "guest.ldtr.type", "27.3.1.2", G,
        "usable guest LDTR of type LDT";

    // Guest descriptor-table registers (27.3.1.3)
    GUEST_DT_BASE = "guest.gdtr_idtr.base_canonical", "27.3.1.3", G,
        "guest GDTR and IDTR bases canonical";
    GUEST_DT_LIMIT = "guest.gdtr_idtr.limit", "27.3.1.3", G,
        "guest GDTR and IDTR limits bits 31:16 zero";

    // Guest RIP and RFLAGS (27.3.1.4)
    GUEST_RIP_HIGH = "guest.rip.high", "27.3.1.4", G,
        "guest RIP below 4 GiB outside 64-bit mode";
    GUEST_RIP_CANONICAL = "guest.rip.canonical", "27.3.1.4", G,
        "guest RIP canonical in 64-bit mode";
    GUEST_RFLAGS_RESERVED = "guest.rflags.reserved", "27.3.1.4", G,
        "guest RFLAGS reserved bits zero and bit 1 set";
    GUEST_RFLAGS_VM = "guest.rflags.vm", "27.3.1.4", G,
        "guest RFLAGS.VM clear in IA-32e mode and with CR0.PE clear";
    GUEST_RFLAGS_IF = "guest.rflags.if_for_interrupt", "27.3.1.4", G,
        "guest RFLAGS.IF set when an external interrupt is injected";

    // Guest non-register state (27.3.1.5)
    GUEST_ACTIVITY_SUPPORTED = "guest.activity.supported", "27.3.1.5", G,
        "activity state one the processor supports";
    GUEST_ACTIVITY_HLT_DPL = "guest.activity.hlt_dpl", "27.3.1.5", G,
        "HLT activity only with SS.DPL 0";
    GUEST_ACTIVITY_BLOCKING = "guest.activity.blocking", "27.3.1.5", G,
        "blocking by STI or MOV SS only in the active state";
    GUEST_ACTIVITY_INJECTION = "guest.activity.injection", "27.3.1.5", G,
        "injected event allowed in the activity state entered";
    GUEST_ACTIVITY_SMM = "guest.activity.smm_sipi", "27.3.1.5", G,
        "no wait-for-SIPI state on entry to SMM";
    GUEST_INT_RESERVED = "guest.interruptibility.reserved", "27.3.1.5", G,
        "interruptibility-state bits 31:5 zero";
    GUEST_INT_STI_MOVSS = "guest.interruptibility.sti_and_mov_ss", "27.3.1.5", G,
        "blocking by STI and by MOV SS not both";
    GUEST_INT_STI_IF = "guest.interruptibility.sti_if", "27.3.1.5", G,
        "blocking by STI only with RFLAGS.IF set";
    GUEST_INT_SMI = "guest.interruptibility.smi", "27.3.1.5", G,
        "blocking by SMI only in SMM, and set on entry to SMM";
    GUEST_INT_EXTINT = "guest.interruptibility.external_interrupt", "27.3.1.5", G,
        "no blocking by STI or MOV SS when injecting an external interrupt";
    GUEST_INT_NMI = "guest.interruptibility.nmi", "27.3.1.5", G,
        "no blocking by STI or MOV SS when injecting an NMI";
    GUEST_INT_VNMI = "guest.interruptibility.virtual_nmi", "27.3.1.5", G,
        "no blocking by NMI when injecting an NMI with virtual NMIs";
    GUEST_PENDING_RESERVED = "guest.pending_debug.reserved", "27.3.1.5", G,
        "pending-debug-exceptions reserved bits zero";
    GUEST_PENDING_BS = "guest.pending_debug.bs", "27.3.1.5", G,
        "pending BS set exactly when single-stepping across blocking or HLT";
    GUEST_LINK_POINTER = "guest.vmcs_link_pointer", "27.3.1.5", G,
        "VMCS link pointer all ones, or 4-KiB aligned within the physical-address width";

    // Guest PDPTEs (27.3.1.6)
    GUEST_PDPTE = "guest.pdpte.reserved", "27.3.1.6", G,
        "present PDPTEs with reserved bits zero under PAE paging with EPT";

    // MSR loading (27.4)
    MSR_LOAD_RESERVED = "msr_load.reserved", "27.4", M,
        "MSR-load entry bits 63:32 zero";
    MSR_LOAD_FORBIDDEN = "msr_load.forbidden_msr", "27.4", M,
        "MSR-load entry not for FS/GS base, an x2APIC MSR or IA32_SMM_MONITOR_CTL";
}

/// The rule with this id.
pub fn find(id: &str) -> Option<&'static Rule> {
    ALL.iter().find(|r| r.id == id)
}
