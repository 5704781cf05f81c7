//! Checks on guest non-register state (SDM Vol. 3C 27.3.1.5) and on the PDPTEs VM entry loads
//! from the VMCS when EPT is on (27.3.1.6). A processor reports any of these as a VM exit with
//! reason 33 (exit qualification 4 for the link pointer, 2 for PDPTEs).

use super::rules::*;
use super::Ctx;
use crate::caps::{EntryControls, PinBased, SecondaryProcBased};
use crate::exit::InterruptionType;
use crate::regs::{CR0_PG, CR4_PAE, RFLAGS_IF, RFLAGS_TF};
use crate::vmcs::Field;
use alloc::format;

const BLOCKING_STI: u64 = 1 << 0;
const BLOCKING_MOV_SS: u64 = 1 << 1;
const BLOCKING_SMI: u64 = 1 << 2;
const BLOCKING_NMI: u64 = 1 << 3;
/// Bits 31:5 of the interruptibility state are reserved (SDM Vol. 3C 25.4.2).
const INTERRUPTIBILITY_RESERVED: u64 = !0x1f;

const ACTIVE: u64 = 0;
const HLT: u64 = 1;
const SHUTDOWN: u64 = 2;
const WAIT_FOR_SIPI: u64 = 3;

/// Pending debug exceptions: B3-B0 (3:0), enabled breakpoint (12) and BS (14) are defined
/// (SDM Vol. 3C 25.4.2). Bit 16 (RTM) is treated as reserved, as Bochs does: Vigil never
/// sets it, and a processor without RTM rejects it.
const PENDING_DEBUG_RESERVED: u64 = !0x500f;
const PENDING_BS: u64 = 1 << 14;
const DEBUGCTL_BTF: u64 = 1 << 1;

pub(super) fn check(c: &mut Ctx) {
    activity(c);
    interruptibility(c);
    pending_debug(c);
    link_pointer(c);
    pdptes(c);
}

fn activity(c: &mut Ctx) {
    let state = c.read(Field::GuestActivityState);
    if !c.caps.activity_state_supported(state) {
        c.fail(
            GUEST_ACTIVITY_SUPPORTED,
            format!(
                "activity state {state} ({}) not supported",
                crate::vmcs::activity_state_name(state)
            ),
            &[Field::GuestActivityState],
        );
    }
    let ss_dpl = (c.read(Field::GuestSsAccessRights) >> 5) & 3;
    if state == HLT && ss_dpl != 0 {
        c.fail(
            GUEST_ACTIVITY_HLT_DPL,
            format!("HLT activity state with SS.DPL {ss_dpl}"),
            &[Field::GuestActivityState, Field::GuestSsAccessRights],
        );
    }
    let int = c.read(Field::GuestInterruptibilityState);
    if int & (BLOCKING_STI | BLOCKING_MOV_SS) != 0 && state != ACTIVE {
        c.fail(
            GUEST_ACTIVITY_BLOCKING,
            format!("blocking by STI/MOV SS in activity state {state}"),
            &[Field::GuestActivityState, Field::GuestInterruptibilityState],
        );
    }
    if let Some(ev) = c.injected_event() {
        let (kind, vector) = (ev.kind(), ev.vector());
        use InterruptionType::*;
        let allowed = match state {
            HLT => match kind {
                ExternalInterrupt | Nmi | OtherEvent => true,
                HardwareException => matches!(vector, 1 | 18),
                PrivilegedSoftwareException => vector == 1,
                _ => false,
            },
            SHUTDOWN => kind == Nmi || (kind == HardwareException && vector == 18),
            WAIT_FOR_SIPI => false,
            _ => true,
        };
        if !allowed {
            c.fail(
                GUEST_ACTIVITY_INJECTION,
                format!(
                    "{} vector {vector} injected into activity state {state}",
                    kind.name()
                ),
                &[Field::GuestActivityState, Field::VmEntryInterruptionInfo],
            );
        }
    }
    if c.entry.contains(EntryControls::ENTRY_TO_SMM) && state == WAIT_FOR_SIPI {
        c.fail(
            GUEST_ACTIVITY_SMM,
            "wait-for-SIPI state on entry to SMM".into(),
            &[Field::GuestActivityState, Field::EntryControls],
        );
    }
}

fn interruptibility(c: &mut Ctx) {
    let int = c.read(Field::GuestInterruptibilityState);
    let f = [Field::GuestInterruptibilityState];
    if int & INTERRUPTIBILITY_RESERVED != 0 {
        c.fail(
            GUEST_INT_RESERVED,
            format!("interruptibility state {int:#x} sets reserved bits"),
            &f,
        );
    }
    if int & BLOCKING_STI != 0 && int & BLOCKING_MOV_SS != 0 {
        c.fail(
            GUEST_INT_STI_MOVSS,
            "blocking by both STI and MOV SS".into(),
            &f,
        );
    }
    if int & BLOCKING_STI != 0 && c.read(Field::GuestRflags) & RFLAGS_IF == 0 {
        c.fail(
            GUEST_INT_STI_IF,
            "blocking by STI with RFLAGS.IF clear".into(),
            &[Field::GuestInterruptibilityState, Field::GuestRflags],
        );
    }
    let smm_entry = c.entry.contains(EntryControls::ENTRY_TO_SMM);
    if int & BLOCKING_SMI != 0 && !c.platform.in_smm {
        c.fail(GUEST_INT_SMI, "blocking by SMI outside SMM".into(), &f);
    }
    if smm_entry && int & BLOCKING_SMI == 0 {
        c.fail(
            GUEST_INT_SMI,
            "entry to SMM without blocking by SMI".into(),
            &f,
        );
    }
    if let Some(ev) = c.injected_event() {
        let both = f
            .iter()
            .copied()
            .chain([Field::VmEntryInterruptionInfo])
            .collect::<alloc::vec::Vec<_>>();
        match ev.kind() {
            InterruptionType::ExternalInterrupt if int & (BLOCKING_STI | BLOCKING_MOV_SS) != 0 => {
                c.fail(
                    GUEST_INT_EXTINT,
                    "external interrupt injected under blocking by STI/MOV SS".into(),
                    &both,
                );
            }
            InterruptionType::Nmi => {
                if int & (BLOCKING_STI | BLOCKING_MOV_SS) != 0 {
                    c.fail(
                        GUEST_INT_NMI,
                        "NMI injected under blocking by STI/MOV SS".into(),
                        &both,
                    );
                }
                if c.pin.contains(PinBased::VIRTUAL_NMIS) && int & BLOCKING_NMI != 0 {
                    c.fail(
                        GUEST_INT_VNMI,
                        "NMI injected with virtual NMIs under blocking by NMI".into(),
                        &both,
                    );
                }
            }
            _ => {}
        }
    }
}

fn pending_debug(c: &mut Ctx) {
    let pending = c.read(Field::GuestPendingDebugExceptions);
    if pending & PENDING_DEBUG_RESERVED != 0 {
        c.fail(
            GUEST_PENDING_RESERVED,
            format!(
                "pending debug exceptions {pending:#x} set reserved bits {:#x}",
                pending & PENDING_DEBUG_RESERVED
            ),
            &[Field::GuestPendingDebugExceptions],
        );
    }
    // While events are blocked or the guest halts, a pending single-step must be recorded in
    // BS exactly when TF would cause one (SDM Vol. 3C 27.3.1.5).
    let int = c.read(Field::GuestInterruptibilityState);
    if int & (BLOCKING_STI | BLOCKING_MOV_SS) != 0 || c.read(Field::GuestActivityState) == HLT {
        let tf = c.read(Field::GuestRflags) & RFLAGS_TF != 0;
        let btf = c.read(Field::GuestIa32Debugctl) & DEBUGCTL_BTF != 0;
        let bs = pending & PENDING_BS != 0;
        let stepping = tf && !btf;
        if bs != stepping {
            c.fail(
                GUEST_PENDING_BS,
                format!(
                    "pending BS {} but TF {} and DEBUGCTL.BTF {}",
                    bs as u8, tf as u8, btf as u8
                ),
                &[
                    Field::GuestPendingDebugExceptions,
                    Field::GuestRflags,
                    Field::GuestIa32Debugctl,
                ],
            );
        }
    }
}

fn link_pointer(c: &mut Ctx) {
    let link = c.read(Field::VmcsLinkPointer);
    if link != u64::MAX && !c.page_ok(link) {
        c.fail(
            GUEST_LINK_POINTER,
            format!("VMCS link pointer {link:#x} is neither all ones nor a 4-KiB aligned address"),
            &[Field::VmcsLinkPointer],
        );
    }
}

/// With EPT and PAE paging, VM entry loads the PDPTEs from the VMCS and checks their reserved
/// bits: 2:1, 8:5 and those beyond the physical-address width (SDM Vol. 3A 4.4.1).
fn pdptes(c: &mut Ctx) {
    if !c.proc2.contains(SecondaryProcBased::ENABLE_EPT) || c.ia32e_guest() {
        return;
    }
    if c.read(Field::GuestCr0) & CR0_PG == 0 || c.read(Field::GuestCr4) & CR4_PAE == 0 {
        return;
    }
    for (i, f) in [
        Field::GuestPdpte0,
        Field::GuestPdpte1,
        Field::GuestPdpte2,
        Field::GuestPdpte3,
    ]
    .into_iter()
    .enumerate()
    {
        let e = c.read(f);
        if e & 1 != 0 && (e & 0b1_1110_0110 != 0 || !c.phys_ok(e & !0xfff)) {
            c.fail(
                GUEST_PDPTE,
                format!("PDPTE{i} {e:#x} is present with reserved bits set"),
                &[f],
            );
        }
    }
}
