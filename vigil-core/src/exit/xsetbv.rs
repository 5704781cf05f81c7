//! XSETBV (it always exits under VMX). XCR0 is not switched between guest and host, so the host
//! executes the guest's XSETBV itself. It must fault exactly where the guest's would (SDM Vol.
//! 2D XSETBV): #UD without CR4.OSXSAVE, #GP for CPL > 0, an XCR other than 0, or an XCR0 value
//! the processor does not support. The host's own XSETBV is guarded so a value the checks miss
//! still turns into #GP for the guest rather than a fault in Vigil.

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::{Host, Vcpu};
use x86_arch::event::Event;
use x86_arch::regs::CR4_OSXSAVE;

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>) -> Action {
    if cpu.vcpu.cr4() & CR4_OSXSAVE == 0 {
        return Action::Inject(Event::UD);
    }
    let xcr = cpu.vcpu.gpr(1) as u32;
    let value = cpu.edx_eax();
    // x87 state (bit 0) must stay set, and AVX (bit 2) needs SSE (bit 1).
    let consistent = value & 1 != 0 && (value & 0b100 == 0 || value & 0b10 != 0);
    if cpu.vcpu.cpl() != 0 || xcr != 0 || !consistent || !cpu.vcpu.host().xsetbv(xcr, value) {
        return Action::Inject(Event::GP0);
    }
    if cpu.config().log_exits {
        log::info!("xsetbv xcr{xcr} <- {value:#x}");
    }
    Action::Advance
}
