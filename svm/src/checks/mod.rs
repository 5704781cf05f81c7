//! The checks VMRUN makes (APM Vol. 2 15.5.1 "Canonicalization and Consistency Checks", the
//! event-injection rules of 15.20, the nested-paging rules of 15.25, and the VMRUN
//! instruction's own checks), run in software against any [`VmcbAccess`], so that a failed
//! VMRUN is explained rule by rule and a VMCB can be checked before it ever runs.
//!
//! A broken guest state or control makes VMRUN exit at once with EXITCODE VMEXIT_INVALID (-1);
//! a broken host-side condition makes VMRUN itself fault (#UD or #GP) in the host.

pub mod rules;
#[cfg(test)]
mod tests;

pub use rules::Rule;

use crate::exit::EventInfo;
use crate::intercept::{nested_control, Misc2, EFER_SVME};
use crate::vmcb::{Attrib, Field, VmcbAccess};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use x86_arch::regs::*;

/// How a processor reports a broken rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// VMRUN raises #UD in the host.
    InvalidOpcode,
    /// VMRUN raises #GP(0) in the host.
    GeneralProtection,
    /// VMRUN "exits" at once with EXITCODE VMEXIT_INVALID (15.5.1).
    VmexitInvalid,
}

impl Failure {
    /// The order VMRUN reaches each: its own checks (#UD before #GP), then the VMCB.
    const fn stage(self) -> u8 {
        match self {
            Failure::InvalidOpcode => 0,
            Failure::GeneralProtection => 1,
            Failure::VmexitInvalid => 2,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::InvalidOpcode => "#UD from VMRUN",
            Failure::GeneralProtection => "#GP(0) from VMRUN",
            Failure::VmexitInvalid => "#VMEXIT with VMEXIT_INVALID (-1)",
        })
    }
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub apm: &'static str,
    /// What is wrong, with the values that matter.
    pub summary: String,
    /// The VMCB fields involved and their values.
    pub fields: Vec<(Field, u64)>,
}

impl Violation {
    pub fn expected_failure(&self) -> Failure {
        rules::find(self.rule)
            .map(|r| r.failure)
            .unwrap_or(Failure::VmexitInvalid)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] APM Vol. 2 {}: {}",
            self.rule, self.apm, self.summary
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

/// Facts about the processor the VMCB does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    /// MAXPHYADDR (CPUID Fn8000_0008 EAX[7:0]).
    pub phys_addr_width: u8,
    /// Long mode (CPUID Fn8000_0001 EDX[29]).
    pub long_mode: bool,
    /// EFER bits the processor implements (SVME among them): the rest must be zero.
    pub efer_supported: u64,
    /// CR4 bits the processor implements.
    pub cr4_supported: u64,
    pub nested_paging: bool,
    /// CET (CR4.CET exists).
    pub cet: bool,
}

impl Default for Platform {
    /// The widest limits a 64-bit SVM processor may have, so nothing valid anywhere is flagged.
    fn default() -> Self {
        Platform {
            phys_addr_width: 52,
            long_mode: true,
            efer_supported: EFER_SCE
                | EFER_LME
                | EFER_LMA
                | EFER_NXE
                | EFER_SVME
                | (1 << 13) // LMSLE
                | (1 << 14) // FFXSR
                | (1 << 15), // TCE
            cr4_supported: AMD_CR4_BITS,
            nested_paging: true,
            cet: true,
        }
    }
}

/// The CR4 bits an AMD64 processor may implement: VME through LA57, FSGSBASE, PCIDE, OSXSAVE,
/// SMEP, SMAP, PKE and CET (Vol. 2 3.1.3). VMXE, SMXE and the other Intel-only bits are
/// reserved.
pub const AMD_CR4_BITS: u64 =
    0x1FFF | CR4_FSGSBASE | CR4_PCIDE | CR4_OSXSAVE | CR4_SMEP | CR4_SMAP | CR4_PKE | CR4_CET;

/// The host's state when it executes VMRUN (the instruction's own checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    pub efer: u64,
    pub cr0: u64,
    pub cpl: u8,
    /// RFLAGS.VM: virtual-8086 mode.
    pub v8086: bool,
    /// RAX at VMRUN: the VMCB's physical address.
    pub vmcb_pa: u64,
}

impl Host {
    /// A 64-bit host at CPL 0 with SVM enabled, running the VMCB at `vmcb_pa`.
    pub const fn long_mode(vmcb_pa: u64) -> Host {
        Host {
            efer: EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE | EFER_SVME,
            cr0: CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
            cpl: 0,
            v8086: false,
            vmcb_pa,
        }
    }
}

/// Runs every check: the instruction's, then the controls', then the guest state's. Every
/// violation is returned, in that order.
pub fn check_vmrun(vmcb: &dyn VmcbAccess, platform: &Platform, host: &Host) -> Vec<Violation> {
    let mut c = Ctx {
        vmcb,
        platform,
        out: Vec::new(),
    };
    c.instruction(host);
    c.controls(host);
    c.guest();
    c.out
}

/// The failures a processor may report for these violations: only the earliest stage is
/// reported. Empty when there are none.
pub fn predicted_failures(violations: &[Violation]) -> Vec<Failure> {
    let Some(first) = violations
        .iter()
        .map(|v| v.expected_failure().stage())
        .min()
    else {
        return Vec::new();
    };
    let mut kinds: Vec<Failure> = violations
        .iter()
        .map(Violation::expected_failure)
        .filter(|k| k.stage() == first)
        .collect();
    kinds.dedup();
    kinds
}

/// Whether the failure a processor reported is the one these violations predict.
pub fn agrees(violations: &[Violation], reported: Failure) -> bool {
    predicted_failures(violations).contains(&reported)
}

/// The rules that produce a failure of this kind.
pub fn rules_for(reported: Failure) -> impl Iterator<Item = &'static Rule> {
    rules::ALL.iter().filter(move |r| r.failure == reported)
}

/// Writes the violations and, if the processor reported a failure, whether they explain it.
pub fn write_report(
    violations: &[Violation],
    reported: Option<Failure>,
    out: &mut dyn fmt::Write,
) -> fmt::Result {
    match violations.len() {
        0 => writeln!(out, "VMRUN checks: no violation found")?,
        n => writeln!(out, "VMRUN checks: {n} violation(s)")?,
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
    writeln!(
        out,
        "the processor reported {reported}, which the checks do not predict"
    )?;
    for r in rules_for(reported) {
        writeln!(
            out,
            "  could be [{}] APM Vol. 2 {}: {}",
            r.id, r.apm, r.requires
        )?;
    }
    Ok(())
}

struct Ctx<'a> {
    vmcb: &'a dyn VmcbAccess,
    platform: &'a Platform,
    out: Vec<Violation>,
}

impl Ctx<'_> {
    fn read(&self, f: Field) -> u64 {
        self.vmcb.read(f)
    }

    fn fail(&mut self, rule: Rule, summary: String, fields: &[Field]) {
        let fields = fields.iter().map(|&f| (f, self.vmcb.read(f))).collect();
        self.out.push(Violation {
            rule: rule.id,
            apm: rule.apm,
            summary,
            fields,
        });
    }

    /// Whether `[addr, addr + len)` lies below the physical-address width.
    fn below_max_phys(&self, addr: u64, len: u64) -> bool {
        let w = self.platform.phys_addr_width;
        w >= 64 || addr.checked_add(len - 1).is_some_and(|last| last >> w == 0)
    }

    fn instruction(&mut self, host: &Host) {
        use rules::*;
        if host.efer & EFER_SVME == 0 {
            self.fail(
                VMRUN_SVME,
                alloc::format!("host EFER {:#x} has SVME clear", host.efer),
                &[],
            );
        }
        if host.cr0 & CR0_PE == 0 || host.v8086 {
            self.fail(
                VMRUN_PROTECTED,
                String::from("the host is in real or virtual-8086 mode"),
                &[],
            );
        }
        if host.cpl != 0 {
            self.fail(VMRUN_CPL, alloc::format!("host CPL {}", host.cpl), &[]);
        }
        if host.vmcb_pa & 0xFFF != 0 || !self.below_max_phys(host.vmcb_pa, 1) {
            self.fail(
                VMRUN_VMCB_ADDRESS,
                alloc::format!(
                    "VMCB address {:#x} (physical-address width {})",
                    host.vmcb_pa,
                    self.platform.phys_addr_width
                ),
                &[],
            );
        }
    }

    fn controls(&mut self, host: &Host) {
        use rules::*;
        let misc2 = Misc2::from_bits_retain(self.read(Field::InterceptMisc2) as u32);
        if !misc2.contains(Misc2::VMRUN) {
            self.fail(
                CTL_VMRUN_INTERCEPT,
                String::from("the VMRUN intercept is clear"),
                &[Field::InterceptMisc2],
            );
        }
        // The processor ignores the low 12 bits of both bases (15.10.1, 15.11).
        let iopm = self.read(Field::IopmBase) & !0xFFF;
        if !self.below_max_phys(iopm, crate::intercept::iopm::SIZE as u64) {
            self.fail(
                CTL_IOPM,
                alloc::format!("the I/O permission map at {iopm:#x} reaches past MAXPHYADDR"),
                &[Field::IopmBase],
            );
        }
        let msrpm = self.read(Field::MsrpmBase) & !0xFFF;
        if !self.below_max_phys(msrpm, crate::intercept::msrpm::SIZE as u64) {
            self.fail(
                CTL_MSRPM,
                alloc::format!("the MSR permission map at {msrpm:#x} reaches past MAXPHYADDR"),
                &[Field::MsrpmBase],
            );
        }
        if self.read(Field::GuestAsid) == 0 {
            self.fail(
                CTL_ASID,
                String::from("guest ASID 0 is the host's"),
                &[Field::GuestAsid],
            );
        }
        let inj = EventInfo(self.read(Field::EventInj));
        if inj.valid() && !matches!(inj.kind(), 0 | 2 | 3 | 4) {
            self.fail(
                CTL_EVENTINJ_TYPE,
                alloc::format!("EVENTINJ type {} is reserved", inj.kind()),
                &[Field::EventInj],
            );
        } else if inj.valid() && inj.kind() == 3 && !inj.injectable() {
            self.fail(
                CTL_EVENTINJ_VECTOR,
                alloc::format!("EVENTINJ injects vector {} as an exception", inj.vector()),
                &[Field::EventInj],
            );
        }
        if self.read(Field::NestedControl) & nested_control::NP_ENABLE != 0 {
            if !self.platform.nested_paging {
                self.fail(
                    CTL_NP_SUPPORTED,
                    String::from("NP_ENABLE is set on a processor without nested paging"),
                    &[Field::NestedControl],
                );
            }
            if host.cr0 & CR0_PG == 0 {
                self.fail(
                    CTL_NP_HOST_PAGING,
                    String::from("nested paging with the host's paging off"),
                    &[Field::NestedControl],
                );
            }
            let ncr3 = self.read(Field::NestedCr3);
            if !self.below_max_phys(ncr3, 1) {
                self.fail(
                    CTL_NP_NCR3,
                    alloc::format!(
                        "N_CR3 {ncr3:#x} beyond the physical-address width {}",
                        self.platform.phys_addr_width
                    ),
                    &[Field::NestedCr3],
                );
            }
            let pat = self.read(Field::GPat);
            if !pat_is_valid(pat) {
                self.fail(
                    CTL_NP_GPAT,
                    alloc::format!("G_PAT {pat:#x} holds an invalid memory type"),
                    &[Field::GPat],
                );
            }
        }
    }

    fn guest(&mut self) {
        use rules::*;
        let efer = self.read(Field::Efer);
        let cr0 = self.read(Field::Cr0);
        let cr3 = self.read(Field::Cr3);
        let cr4 = self.read(Field::Cr4);
        let p = *self.platform;
        if efer & EFER_SVME == 0 {
            self.fail(
                GUEST_EFER_SVME,
                alloc::format!("guest EFER {efer:#x} has SVME clear"),
                &[Field::Efer],
            );
        }
        if cr0 & CR0_NW != 0 && cr0 & CR0_CD == 0 {
            self.fail(
                GUEST_CR0_CD_NW,
                alloc::format!("CR0 {cr0:#x}: NW set, CD clear"),
                &[Field::Cr0],
            );
        }
        if cr0 >> 32 != 0 {
            self.fail(
                GUEST_CR0_HIGH,
                alloc::format!("CR0 {cr0:#x} has bits 63:32 set"),
                &[Field::Cr0],
            );
        }
        let long = efer & EFER_LME != 0 && cr0 & CR0_PG != 0;
        let cr3_mbz = if long {
            // Bit 63 is the no-flush hint of a MOV to CR3 with PCIDs, never stored.
            let w = p.phys_addr_width.min(63);
            !((1u64 << w) - 1) & !(1 << 63)
        } else {
            0xFFFF_FFFF_0000_0000
        };
        if cr3 & cr3_mbz != 0 {
            self.fail(
                GUEST_CR3_MBZ,
                alloc::format!("CR3 {cr3:#x} has must-be-zero bits {:#x}", cr3 & cr3_mbz),
                &[Field::Cr3, Field::Efer, Field::Cr0],
            );
        }
        let cr4_mbz = !p.cr4_supported;
        if cr4 & cr4_mbz != 0 {
            self.fail(
                GUEST_CR4_MBZ,
                alloc::format!("CR4 {cr4:#x} has must-be-zero bits {:#x}", cr4 & cr4_mbz),
                &[Field::Cr4],
            );
        }
        for (field, rule) in [(Field::Dr6, GUEST_DR6_HIGH), (Field::Dr7, GUEST_DR7_HIGH)] {
            let v = self.read(field);
            if v >> 32 != 0 {
                self.fail(
                    rule,
                    alloc::format!("{} {v:#x} has bits 63:32 set", field.name()),
                    &[field],
                );
            }
        }
        let efer_mbz = !p.efer_supported;
        if efer & efer_mbz != 0 {
            self.fail(
                GUEST_EFER_MBZ,
                alloc::format!(
                    "EFER {efer:#x} has must-be-zero bits {:#x}",
                    efer & efer_mbz
                ),
                &[Field::Efer],
            );
        }
        if !p.long_mode && efer & (EFER_LME | EFER_LMA) != 0 {
            self.fail(
                GUEST_EFER_LONG_MODE,
                alloc::format!("EFER {efer:#x}: LME or LMA on a processor without long mode"),
                &[Field::Efer],
            );
        }
        if long && cr4 & CR4_PAE == 0 {
            self.fail(
                GUEST_LME_PG_PAE,
                String::from("EFER.LME and CR0.PG set, CR4.PAE clear"),
                &[Field::Efer, Field::Cr0, Field::Cr4],
            );
        }
        if long && cr0 & CR0_PE == 0 {
            self.fail(
                GUEST_LME_PG_PE,
                String::from("EFER.LME and CR0.PG set, CR0.PE clear"),
                &[Field::Efer, Field::Cr0],
            );
        }
        let cs = Attrib(self.read(Field::CsAttrib) as u16);
        if long && cr4 & CR4_PAE != 0 && cs.long() && cs.db() {
            self.fail(
                GUEST_CS_L_D,
                String::from("long mode with CS.L and CS.D both set"),
                &[Field::CsAttrib, Field::Efer, Field::Cr0, Field::Cr4],
            );
        }
        if p.cet && cr4 & CR4_CET != 0 && cr0 & CR0_WP == 0 {
            self.fail(
                GUEST_CET_WP,
                String::from("CR4.CET set with CR0.WP clear"),
                &[Field::Cr4, Field::Cr0],
            );
        }
    }
}
