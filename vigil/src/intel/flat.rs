//! Guests on a processor without unrestricted guest. There VM entry requires CR0.PE = 1 and
//! CR0.PG = 1 (SDM Vol. 3C 27.3.1.1: IA32_VMX_CR0_FIXED0 forces them, only "unrestricted guest"
//! lifts it), yet both boot protocols start the guest in protected mode with paging *off*, and
//! guests turn paging off and on again (leaving long mode, the task-switch case).
//!
//! While the guest's paging is off it runs on Vigil's identity page tables: one page directory
//! of 4 MiB pages covering the 4 GiB a 32-bit address reaches (32-bit paging with CR4.PSE, SDM
//! Vol. 3A 4.3), in a page of guest RAM reserved in the guest's memory map. What the guest sees
//! stays its own:
//!
//! - CR0.PG and PE are pinned (guest/host mask), so the guest reads its own value from the read
//!   shadow and every write to them exits and is emulated (`exit/cr_access.rs`).
//! - CR3: the guest's value is kept here; CR3 loads and stores exit while its paging is off.
//! - CR4's paging bits ([`CR4_PAGING`]) are in the guest/host mask: the guest reads and writes
//!   its own, the processor has them off (and PSE on) until the guest turns paging on.
//! - EFER: the guest's LME is kept here (with CR0.PG = 1 in the processor, LME would mean IA-32e
//!   mode); RDMSR and WRMSR of EFER exit ([`EFER_RULE`]).
//!
//! When the guest sets CR0.PG, its CR3, CR4 and EFER go to the processor as they are (long mode
//! included); when it clears it, back to the identity tables. Real mode (CR0.PE = 0) cannot be
//! run at all without unrestricted guest: a guest that enters it stops with a report.

use super::vcpu::VmxVcpu;
use crate::guest_mem;
use alloc::format;
use alloc::string::String;
use vigil::loader::GuestMemory;
use vigil::memmap::{Kind, MemoryMap};
use vigil_core::owners::{MsrHandler, MsrRule, Owner};
use vigil_core::vcpu::msr::IA32_EFER;
use vmx::caps::{PrimaryProcBased, VmxCaps};
use vmx::vmcs::{Field, VmcsAccess};
use x86_arch::regs::*;

/// CR4 bits that change how the processor translates addresses (SDM Vol. 3A 4.1.3).
pub const CR4_PAGING: u64 =
    CR4_PSE | CR4_PAE | CR4_PGE | CR4_PCIDE | CR4_SMEP | CR4_SMAP | CR4_PKE | CR4_LA57 | CR4_PKS;

/// EFER's entry in the ownership table when the processor lacks unrestricted guest.
pub const EFER_RULE: MsrRule = MsrRule {
    msrs: IA32_EFER..=IA32_EFER,
    owner: Owner::Vigil,
    read: Some(MsrHandler::Vcpu),
    write: Some(MsrHandler::Vcpu),
    why: "no unrestricted guest: the guest's EFER.LME waits in Vigil while its paging is off",
};

/// The guest's paging state that the processor does not hold while the guest's paging is off.
#[derive(Clone, Copy, Debug)]
pub struct Flat {
    /// Guest-physical address of the identity page directory.
    pub table: u64,
    /// The guest's CR3 and EFER while its paging is off.
    pub cr3: u64,
    pub efer: u64,
    /// CR3 load and store exiting as the configuration asks for them (with paging on).
    pub cr3_exits: u32,
}

/// Reserves a page of guest RAM for the identity page directory and fills it, if the processor
/// lacks unrestricted guest: the highest RAM page below 4 GiB clear of `avoid` (the boot
/// information and modules), marked reserved in the guest's memory map before anything else is
/// placed in it. Its entries come with the accessed and dirty bits set, so the processor never
/// writes the page.
pub fn reserve(
    map: &mut MemoryMap,
    caps: &VmxCaps,
    avoid: &[(u64, u64)],
) -> Result<Option<u64>, String> {
    if caps.has_unrestricted_guest() {
        return Ok(None);
    }
    let at = map
        .find_top(4096, 4096, 1 << 32, avoid)
        .ok_or("no RAM page below 4 GiB for the guest's identity page tables")?;
    map.set(at, at + 4096, Kind::Reserved)
        .map_err(|e| format!("reserving the identity page tables: {e:?}"))?;
    let mut table = [0u8; 4096];
    for (i, pde) in table.chunks_exact_mut(4).enumerate() {
        // Present, writable, accessed, dirty, 4 MiB page (SDM Vol. 3A 4.3, Table 4-4).
        pde.copy_from_slice(&(((i as u32) << 22) | 0xE3).to_le_bytes());
    }
    guest_mem::Loader
        .write(at, &table)
        .map_err(|e| format!("writing the identity page tables: {e}"))?;
    log::info!(
        "no unrestricted guest: the guest runs on identity page tables at {at:#x} (reserved in its memory map) while its paging is off"
    );
    Ok(Some(at))
}

impl VmxVcpu {
    /// Whether the guest's paging is off on a processor without unrestricted guest.
    pub(super) fn paging_shadowed(&self) -> bool {
        self.flat.is_some() && self.vmcs.read(Field::Cr0ReadShadow) & CR0_PG == 0
    }

    /// CR4 for the processor: the guest's, or with its paging bits off and PSE on while its
    /// paging is shadowed.
    pub(super) fn real_cr4(&self, guest: u64) -> u64 {
        let value = if self.paging_shadowed() {
            (guest & !CR4_PAGING) | CR4_PSE
        } else {
            guest
        };
        (value | self.caps.cr4_fixed0) & self.caps.cr4_fixed1
    }

    /// EFER for the processor: without LME and LMA while the guest's paging is shadowed.
    pub(super) fn real_efer(&self, guest: u64) -> u64 {
        if self.paging_shadowed() {
            guest & !(EFER_LME | EFER_LMA)
        } else {
            guest
        }
    }

    /// The guest's CR0.PG changed (the read shadow already holds the new value): hand the
    /// processor the guest's own paging, or the identity tables.
    pub(crate) fn paging_changed(&mut self) {
        let Some(mut flat) = self.flat else {
            return;
        };
        let guest_cr4 = self.vmcs.read(Field::Cr4ReadShadow);
        let exiting = (PrimaryProcBased::CR3_LOAD_EXITING | PrimaryProcBased::CR3_STORE_EXITING)
            .bits() as u64;
        let primary = self.vmcs.read(Field::PrimaryProcBasedControls) & !exiting;
        if self.paging_shadowed() {
            flat.cr3 = self.vmcs.read(Field::GuestCr3);
            self.vmcs.write(Field::GuestCr3, flat.table);
            self.vmcs
                .write(Field::PrimaryProcBasedControls, primary | exiting);
        } else {
            self.vmcs.write(Field::GuestCr3, flat.cr3);
            self.vmcs.write(
                Field::PrimaryProcBasedControls,
                primary | flat.cr3_exits as u64,
            );
        }
        self.flat = Some(flat);
        self.vmcs.write(Field::GuestCr4, self.real_cr4(guest_cr4));
        self.store_efer(flat.efer);
    }

    /// Writes the guest's EFER: the processor's copy and the IA-32e mode entry control follow
    /// what the processor may hold (SDM Vol. 3C 27.3.1.1).
    pub(super) fn store_efer(&mut self, guest: u64) {
        if let Some(flat) = self.flat.as_mut() {
            flat.efer = guest;
        }
        let real = self.real_efer(guest);
        self.vmcs.write(Field::GuestIa32Efer, real);
        let ia32e = vmx::caps::EntryControls::IA32E_MODE_GUEST.bits() as u64;
        let entry = self.vmcs.read(Field::EntryControls);
        let new = if real & EFER_LMA != 0 {
            entry | ia32e
        } else {
            entry & !ia32e
        };
        if new != entry {
            self.vmcs.write(Field::EntryControls, new);
        }
    }
}
