//! Exceptions the user (or the debugger, for its own #BP and #DB) asked to intercept. Vigil
//! observes them and delivers each one to the guest unchanged, so the guest's own handler runs as
//! on bare metal. The state a real delivery would have changed on the way must be set by hand,
//! because the exit happened before delivery (SDM Vol. 3C 28.1): CR2 for a page fault, DR6 for
//! a debug exception. An exception that arose while another event was being delivered is first
//! combined with it by the double-fault rules (`super::deliver_nested`).

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::Vcpu;
use x86_arch::event::{exception_name, Event, EventKind, DB, PF};
use x86_arch::regs::{DR6_B0_B3, DR6_BD, DR6_BS, DR6_BT, DR6_FIXED1};

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, event: &Event, info: u64) -> Action {
    log::info!(
        "guest exception {} ({}) error code {:x?} at rip {:#x}{}",
        event.vector,
        exception_name(event.vector),
        event.error_code,
        cpu.vcpu.rip(),
        if event.vector == PF {
            alloc::format!(", address {info:#x}")
        } else {
            alloc::string::String::new()
        }
    );
    let event = *event;
    super::deliver_nested(cpu, event.vector, |cpu| deliver(cpu, event, info))
}

/// Delivers the exception as it was, with the state its delivery sets.
fn deliver<V: Vcpu>(cpu: &mut Cpu<V>, event: Event, info: u64) -> Action {
    if event.kind == EventKind::HardwareException {
        match event.vector {
            PF => cpu.vcpu.set_cr2(info),
            DB => {
                // The causes come with the exit (B0-B3, BD, BS). The processor sets them in DR6
                // and may clear B0-B3, but never clears BD, BS or BT (SDM Vol. 3B 18.2.3).
                let dr6 = cpu.vcpu.dr(6);
                let causes = info & (DR6_B0_B3 | DR6_BD | DR6_BS | DR6_BT);
                cpu.vcpu.set_dr(6, (dr6 & !DR6_B0_B3) | causes | DR6_FIXED1);
            }
            _ => {}
        }
    }
    Action::Inject(event)
}
