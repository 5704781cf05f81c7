//! INVLPG (exit reason 14), when the user traps it. The exit qualification is the linear address
//! (SDM Vol. 3C 28.2.1). The guest's translations are tagged with its VPID, so the emulation
//! invalidates that one address for that VPID (INVVPID type 0), which is what INVLPG does on bare
//! metal; without individual-address support it falls back to the whole context.

use super::Action;
use crate::vmm::Vcpu;

pub fn handle(vcpu: &mut Vcpu, address: u64) -> Action {
    if vcpu.config.log_exits {
        log::info!("invlpg {address:#x} (rip {:#x})", vcpu.rip());
    }
    vcpu.flush_guest_address(address);
    Action::Advance
}
