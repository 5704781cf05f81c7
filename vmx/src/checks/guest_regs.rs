//! Checks on guest registers other than segments: control registers, debug registers and MSRs
//! (SDM Vol. 3C 27.3.1.1), GDTR/IDTR (27.3.1.3), RIP and RFLAGS (27.3.1.4). A processor reports
//! any of these as a VM exit with reason 33.

use super::rules::*;
use super::{pat_is_valid, Ctx};
use crate::caps::EntryControls;
use crate::exit::InterruptionType;
use crate::regs::*;
use crate::vmcs::Field;
use alloc::format;

use x86_arch::regs::DEBUGCTL_RESERVED;

pub(super) fn check(c: &mut Ctx) {
    control_registers(c);
    msrs(c);
    descriptor_tables(c);
    rip_rflags(c);
}

fn control_registers(c: &mut Ctx) {
    let caps = *c.caps;
    let cr0 = c.read(Field::GuestCr0);
    let must_be_1 = caps.guest_cr0_must_be_1(c.unrestricted());
    let missing = must_be_1 & !cr0;
    let extra = cr0 & !caps.cr0_fixed1;
    if missing != 0 || extra != 0 {
        c.fail(
            GUEST_CR0,
            format!("guest CR0 {cr0:#x}: bits {missing:#x} must be 1, bits {extra:#x} must be 0"),
            &[Field::GuestCr0],
        );
    }
    if cr0 & CR0_PG != 0 && cr0 & CR0_PE == 0 {
        c.fail(
            GUEST_CR0_PG_PE,
            format!("guest CR0 {cr0:#x} enables paging without protection"),
            &[Field::GuestCr0],
        );
    }
    let cr4 = c.read(Field::GuestCr4);
    if caps.fixed_cr4(cr4) != cr4 {
        c.fail(
            GUEST_CR4,
            format!(
                "guest CR4 {cr4:#x} should be {:#x} (FIXED0 {:#x}, FIXED1 {:#x})",
                caps.fixed_cr4(cr4),
                caps.cr4_fixed0,
                caps.cr4_fixed1
            ),
            &[Field::GuestCr4],
        );
    }
    if c.platform.cet && cr4 & CR4_CET != 0 && cr0 & CR0_WP == 0 {
        c.fail(
            GUEST_CET_WP,
            "guest CR4.CET set with CR0.WP clear".into(),
            &[Field::GuestCr0, Field::GuestCr4],
        );
    }
    if c.ia32e_guest() && (cr0 & CR0_PG == 0 || cr4 & CR4_PAE == 0) {
        c.fail(
            GUEST_IA32E_PAGING,
            format!(
                "IA-32e mode guest with CR0.PG {} and CR4.PAE {}",
                (cr0 & CR0_PG != 0) as u8,
                (cr4 & CR4_PAE != 0) as u8
            ),
            &[Field::EntryControls, Field::GuestCr0, Field::GuestCr4],
        );
    }
    if !c.ia32e_guest() && cr4 & CR4_PCIDE != 0 {
        c.fail(
            GUEST_PCIDE,
            "guest CR4.PCIDE set outside IA-32e mode".into(),
            &[Field::GuestCr4, Field::EntryControls],
        );
    }
    let cr3 = c.read(Field::GuestCr3);
    if !c.phys_ok(cr3) {
        c.fail(
            GUEST_CR3,
            format!("guest CR3 {cr3:#x} beyond the physical-address width"),
            &[Field::GuestCr3],
        );
    }
}

fn msrs(c: &mut Ctx) {
    if c.entry.contains(EntryControls::LOAD_DEBUG_CONTROLS) {
        let debugctl = c.read(Field::GuestIa32Debugctl);
        if debugctl & DEBUGCTL_RESERVED != 0 {
            c.fail(
                GUEST_DEBUGCTL,
                format!(
                    "guest IA32_DEBUGCTL {debugctl:#x} sets reserved bits {:#x}",
                    debugctl & DEBUGCTL_RESERVED
                ),
                &[Field::GuestIa32Debugctl],
            );
        }
        let dr7 = c.read(Field::GuestDr7);
        if dr7 & DR7_RESERVED_HIGH != 0 {
            c.fail(
                GUEST_DR7,
                format!("guest DR7 {dr7:#x} has bits above 31"),
                &[Field::GuestDr7],
            );
        }
    }
    for f in [Field::GuestIa32SysenterEsp, Field::GuestIa32SysenterEip] {
        let v = c.read(f);
        if !c.canonical(v) {
            c.fail(
                GUEST_SYSENTER,
                format!("{} {v:#x} not canonical", f.name()),
                &[f],
            );
        }
    }
    if c.entry.contains(EntryControls::LOAD_IA32_PAT) {
        let pat = c.read(Field::GuestIa32Pat);
        if !pat_is_valid(pat) {
            c.fail(
                GUEST_PAT,
                format!("guest IA32_PAT {pat:#x} holds an invalid memory type"),
                &[Field::GuestIa32Pat],
            );
        }
    }
    if c.entry.contains(EntryControls::LOAD_IA32_EFER) {
        let efer = c.read(Field::GuestIa32Efer);
        let reserved = efer & !c.platform.efer_supported;
        if reserved != 0 {
            c.fail(
                GUEST_EFER_RESERVED,
                format!("guest IA32_EFER {efer:#x} sets reserved bits {reserved:#x}"),
                &[Field::GuestIa32Efer],
            );
        }
        let lma = efer & EFER_LMA != 0;
        if lma != c.ia32e_guest() {
            c.fail(
                GUEST_EFER_LMA,
                format!(
                    "guest EFER.LMA {} but IA-32e mode guest {}",
                    lma as u8,
                    c.ia32e_guest() as u8
                ),
                &[Field::GuestIa32Efer, Field::EntryControls],
            );
        }
        let lme = efer & EFER_LME != 0;
        if c.read(Field::GuestCr0) & CR0_PG != 0 && lme != lma {
            c.fail(
                GUEST_EFER_LME,
                format!(
                    "guest EFER.LME {} differs from EFER.LMA {} with paging on",
                    lme as u8, lma as u8
                ),
                &[Field::GuestIa32Efer, Field::GuestCr0],
            );
        }
    }
}

fn descriptor_tables(c: &mut Ctx) {
    for f in [Field::GuestGdtrBase, Field::GuestIdtrBase] {
        let v = c.read(f);
        if !c.canonical(v) {
            c.fail(
                GUEST_DT_BASE,
                format!("{} {v:#x} not canonical", f.name()),
                &[f],
            );
        }
    }
    for f in [Field::GuestGdtrLimit, Field::GuestIdtrLimit] {
        let v = c.read(f);
        if v >> 16 != 0 {
            c.fail(
                GUEST_DT_LIMIT,
                format!("{} {v:#x} above 0xFFFF", f.name()),
                &[f],
            );
        }
    }
}

fn rip_rflags(c: &mut Ctx) {
    let rip = c.read(Field::GuestRip);
    let cs_l = c.read(Field::GuestCsAccessRights) & (1 << 13) != 0;
    if c.ia32e_guest() && cs_l {
        // Bochs does not make this check; processors do.
        if !c.canonical(rip) {
            c.fail(
                GUEST_RIP_CANONICAL,
                format!("guest RIP {rip:#x} not canonical in 64-bit mode"),
                &[Field::GuestRip],
            );
        }
    } else if rip >> 32 != 0 {
        c.fail(
            GUEST_RIP_HIGH,
            format!("guest RIP {rip:#x} above 4 GiB outside 64-bit mode"),
            &[Field::GuestRip],
        );
    }

    let rflags = c.read(Field::GuestRflags);
    if rflags & RFLAGS_RESERVED != 0 || rflags & RFLAGS_FIXED1 == 0 {
        c.fail(
            GUEST_RFLAGS_RESERVED,
            format!(
                "guest RFLAGS {rflags:#x}: reserved bits {:#x}, bit 1 {}",
                rflags & RFLAGS_RESERVED,
                (rflags >> 1) & 1
            ),
            &[Field::GuestRflags],
        );
    }
    let pe = c.read(Field::GuestCr0) & CR0_PE != 0;
    if rflags & RFLAGS_VM != 0 && (c.ia32e_guest() || !pe) {
        c.fail(
            GUEST_RFLAGS_VM,
            "guest RFLAGS.VM set in IA-32e mode or with CR0.PE clear".into(),
            &[Field::GuestRflags, Field::GuestCr0, Field::EntryControls],
        );
    }
    if let Some(ev) = c.injected_event() {
        if ev.kind() == InterruptionType::ExternalInterrupt && rflags & RFLAGS_IF == 0 {
            c.fail(
                GUEST_RFLAGS_IF,
                format!(
                    "external interrupt {:#x} injected with RFLAGS.IF clear",
                    ev.vector()
                ),
                &[Field::GuestRflags, Field::VmEntryInterruptionInfo],
            );
        }
    }
}
