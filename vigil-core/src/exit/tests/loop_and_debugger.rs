//! The exit loop, and the debugger's exits on the same seam.

use crate::debugger::arch::Layout;
use crate::debugger::exits::{Debugger, Link, Route};
use crate::debugger::framing::packet;
use crate::debugger::session::Port;
use crate::exit::complete::complete;
use crate::exit::{Action, Exit, ExitKind, NestedFault, Stop};
use crate::nested::Perms;
use crate::run::{run, Machine};
use crate::testing::{cpu, FakeVcpu};
use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use x86_arch::regs::RFLAGS_TF;

/// gdb's side of the wire: bytes queued for the stub, and what the stub sent.
#[derive(Clone, Default)]
struct Wire {
    to_stub: Rc<RefCell<VecDeque<u8>>>,
    from_stub: Rc<RefCell<Vec<u8>>>,
    routes: Rc<RefCell<Vec<Route>>>,
}

impl Wire {
    /// A packet as gdb sends it: after acknowledging what the stub sent before.
    fn send(&self, body: &str) {
        let mut q = self.to_stub.borrow_mut();
        q.push_back(b'+');
        packet(body.as_bytes(), &mut |b| q.push_back(b));
    }
}

impl Port for Wire {
    fn put(&mut self, byte: u8) {
        self.from_stub.borrow_mut().push(byte);
    }
}

impl Link for Wire {
    fn read(&mut self) -> Option<u8> {
        self.to_stub.borrow_mut().pop_front()
    }
    fn ready(&self) -> bool {
        !self.to_stub.borrow().is_empty()
    }
    fn set_route(&mut self, route: Route) {
        self.routes.borrow_mut().push(route);
    }
}

#[test]
fn the_loop_runs_handlers_counts_exits_and_stops() {
    let mut c = cpu("trap=hlt");
    c.vcpu.script.extend([Exit::Cpuid, Exit::Cpuid, Exit::Hlt]);
    let mut m: Machine<FakeVcpu, Wire> = Machine::Plain(c);
    // The script runs out after three exits: the backend reports a failed entry.
    assert_eq!(run(&mut m), Stop::Failed("script ended"));
    let c = m.cpu();
    assert_eq!(c.vcpu.rip, 0x1006);
    assert_eq!(c.stats.get(ExitKind::Cpuid as u16).unwrap().count, 2);
    assert_eq!(c.stats.get(ExitKind::Hlt as u16).unwrap().count, 1);
}

#[test]
fn the_loop_ends_when_a_handler_stops() {
    let mut c = cpu("");
    c.vcpu.script.extend([Exit::TripleFault, Exit::Cpuid]);
    let mut m: Machine<FakeVcpu, Wire> = Machine::Plain(c);
    assert_eq!(run(&mut m), Stop::Failed("guest triple fault"));
    assert_eq!(m.cpu().vcpu.script.len(), 1, "nothing ran after the stop");
}

#[test]
fn the_debugger_takes_the_vcpu_and_intercepts_its_exceptions() {
    let wire = Wire::default();
    let d = Debugger::new(cpu(""), Layout::X86_64, wire.clone());
    let mut m: Machine<FakeVcpu, Wire> = Machine::Debugged(alloc::boxed::Box::new(d));
    let c = m.cpu();
    assert_eq!(c.vcpu.exceptions, (1 << 1) | (1 << 3), "#DB and #BP");
    assert!(c.vcpu.poll.is_some(), "the periodic poll is armed");
}

#[test]
fn a_gdb_step_over_an_emulated_instruction_keeps_the_guests_own_trap() {
    // gdb attaches (seen at the poll exit) and asks for one instruction. The guest, single-
    // stepping itself, executes CPUID, which Vigil emulates: the step completes at that exit,
    // and the guest still gets its own single-step trap after CPUID.
    let wire = Wire::default();
    wire.send("qSupported:swbreak+");
    wire.send("s");
    let mut d = Debugger::new(cpu(""), Layout::X86_64, wire.clone());
    assert_eq!(d.handle(&Exit::Timer), Action::Resume);
    assert!(d.cpu().vcpu.step_trap, "the step is armed");
    d.cpu().vcpu.rflags |= RFLAGS_TF;
    wire.send("c");
    let a = d.handle(&Exit::Cpuid);
    complete(d.cpu(), a);
    let c = d.cpu();
    assert_eq!(c.vcpu.rip, 0x1002, "retired once");
    assert_eq!(c.vcpu.single_steps, 1, "the guest's own #DB follows");
    assert!(!c.vcpu.step_trap, "the step is disarmed");
    let sent = alloc::string::String::from_utf8_lossy(&wire.from_stub.borrow()).into_owned();
    assert!(
        sent.contains("$S05") || sent.contains("$T05"),
        "a stop was reported: {sent}"
    );
}

#[test]
fn a_watchpoint_page_fault_is_stepped_over_with_the_page_open() {
    let wire = Wire::default();
    wire.send("qSupported:swbreak+");
    wire.send("Z2,5008,8");
    wire.send("c");
    let mut d = Debugger::new(cpu(""), Layout::X86_64, wire.clone());
    d.handle(&Exit::Timer);
    assert_eq!(
        d.cpu().vcpu.perms[&0x5000],
        Perms::RX.and(Perms::RWX),
        "write taken away"
    );
    // The guest writes the watched word: the nested page fault opens the page and steps.
    let fault = Exit::NestedFault(NestedFault {
        gpa: 0x5008,
        linear: Some(0x5008),
        read: false,
        write: true,
        fetch: false,
        allowed: Perms::RX,
    });
    assert_eq!(d.handle(&fault), Action::Resume);
    assert_eq!(d.cpu().vcpu.perms[&0x5000], Perms::RWX);
    assert!(d.cpu().vcpu.step_trap);
    // The instruction ran (the fake plays the processor) and the step exit comes.
    d.cpu().vcpu.mem[0x5008] = 0x42;
    wire.send("c");
    d.handle(&Exit::Step);
    assert_eq!(d.cpu().vcpu.perms[&0x5000], Perms::RX, "closed again");
    let sent = alloc::string::String::from_utf8_lossy(&wire.from_stub.borrow()).into_owned();
    assert!(sent.contains("watch:5008"), "{sent}");
}

#[test]
fn without_execute_only_pages_a_breakpoint_page_is_closed_and_its_fetch_is_the_breakpoint() {
    // As under AMD's nested paging: no execute-only pages.
    let wire = Wire::default();
    wire.send("qSupported:swbreak+");
    wire.send("Z0,5010,1");
    wire.send("c");
    let mut c = cpu("");
    c.vcpu.exec_only = false;
    c.vcpu.mem[0x5010] = 0x90;
    let mut d = Debugger::new(c, Layout::X86_64, wire.clone());
    d.handle(&Exit::Timer);
    assert_eq!(d.cpu().vcpu.perms[&0x5000], Perms::NONE, "closed entirely");
    assert_eq!(d.cpu().vcpu.mem[0x5010], 0xCC, "the INT3 is in place");
    // The guest reads its own code there: stepped over with the original byte back.
    let read = |fetch: bool| {
        Exit::NestedFault(NestedFault {
            gpa: 0x5010,
            linear: None,
            read: !fetch,
            write: false,
            fetch,
            allowed: Perms::NONE,
        })
    };
    d.cpu().vcpu.rip = 0x1000;
    assert_eq!(d.handle(&read(false)), Action::Resume);
    assert_eq!(
        d.cpu().vcpu.mem[0x5010],
        0x90,
        "the guest reads the original"
    );
    assert_eq!(d.cpu().vcpu.perms[&0x5000], Perms::RWX);
    wire.send("c");
    d.handle(&Exit::Step);
    assert_eq!(d.cpu().vcpu.mem[0x5010], 0xCC);
    assert_eq!(d.cpu().vcpu.perms[&0x5000], Perms::NONE, "closed again");
    // Executing the breakpoint's address faults on the fetch: that is the breakpoint.
    d.cpu().vcpu.rip = 0x5010;
    wire.send("c");
    d.handle(&read(true));
    let sent = alloc::string::String::from_utf8_lossy(&wire.from_stub.borrow()).into_owned();
    assert!(sent.contains("swbreak"), "a breakpoint stop: {sent}");
}
