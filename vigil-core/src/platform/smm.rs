//! System management mode. An SMI takes the processor out of VMX into SMM, where the handler at
//! SMBASE + 0x8000 runs with all of memory; only the firmware may own that code. The BIOS leaves
//! SMRAM unlocked (i440FX register 0x72, D_LCK clear): a guest could open it (D_OPEN), plant a
//! handler at 0xA8000 and raise an SMI.
//!
//! Before the guest runs Vigil sets D_LCK (with D_OPEN clear and G_SMRAME set): from then on the
//! SMM range at 0xA0000-0xBFFFF is DRAM only in SMM, and D_OPEN and D_LCK are read-only until a
//! power-on reset (Intel 290549 3.3.21). Register 0x72 (and the i440BX's ESMRAMC) is also
//! Vigil's in configuration space (`pci.rs`): a write would still clear G_SMRAME, which sends
//! the SMM range to the PCI bus — to VGA memory the guest writes. The guest reads the register
//! as it is: locked, as firmware that locks SMRAM leaves it.
//!
//! SMIs themselves: the APM control port, which raises them on Intel chipsets, is Vigil's
//! (`acpi.rs`). An SMI IPI from the guest's local APIC in xAPIC mode cannot be intercepted
//! without trapping every APIC register write (docs/security.md): it runs the firmware's
//! handler in locked SMRAM. In x2APIC mode the ICR is an MSR, and Vigil drops SMI IPIs
//! (`exit/msr.rs`).

use super::pci::{Chip, ConfigSpace, Function, SMRAM, SMRAM_D_LCK, SMRAM_D_OPEN, SMRAM_G_SMRAME};

/// Locks SMRAM on the host bridges Vigil knows; returns whether it is locked.
pub fn lock_smram<C: ConfigSpace>(c: &mut C, functions: &[Function]) -> bool {
    let Some(host) = functions
        .iter()
        .find(|f| matches!(f.chip, Chip::I440fx | Chip::I440bx))
    else {
        log::warn!("no host bridge Vigil knows: SMRAM is left as the firmware set it");
        return false;
    };
    let old = c.config_read(host.bdf, SMRAM, 1);
    let new = (old & !SMRAM_D_OPEN) | SMRAM_D_LCK | SMRAM_G_SMRAME;
    c.config_write(host.bdf, SMRAM, 1, new);
    let now = c.config_read(host.bdf, SMRAM, 1);
    let locked =
        now & (SMRAM_D_LCK | SMRAM_D_OPEN | SMRAM_G_SMRAME) == SMRAM_D_LCK | SMRAM_G_SMRAME;
    if locked {
        log::info!(
            "SMRAM locked ({} register {SMRAM:#x}: {old:#x} -> {now:#x})",
            host.bdf
        );
    } else {
        log::warn!(
            "SMRAM did not lock ({} register {SMRAM:#x}: {old:#x} -> {now:#x})",
            host.bdf
        );
    }
    locked
}
