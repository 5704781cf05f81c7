//! Control-register accesses (exit reason 28). They exit when the guest writes a CR0/CR4 bit
//! that Vigil owns through the guest/host masks (bits VMX forces, such as CR0.NE and CR4.VMXE),
//! or on CR3 accesses the user traps (SDM Vol. 3C 26.1.3).
//!
//! Writes are emulated as the processor would perform them: the same #GP checks
//! (SDM Vol. 3A 2.5 and Vol. 2A MOV CR), the guest's value in the read shadow, the value VMX
//! requires in the real register, and the side effects a real write has: entering or leaving
//! IA-32e mode on CR0.PG, loading the PAE PDPTEs, and flushing the guest's TLB entries.

use super::{Action, Fault};
use crate::vmm::Vcpu;
use vmx::exit::{CrAccess, CrAccessType};
use vmx::regs::*;

pub fn handle(vcpu: &mut Vcpu, q: CrAccess) -> Action {
    let action = match q.access {
        CrAccessType::MovToCr(gpr) => {
            let mut value = vcpu.gpr(gpr.index());
            if !vcpu.long_mode_64() {
                value &= 0xFFFF_FFFF;
            }
            match q.cr {
                0 => write_cr0(vcpu, value),
                3 => write_cr3(vcpu, value),
                4 => write_cr4(vcpu, value),
                _ => Err(Fault::UD),
            }
        }
        CrAccessType::MovFromCr(gpr) => match q.cr {
            3 => {
                let cr3 = vcpu.guest_cr3();
                vcpu.set_gpr(gpr.index(), cr3);
                Ok(())
            }
            _ => Err(Fault::UD),
        },
        CrAccessType::Clts => write_cr0(vcpu, vcpu.guest_cr0() & !CR0_TS),
        // LMSW loads CR0[3:0] but can never clear PE (SDM Vol. 2A LMSW).
        CrAccessType::Lmsw { source, .. } => {
            let cr0 = vcpu.guest_cr0();
            let new = (cr0 & !0xE) | (source as u64 & 0xF) | (cr0 & CR0_PE);
            write_cr0(vcpu, new)
        }
    };
    if vcpu.config.log_exits {
        log::info!("{q} (rip {:#x}) -> {action:?}", vcpu.rip());
    }
    match action {
        Ok(()) => Action::Advance,
        Err(f) => Action::Inject(f),
    }
}

fn write_cr0(vcpu: &mut Vcpu, value: u64) -> Result<(), Fault> {
    let old = vcpu.guest_cr0();
    let efer = vcpu.efer();
    // Reserved bits, PG without PE, NW without CD, and PG with LME but no PAE (SDM Vol. 3A
    // 2.5, 10.8.5) all fault.
    if value >> 32 != 0
        || (value & CR0_PG != 0 && value & CR0_PE == 0)
        || (value & CR0_NW != 0 && value & CR0_CD == 0)
        || (value & CR0_PG != 0
            && old & CR0_PG == 0
            && efer & EFER_LME != 0
            && vcpu.guest_cr4() & CR4_PAE == 0)
    {
        return Err(Fault::GP0);
    }
    vcpu.set_guest_cr0(value);
    let paging_changed = (old ^ value) & CR0_PG != 0;
    if paging_changed && efer & EFER_LME != 0 {
        vcpu.set_long_mode_active(value & CR0_PG != 0);
    }
    if paging_changed || (old ^ value) & (CR0_WP | CR0_CD) != 0 {
        vcpu.flush_guest_tlb();
    }
    vcpu.load_pdptes_if_pae();
    Ok(())
}

fn write_cr3(vcpu: &mut Vcpu, value: u64) -> Result<(), Fault> {
    // With CR4.PCIDE, bit 63 asks to keep the TLB entries and is not part of CR3.
    let pcide = vcpu.guest_cr4() & CR4_PCIDE != 0;
    let no_flush = pcide && value & (1 << 63) != 0;
    let value = if pcide { value & !(1 << 63) } else { value };
    if value >> vcpu.max_phys_bits() != 0 {
        return Err(Fault::GP0);
    }
    vcpu.set_guest_cr3(value);
    if !no_flush {
        vcpu.flush_guest_tlb();
    }
    vcpu.load_pdptes_if_pae();
    Ok(())
}

fn write_cr4(vcpu: &mut Vcpu, value: u64) -> Result<(), Fault> {
    let old = vcpu.guest_cr4();
    // Bits the processor does not support, and VMXE (VMX is hidden from the guest), fault;
    // so does clearing PAE in IA-32e mode (SDM Vol. 3A 2.5).
    if value & !vcpu.guest_cr4_supported() != 0
        || (vcpu.efer() & EFER_LMA != 0 && value & CR4_PAE == 0)
    {
        return Err(Fault::GP0);
    }
    vcpu.set_guest_cr4(value);
    if (old ^ value) & (CR4_PGE | CR4_PAE | CR4_PSE | CR4_PCIDE | CR4_SMEP) != 0 {
        vcpu.flush_guest_tlb();
    }
    vcpu.load_pdptes_if_pae();
    Ok(())
}
