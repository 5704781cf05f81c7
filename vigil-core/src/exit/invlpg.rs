//! INVLPG, when the user traps it (SDM Vol. 3C 28.2.1: the exit gives the linear address). The
//! guest's cached translation of that one address is dropped, which is what INVLPG does on bare
//! metal; a backend that cannot drop a single address drops more.

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::{Flush, Vcpu};

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, linear: u64) -> Action {
    if cpu.config().log_exits {
        log::info!("invlpg {linear:#x} (rip {:#x})", cpu.vcpu.rip());
    }
    cpu.vcpu.flush(Flush::Address(linear));
    Action::Advance
}
