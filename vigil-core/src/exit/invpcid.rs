//! INVPCID, which exits with INVLPG exiting when the guest may use it (SDM Vol. 3C 26.1.3,
//! "INVLPG exiting" and "enable INVPCID"). Emulated with the processor's checks (SDM Vol. 2B
//! INVPCID): #GP at CPL > 0, for a type above 3, for reserved descriptor bits, for a non-zero
//! PCID without CR4.PCIDE, and for a non-canonical address (type 0); the descriptor is read
//! through the guest's page tables (#PF as a load would). The translations to drop then go as
//! a flush request: one address (type 0), or the whole context (types 1-3), which drops at
//! least what the instruction drops.

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::{Flush, Vcpu};
use x86_arch::event::Event;
use x86_arch::regs::{CR4_LA57, CR4_PCIDE};

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, kind_gpr: u8, descriptor: u64) -> Action {
    let vcpu = &mut cpu.vcpu;
    if vcpu.cpl() != 0 {
        return Action::Inject(Event::GP0);
    }
    let long = vcpu.long_mode_64();
    let kind = vcpu.gpr(kind_gpr) & if long { u64::MAX } else { 0xFFFF_FFFF };
    if kind > 3 {
        return Action::Inject(Event::GP0);
    }
    let mut bytes = [0u8; 16];
    if let Err(fault) = super::read_linear(vcpu, descriptor, &mut bytes) {
        return Action::Inject(fault);
    }
    let low = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
    let address = u64::from_le_bytes(bytes[8..].try_into().unwrap_or_default());
    let pcid = low & 0xFFF;
    let pcide = vcpu.cr4() & CR4_PCIDE != 0;
    if low >> 12 != 0 || (pcid != 0 && !pcide && kind <= 1) {
        return Action::Inject(Event::GP0);
    }
    let width = if vcpu.cr4() & CR4_LA57 != 0 { 57 } else { 48 };
    let flush = match kind {
        0 if !x86_arch::is_canonical(address, width) => return Action::Inject(Event::GP0),
        0 => Flush::Address(address),
        2 => Flush::All,
        _ => Flush::NonGlobal,
    };
    if cpu.config().log_exits {
        log::info!("invpcid type {kind} pcid {pcid:#x} address {address:#x}");
    }
    cpu.vcpu.flush(flush);
    Action::Advance
}
