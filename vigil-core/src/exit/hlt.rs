//! HLT, when the user traps it. Emulated by putting the vCPU in the HLT activity state (SDM Vol.
//! 3C 25.4.2): the processor then waits for the same events that end a real HLT, with no further
//! exit. With RFLAGS.TF set the single-step trap is owed after HLT as after any instruction; the
//! completion raises it as a pending debug exception, which the halted processor takes the way
//! bare metal does (SDM Vol. 3C 27.7.3).

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::{Activity, Vcpu};

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>) -> Action {
    if cpu.config().log_exits {
        log::info!("hlt (rip {:#x})", cpu.vcpu.rip());
    }
    cpu.vcpu.set_activity(Activity::Halt);
    Action::Advance
}
