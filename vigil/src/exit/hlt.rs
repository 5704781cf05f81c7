//! HLT (exit reason 12), when the user traps it. Emulated by putting the vCPU in the HLT
//! activity state (SDM Vol. 3C 25.4.2): the processor then waits for the same events that end
//! a real HLT, with no further exit.

use super::Action;
use crate::vmm::Vcpu;
use vmx::vmcs::{Field, VmcsAccess};

const ACTIVITY_HLT: u64 = 1;

pub fn handle(vcpu: &mut Vcpu) -> Action {
    if vcpu.config.log_exits {
        log::info!("hlt (rip {:#x})", vcpu.rip());
    }
    vcpu.vmcs.write(Field::GuestActivityState, ACTIVITY_HLT);
    Action::Advance
}
