//! Checks on the host-state area (SDM Vol. 3C 27.2.2 - 27.2.4). A processor reports any of
//! these with VM-instruction error 8.

use super::rules::*;
use super::{pat_is_valid, Ctx};
use crate::caps::{EntryControls, ExitControls};
use crate::regs::{CR0_WP, CR4_CET, CR4_PAE, CR4_PCIDE, EFER_LMA, EFER_LME};
use crate::vmcs::Field;
use alloc::format;

pub(super) fn check(c: &mut Ctx) {
    registers(c);
    selectors(c);
    address_space(c);
}

/// Control registers and MSRs (SDM Vol. 3C 27.2.2).
fn registers(c: &mut Ctx) {
    let caps = *c.caps;
    let cr0 = c.read(Field::HostCr0);
    if caps.fixed_cr0(cr0) != cr0 {
        c.fail(
            HOST_CR0,
            format!(
                "host CR0 {cr0:#x} should be {:#x} (FIXED0 {:#x}, FIXED1 {:#x})",
                caps.fixed_cr0(cr0),
                caps.cr0_fixed0,
                caps.cr0_fixed1
            ),
            &[Field::HostCr0],
        );
    }
    let cr4 = c.read(Field::HostCr4);
    if caps.fixed_cr4(cr4) != cr4 {
        c.fail(
            HOST_CR4,
            format!(
                "host CR4 {cr4:#x} should be {:#x} (FIXED0 {:#x}, FIXED1 {:#x})",
                caps.fixed_cr4(cr4),
                caps.cr4_fixed0,
                caps.cr4_fixed1
            ),
            &[Field::HostCr4],
        );
    }
    let cr3 = c.read(Field::HostCr3);
    if !c.phys_ok(cr3) {
        c.fail(
            HOST_CR3,
            format!("host CR3 {cr3:#x} beyond the physical-address width"),
            &[Field::HostCr3],
        );
    }
    if c.platform.cet && cr4 & CR4_CET != 0 && cr0 & CR0_WP == 0 {
        c.fail(
            HOST_CET_WP,
            "host CR4.CET set with CR0.WP clear".into(),
            &[Field::HostCr0, Field::HostCr4],
        );
    }
    for f in [Field::HostIa32SysenterEsp, Field::HostIa32SysenterEip] {
        let v = c.read(f);
        if !c.canonical(v) {
            c.fail(
                HOST_SYSENTER,
                format!("{} {v:#x} not canonical", f.name()),
                &[f],
            );
        }
    }
    if c.exit.contains(ExitControls::LOAD_IA32_PAT) {
        let pat = c.read(Field::HostIa32Pat);
        if !pat_is_valid(pat) {
            c.fail(
                HOST_PAT,
                format!("host IA32_PAT {pat:#x} holds an invalid memory type"),
                &[Field::HostIa32Pat],
            );
        }
    }
    if c.exit.contains(ExitControls::LOAD_IA32_EFER) {
        let efer = c.read(Field::HostIa32Efer);
        let reserved = efer & !c.platform.efer_supported;
        let lma = efer & EFER_LMA != 0;
        let lme = efer & EFER_LME != 0;
        if reserved != 0 || lma != c.host64() || lme != c.host64() {
            c.fail(
                HOST_EFER,
                format!(
                    "host IA32_EFER {efer:#x}: reserved bits {reserved:#x}, LMA {}, LME {}, host address-space size {}",
                    lma as u8,
                    lme as u8,
                    c.host64() as u8
                ),
                &[Field::HostIa32Efer, Field::ExitControls],
            );
        }
    }
}

/// Selector and base-address fields (SDM Vol. 3C 27.2.3).
fn selectors(c: &mut Ctx) {
    for f in [
        Field::HostEsSelector,
        Field::HostCsSelector,
        Field::HostSsSelector,
        Field::HostDsSelector,
        Field::HostFsSelector,
        Field::HostGsSelector,
        Field::HostTrSelector,
    ] {
        let sel = c.read(f);
        if sel & 7 != 0 {
            c.fail(
                HOST_SELECTOR_RPL_TI,
                format!("{} {sel:#x} has RPL or TI set", f.name()),
                &[f],
            );
        }
    }
    if c.read(Field::HostCsSelector) == 0 {
        c.fail(
            HOST_CS_NULL,
            "host CS selector is null".into(),
            &[Field::HostCsSelector],
        );
    }
    if c.read(Field::HostTrSelector) == 0 {
        c.fail(
            HOST_TR_NULL,
            "host TR selector is null".into(),
            &[Field::HostTrSelector],
        );
    }
    if !c.host64() && c.read(Field::HostSsSelector) == 0 {
        c.fail(
            HOST_SS_NULL,
            "host SS selector is null with a 32-bit host".into(),
            &[Field::HostSsSelector],
        );
    }
    for f in [
        Field::HostFsBase,
        Field::HostGsBase,
        Field::HostGdtrBase,
        Field::HostIdtrBase,
        Field::HostTrBase,
    ] {
        let v = c.read(f);
        if !c.canonical(v) {
            c.fail(
                HOST_BASE_CANONICAL,
                format!("{} {v:#x} not canonical", f.name()),
                &[f],
            );
        }
    }
}

/// Address-space size (SDM Vol. 3C 27.2.4).
fn address_space(c: &mut Ctx) {
    let ia32e_guest = c.entry.contains(EntryControls::IA32E_MODE_GUEST);
    if c.platform.host_long_mode && !c.host64() {
        c.fail(
            HOST_ADDRESS_SPACE,
            "host address-space size clear while the VMM runs in IA-32e mode".into(),
            &[Field::ExitControls],
        );
    }
    if !c.platform.host_long_mode && (c.host64() || ia32e_guest) {
        c.fail(
            HOST_ADDRESS_SPACE,
            "host address-space size or IA-32e mode guest set outside IA-32e mode".into(),
            &[Field::ExitControls, Field::EntryControls],
        );
    }
    let cr4 = c.read(Field::HostCr4);
    let rip = c.read(Field::HostRip);
    if c.host64() {
        if cr4 & CR4_PAE == 0 {
            c.fail(
                HOST_64_PAE,
                "host CR4.PAE clear with a 64-bit host".into(),
                &[Field::HostCr4],
            );
        }
        if !c.canonical(rip) {
            c.fail(
                HOST_RIP,
                format!("host RIP {rip:#x} not canonical"),
                &[Field::HostRip],
            );
        }
    } else {
        if rip >> 32 != 0 {
            c.fail(
                HOST_RIP,
                format!("host RIP {rip:#x} above 4 GiB with a 32-bit host"),
                &[Field::HostRip],
            );
        }
        if cr4 & CR4_PCIDE != 0 {
            c.fail(
                HOST_32_PCIDE,
                "host CR4.PCIDE set with a 32-bit host".into(),
                &[Field::HostCr4],
            );
        }
    }
}
