//! INIT signal. In guest operation INIT is blocked and exits instead (SDM Vol. 3C 26.2; APM Vol.
//! 2 15.13.3 with INIT interception), so the processor does none of what INIT does: the
//! start-up protocol (`crate::smp::startup`) does it. An application vCPU that runs goes back
//! to the INIT state and waits for a start-up IPI; one that waits already stays so. On the boot
//! vCPU an INIT means the guest asked for a reset, which Vigil does not emulate: it ends the
//! run with a report.
//!
//! Nothing here logs: the guest's start-up IPI follows its INIT closely (Linux sends it right
//! after the INIT de-assert), and a SIPI that arrives before this vCPU waits again is lost.

use super::{Action, Stop};
use crate::cpu::Cpu;
use crate::smp::startup::{self, Effect, Signal};
use crate::vcpu::Vcpu;

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>) -> Action {
    let (state, effect) = startup::next(cpu.is_bsp(), cpu.startup, Signal::Init);
    cpu.startup = state;
    match effect {
        Effect::Init => {
            startup::enter_init_state(cpu);
            Action::Resume
        }
        Effect::Reset => {
            cpu.vcpu
                .report("INIT signal to the boot vCPU (the guest asked for a reset)");
            Action::Stop(Stop::Failed("guest reset (INIT) is not supported"))
        }
        Effect::None | Effect::Start(_) => Action::Resume,
    }
}
