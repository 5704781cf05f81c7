//! The guest's paging registers as a VMCS holds them after a VM exit, for the guest page-table
//! walker of `x86-arch` (which knows nothing of VMX).

use crate::vmcs::{Field, VmcsAccess};
use x86_arch::paging::{self, Access, GuestTranslation, PageFault, PagingRegs, PhysRead};

/// The guest's paging registers (EFER only if the exit saves it). `phys_addr_width` is 52, the
/// architectural maximum. CR0 and CR4 are the real registers, not the guest's read shadows.
pub fn regs_from_vmcs(vmcs: &dyn VmcsAccess) -> PagingRegs {
    PagingRegs {
        cr0: vmcs.read(Field::GuestCr0),
        cr3: vmcs.read(Field::GuestCr3),
        cr4: vmcs.read(Field::GuestCr4),
        efer: vmcs.read(Field::GuestIa32Efer),
        phys_addr_width: 52,
    }
}

/// Translates `gva` with the guest's registers from the VMCS.
pub fn translate_vmcs(
    mem: &dyn PhysRead,
    vmcs: &dyn VmcsAccess,
    gva: u64,
    access: Access,
) -> Result<GuestTranslation, PageFault> {
    paging::translate(mem, &regs_from_vmcs(vmcs), gva, access)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::*;
    use std::collections::BTreeMap;

    #[test]
    fn from_vmcs_reads_guest_registers() {
        // A 4-level hierarchy mapping 0xffff_ff80_0040_0000 to 0xa000.
        let gva: u64 = 0xffff_ff80_0040_0000;
        let idx = |level: u32| (gva >> (12 + 9 * (level - 1))) & 0x1ff;
        let mut mem = BTreeMap::new();
        mem.insert(0x1000 + idx(4) * 8, 0x2000 | 3);
        mem.insert(0x2000 + idx(3) * 8, 0x3000 | 3);
        mem.insert(0x3000 + idx(2) * 8, 0x4000 | 3);
        mem.insert(0x4000 + idx(1) * 8, 0xa000 | 3);
        let read = |gpa: u64| Some(mem.get(&gpa).copied().unwrap_or(0));
        let mut v = crate::vmcs::FakeVmcs::new();
        v.set(Field::GuestCr0, CR0_PG | CR0_PE | CR0_WP)
            .set(Field::GuestCr4, CR4_PAE)
            .set(Field::GuestCr3, 0x1000);
        v.set(Field::GuestIa32Efer, EFER_LME | EFER_LMA);
        let t = translate_vmcs(&read, &v, gva, Access::READ).unwrap();
        assert_eq!(t.gpa, 0xa000);
    }
}
