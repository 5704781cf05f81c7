//! The checks a processor makes on VM entry (SDM Vol. 3C 27.2 - 27.4), run in software against
//! any [`VmcsAccess`] so a failed entry can be explained rule by rule, and so a VMCS can be
//! checked before it is ever launched.
//!
//! Checks that need memory the VMCS only points to (the VMCS link pointer's revision, PDPTEs
//! loaded from guest CR3 without EPT, MSR-load entries) are left to the caller, except MSR-load
//! entries, which [`check_msr_load_entries`] checks once the caller has read them.

mod controls;
mod guest_regs;
mod guest_segments;
mod guest_state;
mod host;
mod msr_load;
pub mod rules;
#[cfg(test)]
mod tests;

pub use msr_load::{check_msr_load_entries, MsrEntry};
pub use rules::Rule;

use crate::caps::{
    EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased, VmxCaps,
};
use crate::vmcs::{Field, VmcsAccess};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// How a processor reports a failed VM entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryFailureKind {
    /// VMLAUNCH/VMRESUME fails with VMfailValid and this VM-instruction error (SDM Vol. 3C 31.4):
    /// 7 for control fields, 8 for host state, 26 for events blocked by MOV SS.
    InstructionError(u32),
    /// A VM exit with bit 31 set and basic reason 33: invalid guest state (SDM Vol. 3C 27.8).
    ExitReason33,
    /// A VM exit with bit 31 set and basic reason 34: MSR loading failed (SDM Vol. 3C 27.8).
    ExitReason34,
}

impl EntryFailureKind {
    /// What the processor reported, from a VM-instruction error number.
    pub const fn from_instruction_error(n: u32) -> EntryFailureKind {
        EntryFailureKind::InstructionError(n)
    }

    /// What the processor reported, from a full exit-reason field; `None` if the exit was not an
    /// entry failure this crate checks for (a machine check during entry, reason 41, is not
    /// about the VMCS).
    pub const fn from_exit_reason(exit_reason: u32) -> Option<EntryFailureKind> {
        if exit_reason & (1 << 31) == 0 {
            return None;
        }
        match exit_reason & 0xffff {
            33 => Some(EntryFailureKind::ExitReason33),
            34 => Some(EntryFailureKind::ExitReason34),
            _ => None,
        }
    }

    /// The order in which VM entry reaches each category (SDM Vol. 3C 27.1-27.4): basic checks,
    /// then controls and host state (in any order between them), then guest state, then MSR
    /// loading. A failure stops entry at the first category that fails.
    const fn stage(self) -> u8 {
        match self {
            EntryFailureKind::InstructionError(7 | 8) => 1,
            EntryFailureKind::InstructionError(_) => 0,
            EntryFailureKind::ExitReason33 => 2,
            EntryFailureKind::ExitReason34 => 3,
        }
    }
}

impl fmt::Display for EntryFailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EntryFailureKind::InstructionError(n) => {
                write!(
                    f,
                    "VM-instruction error {n} ({})",
                    crate::vmcs::vm_instruction_error_name(n)
                )
            }
            EntryFailureKind::ExitReason33 => f.write_str("VM exit 33 (invalid guest state)"),
            EntryFailureKind::ExitReason34 => f.write_str("VM exit 34 (MSR loading)"),
        }
    }
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Stable rule id, e.g. "guest.cr0.fixed" (see [`rules`]).
    pub rule: &'static str,
    /// SDM Vol. 3C section, e.g. "27.3.1.1".
    pub sdm: &'static str,
    /// What is wrong with this VMCS, with the values that matter.
    pub summary: String,
    /// The fields involved and their values.
    pub fields: Vec<(Field, u64)>,
}

impl Violation {
    /// How the processor reports this violation.
    pub fn expected_failure(&self) -> EntryFailureKind {
        rules::find(self.rule)
            .map(|r| r.failure)
            .unwrap_or(EntryFailureKind::ExitReason33)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] SDM Vol. 3C {}: {}",
            self.rule, self.sdm, self.summary
        )?;
        for (i, (field, value)) in self.fields.iter().enumerate() {
            write!(
                f,
                "{} {} = {value:#x}",
                if i == 0 { ";" } else { "," },
                field.name()
            )?;
        }
        Ok(())
    }
}

/// Facts about the processor that the capability MSRs do not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    /// MAXPHYADDR (CPUID.80000008H:EAX bits 7:0). Addresses at or above 2^width are rejected.
    pub phys_addr_width: u8,
    /// Linear-address width for canonical checks: 48, or 57 with 5-level paging.
    pub linear_addr_width: u8,
    /// The VMM runs in IA-32e mode (a 64-bit hypervisor always does).
    pub host_long_mode: bool,
    /// The VMM runs in SMM (dual-monitor treatment); Vigil never does.
    pub in_smm: bool,
    /// EFER bits the processor implements: anything else is reserved.
    pub efer_supported: u64,
    /// Whether the processor supports CET (makes the CR4.CET/CR0.WP rules apply).
    pub cet: bool,
}

impl Default for Platform {
    /// The widest architectural limits, so that nothing valid on any processor is flagged:
    /// 52-bit physical addresses, 48-bit linear addresses, a 64-bit VMM outside SMM.
    fn default() -> Self {
        use crate::regs::{EFER_LMA, EFER_LME, EFER_NXE, EFER_SCE};
        Platform {
            phys_addr_width: 52,
            linear_addr_width: 48,
            host_long_mode: true,
            in_smm: false,
            efer_supported: EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE,
            cet: true,
        }
    }
}

/// Runs every check on `vmcs` with default [`Platform`] facts.
pub fn check_vm_entry(vmcs: &dyn VmcsAccess, caps: &VmxCaps) -> Vec<Violation> {
    check_vm_entry_with(vmcs, caps, &Platform::default())
}

/// Runs every check on `vmcs`: controls (27.2.1), host state (27.2.2-27.2.4) and guest state
/// (27.3.1). All violations are returned, not just the first, in that order.
pub fn check_vm_entry_with(
    vmcs: &dyn VmcsAccess,
    caps: &VmxCaps,
    platform: &Platform,
) -> Vec<Violation> {
    let mut ctx = Ctx::new(vmcs, caps, platform);
    controls::check(&mut ctx);
    host::check(&mut ctx);
    guest_regs::check(&mut ctx);
    guest_segments::check(&mut ctx);
    guest_state::check(&mut ctx);
    ctx.out
}

/// The failures a processor may report for these violations: only the earliest category can
/// be reported, and between controls (error 7) and host state (error 8) either may come first
/// (SDM Vol. 3C 27.2). Empty when there are no violations.
pub fn predicted_failures(violations: &[Violation]) -> Vec<EntryFailureKind> {
    let Some(first) = violations
        .iter()
        .map(|v| v.expected_failure().stage())
        .min()
    else {
        return Vec::new();
    };
    let mut kinds: Vec<EntryFailureKind> = violations
        .iter()
        .map(Violation::expected_failure)
        .filter(|k| k.stage() == first)
        .collect();
    kinds.sort_by_key(|k| match k {
        EntryFailureKind::InstructionError(n) => *n,
        EntryFailureKind::ExitReason33 => 1000,
        EntryFailureKind::ExitReason34 => 1001,
    });
    kinds.dedup();
    kinds
}

/// Whether the failure a processor reported is one these violations explain.
pub fn agrees(violations: &[Violation], reported: EntryFailureKind) -> bool {
    predicted_failures(violations).contains(&reported)
}

/// The rules that can produce the failure a processor reported.
pub fn rules_for(reported: EntryFailureKind) -> impl Iterator<Item = &'static Rule> {
    rules::ALL.iter().filter(move |r| r.failure == reported)
}

/// State shared by the check functions: the decoded controls and the violations so far.
pub(crate) struct Ctx<'a> {
    pub vmcs: &'a dyn VmcsAccess,
    pub caps: &'a VmxCaps,
    pub platform: &'a Platform,
    pub pin: PinBased,
    pub proc1: PrimaryProcBased,
    /// Secondary controls as entry sees them: 0 unless "activate secondary controls" is set
    /// (SDM Vol. 3C 25.6.2).
    pub proc2: SecondaryProcBased,
    pub exit: ExitControls,
    pub entry: EntryControls,
    pub out: Vec<Violation>,
}

impl<'a> Ctx<'a> {
    fn new(vmcs: &'a dyn VmcsAccess, caps: &'a VmxCaps, platform: &'a Platform) -> Self {
        let proc1 =
            PrimaryProcBased::from_bits_retain(vmcs.read(Field::PrimaryProcBasedControls) as u32);
        let proc2 = if proc1.contains(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS) {
            SecondaryProcBased::from_bits_retain(vmcs.read(Field::SecondaryProcBasedControls) as u32)
        } else {
            SecondaryProcBased::empty()
        };
        Ctx {
            vmcs,
            caps,
            platform,
            pin: PinBased::from_bits_retain(vmcs.read(Field::PinBasedControls) as u32),
            proc1,
            proc2,
            exit: ExitControls::from_bits_retain(vmcs.read(Field::ExitControls) as u32),
            entry: EntryControls::from_bits_retain(vmcs.read(Field::EntryControls) as u32),
            out: Vec::new(),
        }
    }

    pub fn read(&self, f: Field) -> u64 {
        self.vmcs.read(f)
    }

    /// Records a violation of `rule`, capturing the current values of `fields`.
    pub fn fail(&mut self, rule: Rule, summary: String, fields: &[Field]) {
        let fields = fields.iter().map(|&f| (f, self.vmcs.read(f))).collect();
        self.out.push(Violation {
            rule: rule.id,
            sdm: rule.sdm,
            summary,
            fields,
        });
    }

    pub fn ia32e_guest(&self) -> bool {
        self.entry.contains(EntryControls::IA32E_MODE_GUEST)
    }

    pub fn unrestricted(&self) -> bool {
        self.proc2.contains(SecondaryProcBased::UNRESTRICTED_GUEST)
    }

    pub fn host64(&self) -> bool {
        self.exit.contains(ExitControls::HOST_ADDRESS_SPACE_SIZE)
    }

    /// The address fits the processor's physical-address width.
    pub fn phys_ok(&self, addr: u64) -> bool {
        self.platform.phys_addr_width >= 64 || addr >> self.platform.phys_addr_width == 0
    }

    /// The address is 4-KiB aligned and fits the physical-address width.
    pub fn page_ok(&self, addr: u64) -> bool {
        addr & 0xfff == 0 && self.phys_ok(addr)
    }

    pub fn canonical(&self, addr: u64) -> bool {
        is_canonical(addr, self.platform.linear_addr_width)
    }

    /// The event the VM-entry interruption-information field injects, if any.
    pub fn injected_event(&self) -> Option<crate::exit::InterruptionInfo> {
        let info = crate::exit::InterruptionInfo(self.read(Field::VmEntryInterruptionInfo) as u32);
        info.valid().then_some(info)
    }
}

/// Bits 63:width-1 all equal (SDM Vol. 3A 3.3.7.1).
pub use x86_arch::is_canonical;

/// Every byte of an IA32_PAT value is a valid memory type (SDM Vol. 3A 12.12.2).
pub use x86_arch::regs::pat_is_valid;

/// Writes a readable account of `violations` and, if the processor already reported a failure,
/// whether the checks explain it. When they do not, the rules that could have caused the
/// reported failure are listed, to show where to look (or which check is missing).
pub fn write_report(
    violations: &[Violation],
    reported: Option<EntryFailureKind>,
    out: &mut dyn fmt::Write,
) -> fmt::Result {
    match violations.len() {
        0 => writeln!(out, "VM-entry checks: no violation found")?,
        n => writeln!(out, "VM-entry checks: {n} violation(s)")?,
    }
    for v in violations {
        writeln!(out, "  {v}")?;
    }
    let Some(reported) = reported else {
        return Ok(());
    };
    if agrees(violations, reported) {
        return writeln!(
            out,
            "the processor reported {reported}, as the checks predict"
        );
    }
    write!(
        out,
        "the processor reported {reported}, but the checks predict "
    )?;
    let predicted = predicted_failures(violations);
    if predicted.is_empty() {
        write!(out, "success")?;
    }
    for (i, k) in predicted.iter().enumerate() {
        write!(out, "{}{k}", if i == 0 { "" } else { " or " })?;
    }
    writeln!(out)?;
    let candidates: Vec<&str> = rules_for(reported).map(|r| r.id).collect();
    if candidates.is_empty() {
        writeln!(out, "no rule here produces {reported}")
    } else {
        writeln!(out, "rules that produce it: {}", candidates.join(", "))
    }
}
