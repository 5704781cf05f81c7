//! Completing an exit the way the processor would have completed the instruction or event, for
//! every handler alike:
//!
//! - **An emulated instruction retires** ([`skip_instruction`]): RIP moves past it (wrapping as
//!   the code size says), blocking by STI or MOV SS ends with it (SDM Vol. 3C 25.4.2), and if
//!   RFLAGS.TF was set the guest gets the single-step trap it would have had on bare metal (SDM
//!   Vol. 3B 18.3.1.4) — the lesson of KVM's `kvm_skip_emulated_instruction`.
//! - **An event is delivered** ([`deliver`]) with what the processor's own delivery would have
//!   done: RF set in the pushed RFLAGS of a fault, no error code in real mode (where none is
//!   pushed, and VM entry refuses one, SDM Vol. 3C 27.2.1.3), DR7.GD cleared for #DB.
//! - **The event the exit interrupted** is delivered again unless a handler resolved it (the
//!   double-fault rules) — the lesson of KVM's `vmx_complete_interrupts`. If another event took
//!   this entry, an interrupted external interrupt or NMI waits for its window instead of being
//!   lost; a fault or software event need not wait: it recurs when its instruction runs again.

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::{Activity, Host, Interruptibility, Vcpu, Window};
use x86_arch::event::{exception_is_fault, Event, EventKind, DB};
use x86_arch::regs::{CR0_PE, DEBUGCTL_BTF, DR7_GD, RFLAGS_IF, RFLAGS_RF, RFLAGS_TF};

/// Carries out a handler's action, then re-queues the interrupted event and offers the events
/// that wait for a window.
#[inline(always)]
pub fn complete<V: Vcpu>(cpu: &mut Cpu<V>, action: Action) {
    let injected = match action {
        Action::Advance => {
            skip_instruction(&mut cpu.vcpu);
            false
        }
        Action::Inject(event) => {
            deliver(&mut cpu.vcpu, event);
            true
        }
        Action::Resume | Action::Stop(_) => false,
    };
    if let Some(event) = cpu.events.interrupted.take() {
        requeue(cpu, event, injected);
    }
    if cpu.events.pending_interrupt.is_some() || cpu.events.pending_nmi {
        offer_pending(cpu, injected);
    }
}

/// External interrupts and NMIs: events that do not come back by themselves when an instruction
/// runs again.
pub fn is_asynchronous(event: &Event) -> bool {
    matches!(event.kind, EventKind::ExternalInterrupt | EventKind::Nmi)
}

fn requeue<V: Vcpu>(cpu: &mut Cpu<V>, event: Event, injected: bool) {
    if !injected {
        deliver(&mut cpu.vcpu, event);
        return;
    }
    match event.kind {
        EventKind::ExternalInterrupt => cpu.events.pending_interrupt = Some(event),
        EventKind::Nmi => cpu.events.pending_nmi = true,
        _ => {}
    }
}

/// Delivers an event that waited for its window, if the guest can take it now and this entry
/// injects nothing else; otherwise asks the backend for an exit at the window.
fn offer_pending<V: Vcpu>(cpu: &mut Cpu<V>, injected: bool) {
    let vcpu = &mut cpu.vcpu;
    let Interruptibility { sti, mov_ss, nmi } = vcpu.interruptibility();
    let shadow = sti || mov_ss;
    let waiting = vcpu.activity() == Activity::WaitForSipi;
    let mut busy = injected;
    if cpu.events.pending_nmi {
        // NMI injection needs no STI/MOV SS blocking (SDM Vol. 3C 27.3.1.5) and NMIs unblocked.
        if !busy && !shadow && !nmi && !waiting {
            deliver(vcpu, Event::nmi());
            cpu.events.pending_nmi = false;
            vcpu.request_window(Window::Nmi, false);
            busy = true;
        } else {
            vcpu.request_window(Window::Nmi, true);
        }
    }
    if let Some(event) = cpu.events.pending_interrupt {
        if !busy && !shadow && !waiting && vcpu.rflags() & RFLAGS_IF != 0 {
            deliver(vcpu, event);
            cpu.events.pending_interrupt = None;
            vcpu.request_window(Window::Interrupt, false);
        } else {
            vcpu.request_window(Window::Interrupt, true);
        }
    }
}

/// The instruction that exited was emulated: retire it.
#[inline(always)]
pub fn skip_instruction<V: Vcpu>(vcpu: &mut V) {
    let old = vcpu.rip();
    let mut rip = old.wrapping_add(vcpu.instruction_len());
    // IP wraps at 64 KiB in 16-bit code and EIP at 4 GiB outside 64-bit mode. Asking for the
    // mode costs several reads, so only when a wrap is possible: a RIP above 4 GiB is 64-bit
    // code, and below it only a sum that crosses 64 KiB or 4 GiB can wrap — and a sum that
    // crosses neither differs from the old RIP in its low 16 bits only.
    if (old ^ rip) > 0xFFFF
        && old <= 0xFFFF_FFFF
        && (rip > 0xFFFF_FFFF || (old <= 0xFFFF && rip > 0xFFFF))
    {
        match vcpu.mode().code_bits() {
            16 => rip &= 0xFFFF,
            32 => rip &= 0xFFFF_FFFF,
            _ => {}
        }
    }
    vcpu.set_rip(rip);
    if vcpu.in_shadow() {
        let shadow = vcpu.interruptibility();
        vcpu.set_interruptibility(Interruptibility {
            sti: false,
            mov_ss: false,
            ..shadow
        });
    }
    if vcpu.rflags() & RFLAGS_TF != 0 {
        single_step(vcpu);
    }
}

/// RFLAGS.TF was set when an emulated instruction retired: the trap follows it, unless
/// DEBUGCTL.BTF limits single steps to branches, which no emulated instruction is.
#[cold]
fn single_step<V: Vcpu>(vcpu: &mut V) {
    let debugctl = vcpu
        .msr(crate::vcpu::msr::IA32_DEBUGCTL)
        .or_else(|| vcpu.host().rdmsr(crate::vcpu::msr::IA32_DEBUGCTL))
        .unwrap_or(0);
    if debugctl & DEBUGCTL_BTF == 0 {
        vcpu.single_step_trap();
    }
}

/// Delivers `event` as the processor's own delivery would.
pub fn deliver<V: Vcpu>(vcpu: &mut V, mut event: Event) {
    if event.kind == EventKind::HardwareException {
        if event.error_code.is_some() && vcpu.cr0() & CR0_PE == 0 {
            event.error_code = None;
        }
        if exception_is_fault(event.vector) {
            let rflags = vcpu.rflags();
            if rflags & RFLAGS_RF == 0 {
                vcpu.set_rflags(rflags | RFLAGS_RF);
            }
        }
        if event.vector == DB {
            // The processor clears GD on entering the #DB handler, so the handler may use the
            // debug registers (SDM Vol. 3B 18.2.4); an injected #DB does not do it by itself.
            let dr7 = vcpu.dr(7);
            if dr7 & DR7_GD != 0 {
                vcpu.set_dr(7, dr7 & !DR7_GD);
            }
        }
    }
    vcpu.inject(&event);
}
