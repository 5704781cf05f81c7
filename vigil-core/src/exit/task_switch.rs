//! A hardware task switch (a CALL or JMP to a TSS or task gate, IRET with NT set, or a task gate
//! in the IDT; SDM Vol. 3A 9.3). Task switches always exit under VMX (SDM Vol. 3C 26.1.2) and
//! Vigil does not emulate them yet: the run ends with a report naming the switch. 32-bit guests
//! that put #DF or NMI behind task gates meet this.

use super::{Action, Stop, TaskSwitchSource};
use crate::cpu::Cpu;
use crate::vcpu::Vcpu;

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, selector: u16, source: TaskSwitchSource) -> Action {
    let how = match source {
        TaskSwitchSource::Call => "CALL",
        TaskSwitchSource::Iret => "IRET",
        TaskSwitchSource::Jmp => "JMP",
        TaskSwitchSource::Gate => "a task gate in the IDT",
    };
    cpu.events.interrupted = None;
    cpu.vcpu.report(&alloc::format!(
        "hardware task switch to TSS selector {selector:#x} through {how}, which Vigil does not emulate"
    ));
    Action::Stop(Stop::Failed("hardware task switch is not emulated"))
}
