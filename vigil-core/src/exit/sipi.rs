//! A start-up IPI to a vCPU in the wait-for-SIPI state (an application processor the guest has
//! not started yet, or one it sent INIT; SDM Vol. 3C 26.2 and 25.4.2). The start-up protocol
//! (`crate::smp::startup`) decides: a waiting vCPU starts in real mode at vector × 4096, a
//! running one ignores it (the second SIPI of the protocol).

use super::Action;
use crate::cpu::Cpu;
use crate::smp::startup::{self, Effect, Signal};
use crate::vcpu::Vcpu;

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, vector: u8) -> Action {
    let (_, effect) = startup::next(cpu.is_bsp(), cpu.startup, Signal::Sipi(vector));
    if let Effect::Start(vector) = effect {
        startup::start(cpu, vector);
    }
    Action::Resume
}
