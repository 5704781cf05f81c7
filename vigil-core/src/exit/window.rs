//! Interrupt and NMI windows: the first moment the guest can take an event Vigil holds for it
//! (an external interrupt or NMI whose delivery an exit interrupted while another event took
//! that entry; `complete`). The window exit delivers it (VMX: interrupt-window and NMI-window
//! exiting, SDM Vol. 3C 26.7.5-6; SVM: the virtual interrupt intercept).

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::{Vcpu, Window};
use x86_arch::event::Event;

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, kind: Window) -> Action {
    cpu.vcpu.request_window(kind, false);
    let event = match kind {
        Window::Interrupt => cpu.events.pending_interrupt.take(),
        Window::Nmi => core::mem::take(&mut cpu.events.pending_nmi).then(Event::nmi),
    };
    match event {
        Some(e) => Action::Inject(e),
        None => Action::Resume,
    }
}
