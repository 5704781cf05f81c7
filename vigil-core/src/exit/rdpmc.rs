//! RDPMC, when the user traps it. Performance counters are not switched between guest and host,
//! so the host's counters are the guest's: the instruction is executed on the guest's behalf,
//! after the checks the processor makes (SDM Vol. 2B RDPMC): #GP when CPL > 0 and CR4.PCE is
//! clear, and #GP for a counter the processor does not have.

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::{Host, Vcpu};
use x86_arch::event::Event;
use x86_arch::regs::CR4_PCE;

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>) -> Action {
    if cpu.vcpu.cpl() != 0 && cpu.vcpu.cr4() & CR4_PCE == 0 {
        return Action::Inject(Event::GP0);
    }
    let counter = cpu.vcpu.gpr(1) as u32;
    let value = cpu.vcpu.host().rdpmc(counter);
    if cpu.config().log_exits {
        log::info!(
            "rdpmc {counter:#x} -> {value:x?} (rip {:#x})",
            cpu.vcpu.rip()
        );
    }
    match value {
        Some(v) => {
            cpu.set_edx_eax(v);
            Action::Advance
        }
        None => Action::Inject(Event::GP0),
    }
}
