//! Every check VMRUN makes that this crate knows, with a stable id, the APM section it comes
//! from and how the processor reports its failure.
//!
//! Ids are meant to be quoted in logs and bug reports: keep them stable once published.

use super::Failure;

/// One VMRUN rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Stable id, e.g. "guest.efer.svme".
    pub id: &'static str,
    /// APM Vol. 2 section, e.g. "15.5.1".
    pub apm: &'static str,
    /// How a processor reports a VMCB (or host state) that breaks this rule.
    pub failure: Failure,
    /// What the rule requires, in a sentence.
    pub requires: &'static str,
}

const UD: Failure = Failure::InvalidOpcode;
const GP: Failure = Failure::GeneralProtection;
const INV: Failure = Failure::VmexitInvalid;

macro_rules! rules {
    ($( $konst:ident = $id:literal, $apm:literal, $kind:ident, $text:literal; )*) => {
        $( pub const $konst: Rule = Rule { id: $id, apm: $apm, failure: $kind, requires: $text }; )*
        /// All rules, in the order the checks run.
        pub const ALL: &[Rule] = &[ $( $konst, )* ];
    };
}

rules! {
    // The VMRUN instruction itself (Vol. 3 "VMRUN"; Vol. 2 15.4, 15.5): faults in the host.
    VMRUN_SVME = "vmrun.host.svme", "15.4", UD,
        "EFER.SVME set in the host: without it VMRUN is an undefined opcode";
    VMRUN_PROTECTED = "vmrun.host.protected_mode", "15.5", UD,
        "the host in protected mode: VMRUN is not recognized in real or virtual-8086 mode";
    VMRUN_CPL = "vmrun.host.cpl", "15.5", GP,
        "the host at CPL 0";
    VMRUN_VMCB_ADDRESS = "vmrun.vmcb_address", "15.5.1", GP,
        "the VMCB's physical address (RAX) 4-KiB aligned and below the physical-address width";

    // Controls (15.5.1 "Canonicalization and Consistency Checks").
    CTL_VMRUN_INTERCEPT = "control.intercept.vmrun", "15.5.1", INV,
        "the VMRUN intercept bit set";
    CTL_IOPM = "control.iopm.address", "15.5.1", INV,
        "the 12-KiB I/O permission map wholly below the maximum physical address";
    CTL_MSRPM = "control.msrpm.address", "15.5.1", INV,
        "the 8-KiB MSR permission map wholly below the maximum physical address";
    CTL_ASID = "control.asid.zero", "15.5.1", INV,
        "a guest ASID other than 0 (ASID 0 is the host's)";
    CTL_EVENTINJ_TYPE = "control.eventinj.type", "15.20", INV,
        "an injected event of a defined type: external interrupt (0), NMI (2), exception (3) or software interrupt (4)";
    CTL_EVENTINJ_VECTOR = "control.eventinj.exception_vector", "15.20", INV,
        "an injected exception (type 3) with an exception vector: not 2 (NMI) and below 32";
    CTL_NP_SUPPORTED = "control.np.supported", "15.25.3", INV,
        "nested paging enabled only on a processor that has it";
    CTL_NP_HOST_PAGING = "control.np.host_paging", "15.25.3", INV,
        "nested paging enabled only while the host has paging on (CR0.PG)";
    CTL_NP_NCR3 = "control.np.ncr3", "15.25.4", INV,
        "N_CR3 with no bit set at or above the physical-address width";
    CTL_NP_GPAT = "guest.g_pat", "15.25.4", INV,
        "with nested paging, a guest PAT whose every entry is a valid memory type";

    // Guest state (15.5.1).
    GUEST_EFER_SVME = "guest.efer.svme", "15.5.1", INV,
        "EFER.SVME set in the guest's EFER";
    GUEST_CR0_CD_NW = "guest.cr0.nw_without_cd", "15.5.1", INV,
        "CR0.NW clear when CR0.CD is clear";
    GUEST_CR0_HIGH = "guest.cr0.high", "15.5.1", INV,
        "CR0 bits 63:32 zero";
    GUEST_CR3_MBZ = "guest.cr3.mbz", "15.5.1", INV,
        "no must-be-zero bit of CR3 set (bits at or above the physical-address width in long mode, bits 63:32 outside it)";
    GUEST_CR4_MBZ = "guest.cr4.mbz", "15.5.1", INV,
        "no must-be-zero bit of CR4 set (bits 63:32 and features the processor lacks)";
    GUEST_DR6_HIGH = "guest.dr6.high", "15.5.1", INV,
        "DR6 bits 63:32 zero";
    GUEST_DR7_HIGH = "guest.dr7.high", "15.5.1", INV,
        "DR7 bits 63:32 zero";
    GUEST_EFER_MBZ = "guest.efer.mbz", "15.5.1", INV,
        "no must-be-zero bit of EFER set";
    GUEST_EFER_LONG_MODE = "guest.efer.long_mode_supported", "15.5.1", INV,
        "EFER.LMA and EFER.LME clear on a processor without long mode";
    GUEST_LME_PG_PAE = "guest.efer.lme_pg_without_pae", "15.5.1", INV,
        "CR4.PAE set when EFER.LME and CR0.PG are both set";
    GUEST_LME_PG_PE = "guest.efer.lme_pg_without_pe", "15.5.1", INV,
        "CR0.PE set when EFER.LME and CR0.PG are both set";
    GUEST_CS_L_D = "guest.cs.long_and_default", "15.5.1", INV,
        "CS.L and CS.D not both set when EFER.LME, CR0.PG and CR4.PAE are set";
    GUEST_CET_WP = "guest.cr4.cet_without_wp", "15.5.1", INV,
        "CR0.WP set when CR4.CET is set";
}

/// The rule with this id.
pub fn find(id: &str) -> Option<&'static Rule> {
    ALL.iter().find(|r| r.id == id)
}
