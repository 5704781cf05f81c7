//! Exceptions, the double-fault rules, nested page faults, and the event an exit interrupted.

use crate::exit::complete::complete;
use crate::exit::{Action, Exit, NestedFault, Stop};
use crate::nested::Perms;
use crate::testing::{cpu, exit};
use crate::vcpu::Window;
use x86_arch::event::{Event, EventKind};
use x86_arch::regs::*;

fn pf(code: u32) -> Exit {
    Exit::Exception {
        event: Event::page_fault(code),
        info: 0xdead_b000,
    }
}

fn hole(gpa: u64) -> Exit {
    Exit::NestedFault(NestedFault {
        gpa,
        linear: Some(gpa),
        read: true,
        write: false,
        fetch: false,
        allowed: Perms::NONE,
    })
}

#[test]
fn an_intercepted_page_fault_is_delivered_with_cr2() {
    let mut c = cpu("trap=exc:14");
    assert_eq!(exit(&mut c, pf(2)), Action::Inject(Event::page_fault(2)));
    assert_eq!(c.vcpu.cr2, 0xdead_b000);
    assert_eq!(c.vcpu.injected, [Event::page_fault(2)]);
    assert_ne!(c.vcpu.rflags & RFLAGS_RF, 0);
    assert_eq!(c.vcpu.rip, 0x1000, "a fault does not move RIP");
}

#[test]
fn an_intercepted_debug_exception_updates_dr6_as_hardware_does() {
    // The guest's DR6 already has BS from an earlier step and BD from a general detect; this
    // #DB is a breakpoint on DR1. Hardware sets B1 and never clears BS or BD (SDM Vol. 3B
    // 18.2.3), and clears DR7.GD as the handler starts.
    let mut c = cpu("trap=exc:1");
    c.vcpu.drs[6] = DR6_FIXED1 | DR6_BS | DR6_BD | 0b0100;
    c.vcpu.drs[7] = DR7_FIXED1 | DR7_GD;
    exit(
        &mut c,
        Exit::Exception {
            event: Event::DB,
            info: 0b0010,
        },
    );
    assert_eq!(c.vcpu.drs[6], DR6_FIXED1 | DR6_BS | DR6_BD | 0b0010);
    assert_eq!(c.vcpu.drs[7] & DR7_GD, 0);
    assert_eq!(c.vcpu.injected, [Event::DB]);
}

#[test]
fn a_software_exception_is_delivered_again_with_its_length() {
    let mut c = cpu("trap=exc:3");
    let int3 = Event {
        kind: EventKind::SoftwareException,
        instruction_len: 1,
        ..Event::exception(3)
    };
    exit(
        &mut c,
        Exit::Exception {
            event: int3,
            info: 0,
        },
    );
    assert_eq!(c.vcpu.injected, [int3]);
}

#[test]
fn gp_during_gp_delivery_is_a_double_fault() {
    let mut c = cpu("trap=exc:13");
    c.events.interrupted = Some(Event::GP0);
    let a = exit(
        &mut c,
        Exit::Exception {
            event: Event::GP0,
            info: 0,
        },
    );
    assert_eq!(a, Action::Inject(Event::DF));
    assert_eq!(
        c.vcpu.injected,
        [Event::DF],
        "the first #GP is not delivered again"
    );
}

#[test]
fn an_exception_during_double_fault_delivery_stops_the_guest() {
    let mut c = cpu("trap=exc:13");
    c.events.interrupted = Some(Event::DF);
    let a = exit(
        &mut c,
        Exit::Exception {
            event: Event::GP0,
            info: 0,
        },
    );
    assert_eq!(a, Action::Stop(Stop::Failed("guest triple fault")));
    assert!(c.vcpu.injected.is_empty());
    assert_eq!(c.vcpu.reports.len(), 1);
}

#[test]
fn an_interrupt_whose_delivery_faulted_is_delivered_after_the_fault() {
    // #PF while delivering external interrupt 0x30 (say, a stack page not present): the #PF
    // goes first, the interrupt waits for the next interrupt window instead of being lost.
    let mut c = cpu("trap=exc:14");
    c.events.interrupted = Some(Event::external(0x30));
    exit(&mut c, pf(2));
    assert_eq!(c.vcpu.injected, [Event::page_fault(2)]);
    assert_eq!(c.events.pending_interrupt, Some(Event::external(0x30)));
    assert!(
        c.vcpu.windows[Window::Interrupt as usize],
        "window requested"
    );
    // The window opens: the interrupt is delivered and the window closes.
    exit(&mut c, Exit::InterruptWindow);
    assert_eq!(c.vcpu.injected[1], Event::external(0x30));
    assert_eq!(c.events.pending_interrupt, None);
    assert!(!c.vcpu.windows[Window::Interrupt as usize]);
}

#[test]
fn an_nmi_whose_delivery_faulted_waits_for_its_window() {
    let mut c = cpu("trap=exc:14");
    c.events.interrupted = Some(Event::nmi());
    exit(&mut c, pf(0));
    assert!(c.events.pending_nmi);
    assert!(c.vcpu.windows[Window::Nmi as usize]);
    exit(&mut c, Exit::NmiWindow);
    assert_eq!(c.vcpu.injected[1], Event::nmi());
    assert!(!c.events.pending_nmi);
}

#[test]
fn without_an_nmi_window_a_pending_nmi_goes_at_the_next_exit() {
    let mut c = cpu("trap=exc:14");
    c.vcpu.nmi_window_supported = false;
    c.events.interrupted = Some(Event::nmi());
    exit(&mut c, pf(0));
    assert!(c.events.pending_nmi);
    // Any later exit that injects nothing else delivers it, unless NMIs are blocked.
    c.vcpu.intr.nmi = true;
    exit(&mut c, Exit::Cpuid);
    assert!(c.events.pending_nmi, "blocked NMIs wait");
    c.vcpu.intr.nmi = false;
    exit(&mut c, Exit::Cpuid);
    assert_eq!(c.vcpu.injected.last(), Some(&Event::nmi()));
    assert!(!c.events.pending_nmi);
}

#[test]
fn an_interrupted_event_is_delivered_again_when_nothing_else_is() {
    // Every exit ends by re-queueing what it interrupted unless a handler resolved it.
    let mut c = cpu("");
    c.events.interrupted = Some(Event::external(0x41));
    complete(&mut c, Action::Resume);
    assert_eq!(c.vcpu.injected, [Event::external(0x41)]);
    assert_eq!(c.events.interrupted, None);
}

#[test]
fn a_fault_serial_to_another_exception_does_not_repeat_the_first() {
    // #PF during #UD delivery (benign then page fault): deliver the #PF; the #UD recurs when
    // its instruction runs again, so it is not queued.
    let mut c = cpu("trap=exc:14");
    c.events.interrupted = Some(Event::UD);
    exit(&mut c, pf(0));
    assert_eq!(c.vcpu.injected, [Event::page_fault(0)]);
    assert_eq!(c.events.pending_interrupt, None);
    assert!(!c.events.pending_nmi);
}

#[test]
fn an_access_to_a_hole_gets_gp() {
    let mut c = cpu("");
    assert_eq!(exit(&mut c, hole(0x400_0000)), Action::Inject(Event::GP0));
    assert_eq!(c.vcpu.injected, [Event::GP0]);
}

#[test]
fn a_hole_hit_while_delivering_a_page_fault_is_a_double_fault() {
    let mut c = cpu("");
    c.events.interrupted = Some(Event::page_fault(0));
    assert_eq!(exit(&mut c, hole(0x400_0000)), Action::Inject(Event::DF));
}

#[test]
fn a_misconfiguration_stops_with_a_report() {
    let mut c = cpu("");
    let a = exit(&mut c, Exit::NestedMisconfig { gpa: 0x1000 });
    assert!(matches!(a, Action::Stop(Stop::Failed(_))));
    assert!(c.vcpu.reports[0].contains("misconfiguration"));
}

#[test]
fn a_spurious_window_changes_nothing() {
    let mut c = cpu("");
    assert_eq!(exit(&mut c, Exit::InterruptWindow), Action::Resume);
    assert!(c.vcpu.injected.is_empty());
}
