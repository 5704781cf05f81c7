//! INIT signal. In guest operation INIT is blocked and exits instead (SDM Vol. 3C 26.2; APM Vol.
//! 2 15.13.3 with INIT interception). On the boot vCPU an INIT means the guest asked for a reset,
//! which Vigil does not emulate: it ends the run with a report.

use super::{Action, Stop};
use crate::cpu::Cpu;
use crate::vcpu::Vcpu;

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>) -> Action {
    cpu.vcpu.report("INIT signal (the guest asked for a reset)");
    Action::Stop(Stop::Failed("guest reset (INIT) is not supported"))
}
