//! RDPMC (exit reason 15), when the user traps it. Performance counters are not switched by
//! VMX, so the host's counters are the guest's: the instruction is executed on the guest's
//! behalf, after the same checks the processor makes (SDM Vol. 2B RDPMC): #GP when CPL > 0 and
//! CR4.PCE is clear, and #GP for a counter the processor does not have.

use super::{Action, Fault};
use crate::arch::safe::rdpmc_safe;
use crate::vmm::Vcpu;
use vmx::regs::CR4_PCE;

pub fn handle(vcpu: &mut Vcpu) -> Action {
    if vcpu.cpl() != 0 && vcpu.guest_cr4() & CR4_PCE == 0 {
        return Action::Inject(Fault::GP0);
    }
    let counter = vcpu.regs.rcx as u32;
    let value = rdpmc_safe(counter);
    if vcpu.config.log_exits {
        log::info!("rdpmc {counter:#x} -> {value:x?} (rip {:#x})", vcpu.rip());
    }
    match value {
        Some(v) => {
            vcpu.set_edx_eax(v);
            Action::Advance
        }
        None => Action::Inject(Fault::GP0),
    }
}
