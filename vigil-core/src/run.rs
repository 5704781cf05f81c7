//! The exit loop: enter, decode, handle, complete, account, repeat — until a handler stops the
//! guest. One loop for every backend: it sees only the [`Vcpu`] trait and [`Exit`] values.

use crate::cpu::Cpu;
use crate::debugger::exits::{Debugger, Link};
use crate::exit::{complete::complete, dispatch, Action, Exit, Stop};
use crate::vcpu::{Host, Vcpu};

/// A vCPU on its own, or under the debugger (which then owns it).
// The plain vCPU is the exit path's: it stays inline (no indirection per exit), and there is
// one Machine per vCPU.
#[allow(clippy::large_enum_variant)]
pub enum Machine<V: Vcpu, L: Link> {
    Plain(Cpu<V>),
    Debugged(alloc::boxed::Box<Debugger<V, L>>),
}

impl<V: Vcpu, L: Link> Machine<V, L> {
    pub fn cpu(&mut self) -> &mut Cpu<V> {
        match self {
            Machine::Plain(cpu) => cpu,
            Machine::Debugged(d) => d.cpu(),
        }
    }

    pub fn into_cpu(self) -> Cpu<V> {
        match self {
            Machine::Plain(cpu) => cpu,
            Machine::Debugged(d) => (*d).into_cpu(),
        }
    }
}

/// Who answers a vCPU's exits: the exit layer itself, or the debugger in front of it.
trait Handler<V: Vcpu> {
    fn cpu(&mut self) -> &mut Cpu<V>;
    fn handle(&mut self, exit: &Exit) -> Action;
}

impl<V: Vcpu> Handler<V> for Cpu<V> {
    #[inline(always)]
    fn cpu(&mut self) -> &mut Cpu<V> {
        self
    }

    #[inline(always)]
    fn handle(&mut self, exit: &Exit) -> Action {
        // CPUID is the exit every guest makes most (it always exits): its handler goes inline.
        match exit {
            Exit::Cpuid => crate::exit::cpuid_inline(self),
            _ => dispatch(self, exit),
        }
    }
}

impl<V: Vcpu, L: Link> Handler<V> for Debugger<V, L> {
    #[inline(always)]
    fn cpu(&mut self) -> &mut Cpu<V> {
        Debugger::cpu(self)
    }

    #[inline(always)]
    fn handle(&mut self, exit: &Exit) -> Action {
        Debugger::handle(self, exit)
    }
}

/// Runs the guest until it stops for good.
pub fn run<V: Vcpu, L: Link>(machine: &mut Machine<V, L>) -> Stop {
    match machine {
        Machine::Plain(cpu) => exits(cpu),
        Machine::Debugged(d) => {
            if d.cpu().config().gdb_wait {
                if let Some(stop) = d.wait_for_attach() {
                    return stop;
                }
            }
            // The debugger polls with the backend's timer; time uses it only when it is free.
            d.cpu().time.timer_free = false;
            exits(d.as_mut())
        }
    }
}

/// The loop, one copy per kind of handler (the plain one is the hot path: no debugger branches
/// on it).
fn exits<V: Vcpu, H: Handler<V>>(h: &mut H) -> Stop {
    loop {
        let cpu = h.cpu();
        let plan = cpu.time.plan(&mut cpu.vcpu, cpu.exit_tsc);
        let exited = match cpu.vcpu.run(&plan) {
            Ok(e) => e,
            Err(stop) => return stop,
        };
        if plan.hide {
            let hidden = cpu.vcpu.hidden_time();
            cpu.time.after_exit(&hidden, exited.exit_tsc);
        }
        cpu.exit_tsc = exited.exit_tsc;
        // CPUID, the exit every guest makes most, gets its own copy of the rest of the loop,
        // made for an exit known to be CPUID (nothing of it to move around).
        let action = match exited.exit {
            Exit::Cpuid => {
                cpu.events.interrupted = None;
                handle_one(h, &Exit::Cpuid)
            }
            exit => {
                cpu.events.interrupted = exited.interrupted;
                handle_one(h, &exit)
            }
        };
        if let Action::Stop(stop) = action {
            return stop;
        }
    }
}

/// One exit through its handler and the completion, then its statistics.
#[inline(always)]
fn handle_one<V: Vcpu, H: Handler<V>>(h: &mut H, exit: &Exit) -> Action {
    let action = h.handle(exit);
    let cpu = h.cpu();
    complete(cpu, action);
    cpu.time.exited(exit, &action);
    // Host ticks from the exit (read by the world switch) to just before the next entry.
    let now = cpu.vcpu.host().rdtsc();
    cpu.stats
        .record(exit.kind() as u16, now.wrapping_sub(cpu.exit_tsc));
    action
}
