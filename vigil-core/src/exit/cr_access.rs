//! Control-register accesses. They exit when the guest writes a CR0/CR4 bit that the backend
//! pins (VMX forces CR0.NE and CR4.VMXE, SDM Vol. 3C 26.3 and 25.6.6), a bit the user traps, or
//! on CR3 accesses the user traps.
//!
//! Writes are emulated as the processor performs them: the same #GP checks (SDM Vol. 3A 2.5 and
//! Vol. 2B MOV CR), and the side effects a real write has: entering or leaving IA-32e mode on
//! CR0.PG, loading and checking the PAE page-directory-pointer entries exactly when the
//! processor does (SDM Vol. 3A 4.4.1: a reserved bit in a present PDPTE makes the MOV fault and
//! leaves every register as it was), and flushing the guest's TLB entries (Vol. 3A 4.10.4.1).

use super::{Action, CrAccess, CrOp};
use crate::cpu::Cpu;
use crate::vcpu::{Flush, Vcpu};
use x86_arch::event::Event;
use x86_arch::regs::*;

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, access: CrAccess) -> Action {
    let vcpu = &mut cpu.vcpu;
    let result = match access.op {
        CrOp::Write(gpr) => {
            let mut value = vcpu.gpr(gpr);
            if !vcpu.long_mode_64() {
                value &= 0xFFFF_FFFF;
            }
            match access.cr {
                0 => write_cr0(vcpu, value),
                3 => write_cr3(vcpu, value),
                4 => write_cr4(vcpu, value),
                _ => Err(Event::UD),
            }
        }
        CrOp::Read(gpr) => match access.cr {
            3 => {
                let cr3 = vcpu.cr3();
                vcpu.set_gpr(gpr, cr3);
                Ok(())
            }
            _ => Err(Event::UD),
        },
        CrOp::Clts => {
            let cr0 = vcpu.cr0();
            write_cr0(vcpu, cr0 & !CR0_TS)
        }
        // LMSW loads CR0[3:0] but can never clear PE (SDM Vol. 2A LMSW).
        CrOp::Lmsw(source) => {
            let cr0 = vcpu.cr0();
            let new = (cr0 & !0xE) | (source as u64 & 0xF) | (cr0 & CR0_PE);
            write_cr0(vcpu, new)
        }
    };
    if cpu.config().log_exits {
        log::info!("{access:?} (rip {:#x}) -> {result:?}", cpu.vcpu.rip());
    }
    match result {
        Ok(()) => Action::Advance,
        Err(e) => Action::Inject(e),
    }
}

/// Whether CR0, CR4 and EFER select PAE paging (SDM Vol. 3A 4.1.1).
pub(crate) fn pae_paging(cr0: u64, cr4: u64, efer: u64) -> bool {
    cr0 & CR0_PG != 0 && cr4 & CR4_PAE != 0 && efer & EFER_LMA == 0
}

/// The four PDPTEs of the table CR3 points to, as a MOV that loads them reads them: #GP if a
/// present entry sets a reserved bit (bits 2:1, 8:5 and those at and above MAXPHYADDR, SDM
/// Vol. 3A 4.4.1). An entry outside guest RAM reads as not present.
pub(crate) fn load_pdptes<V: Vcpu>(vcpu: &V, cr3: u64) -> Result<[u64; 4], Event> {
    let base = cr3 & 0xFFFF_FFE0;
    let reserved = 0x1E6 | !((1u64 << vcpu.phys_addr_bits()) - 1);
    let mut entries = [0u64; 4];
    for (i, e) in entries.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        if vcpu.read_phys(base + 8 * i as u64, &mut b) {
            *e = u64::from_le_bytes(b);
        }
        if *e & 1 != 0 && *e & reserved != 0 {
            return Err(Event::GP0);
        }
    }
    Ok(entries)
}

fn write_cr0<V: Vcpu>(vcpu: &mut V, value: u64) -> Result<(), Event> {
    let old = vcpu.cr0();
    let efer = vcpu.efer();
    let cr4 = vcpu.cr4();
    let paging_changed = (old ^ value) & CR0_PG != 0;
    // Reserved bits, PG without PE, NW without CD, PG with LME but no PAE, and turning paging off
    // in 64-bit mode all fault (SDM Vol. 3A 2.5, 10.8.5; Vol. 2B MOV CR).
    if value >> 32 != 0
        || (value & CR0_PG != 0 && value & CR0_PE == 0)
        || (value & CR0_NW != 0 && value & CR0_CD == 0)
        || (value & CR0_PG != 0 && old & CR0_PG == 0 && efer & EFER_LME != 0 && cr4 & CR4_PAE == 0)
        || (paging_changed && value & CR0_PG == 0 && vcpu.long_mode_64())
    {
        return Err(Event::GP0);
    }
    // IA-32e mode follows CR0.PG while EFER.LME is set (SDM Vol. 3A 10.8.5).
    let new_efer = if paging_changed && efer & EFER_LME != 0 {
        if value & CR0_PG != 0 {
            efer | EFER_LMA
        } else {
            efer & !EFER_LMA
        }
    } else {
        efer
    };
    // A MOV to CR0 that changes PG, CD or NW loads the PDPTEs if the result is PAE paging.
    let pdptes =
        if (old ^ value) & (CR0_PG | CR0_CD | CR0_NW) != 0 && pae_paging(value, cr4, new_efer) {
            Some(load_pdptes(vcpu, vcpu.cr3())?)
        } else {
            None
        };
    vcpu.set_cr0(value);
    if new_efer != efer {
        vcpu.set_efer(new_efer);
    }
    if let Some(p) = pdptes {
        vcpu.set_pdptes(p);
    }
    if paging_changed || (old ^ value) & (CR0_WP | CR0_CD) != 0 {
        vcpu.flush(Flush::All);
    }
    Ok(())
}

fn write_cr3<V: Vcpu>(vcpu: &mut V, value: u64) -> Result<(), Event> {
    // With CR4.PCIDE, bit 63 asks to keep the TLB entries and is not part of CR3.
    let cr4 = vcpu.cr4();
    let pcide = cr4 & CR4_PCIDE != 0;
    let no_flush = pcide && value & (1 << 63) != 0;
    let value = if pcide { value & !(1 << 63) } else { value };
    if value >> vcpu.phys_addr_bits() != 0 {
        return Err(Event::GP0);
    }
    let pdptes = if pae_paging(vcpu.cr0(), cr4, vcpu.efer()) {
        Some(load_pdptes(vcpu, value)?)
    } else {
        None
    };
    vcpu.set_cr3(value);
    if let Some(p) = pdptes {
        vcpu.set_pdptes(p);
    }
    if !no_flush {
        vcpu.flush(Flush::NonGlobal);
    }
    Ok(())
}

fn write_cr4<V: Vcpu>(vcpu: &mut V, value: u64) -> Result<(), Event> {
    let old = vcpu.cr4();
    let efer = vcpu.efer();
    // Bits the processor does not support, and the features hidden from the guest (VMXE, SMXE),
    // fault; so do clearing PAE in IA-32e mode, and setting PCIDE outside it or with CR3[11:0]
    // non-zero (SDM Vol. 3A 2.5; Vol. 2B MOV CR).
    let setting_pcide = value & CR4_PCIDE != 0 && old & CR4_PCIDE == 0;
    if value & !vcpu.cr4_allowed() != 0
        || (efer & EFER_LMA != 0 && value & CR4_PAE == 0)
        || (setting_pcide && (efer & EFER_LMA == 0 || vcpu.cr3() & 0xFFF != 0))
    {
        return Err(Event::GP0);
    }
    // A MOV to CR4 that changes PAE, PGE, PSE or SMEP loads the PDPTEs if the result is PAE
    // paging (SDM Vol. 3A 4.4.1).
    let changed = old ^ value;
    let pdptes = if changed & (CR4_PAE | CR4_PGE | CR4_PSE | CR4_SMEP) != 0
        && pae_paging(vcpu.cr0(), value, efer)
    {
        Some(load_pdptes(vcpu, vcpu.cr3())?)
    } else {
        None
    };
    vcpu.set_cr4(value);
    if let Some(p) = pdptes {
        vcpu.set_pdptes(p);
    }
    if changed & (CR4_PGE | CR4_PAE | CR4_PSE | CR4_PCIDE | CR4_SMEP) != 0 {
        vcpu.flush(Flush::All);
    }
    Ok(())
}
