//! Triple fault. Real hardware would shut down (and most boards reset); Vigil stops the guest
//! with a full report, since the guest's state at this point is what its developer needs to see.

use super::{Action, Stop};
use crate::cpu::Cpu;
use crate::vcpu::Vcpu;

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>) -> Action {
    cpu.events.interrupted = None;
    cpu.vcpu.report("the guest triple-faulted (shutdown)");
    Action::Stop(Stop::Failed("guest triple fault"))
}
