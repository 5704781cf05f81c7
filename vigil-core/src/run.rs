//! The exit loop: enter, decode, handle, complete, account, repeat — until a handler stops the
//! guest. One loop for every backend: it sees only the [`Vcpu`] trait and [`Exit`] values.
//! Each vCPU runs its own loop on its own processor; before every entry it looks up to the
//! machine (`crate::smp`): it parks while another vCPU holds it, stops when the run has ended
//! elsewhere, and drops cached nested translations another vCPU made stale.

use crate::cpu::{Cpu, Exited};
use crate::debugger::exits::{Debugger, Link};
use crate::exit::{complete::complete, dispatch, Action, Exit, Stop};
use crate::smp::startup::Startup;
use crate::smp::{Presence, Released};
use crate::time::EntryTime;
use crate::vcpu::{Host, Vcpu};

/// A vCPU on its own, or under the debugger (which then owns it).
// The plain vCPU is the exit path's: it stays inline (no indirection per exit), and there is
// one Machine per vCPU.
#[allow(clippy::large_enum_variant)]
pub enum Machine<V: Vcpu + 'static, L: Link + 'static> {
    Plain(Cpu<V>),
    Debugged(alloc::boxed::Box<Debugger<V, L>>),
}

impl<V: Vcpu + 'static, L: Link + 'static> Machine<V, L> {
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
trait Handler<V: Vcpu + 'static> {
    fn cpu(&mut self) -> &mut Cpu<V>;
    fn handle(&mut self, exit: &Exit) -> Action;
    /// Another vCPU holds the machine, or the run ended: park until released (a stop if the
    /// run ended meanwhile).
    fn meet(&mut self) -> Option<Stop>;
    /// Before an entry that waits for a start-up IPI.
    fn before_waiting(&mut self);
}

impl<V: Vcpu + 'static> Handler<V> for Cpu<V> {
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

    fn meet(&mut self) -> Option<Stop> {
        (meet(self) == Released::Ended).then_some(Stop::Elsewhere)
    }

    fn before_waiting(&mut self) {}
}

impl<V: Vcpu + 'static, L: Link + 'static> Handler<V> for Debugger<V, L> {
    #[inline(always)]
    fn cpu(&mut self) -> &mut Cpu<V> {
        Debugger::cpu(self)
    }

    #[inline(always)]
    fn handle(&mut self, exit: &Exit) -> Action {
        Debugger::handle(self, exit)
    }

    fn meet(&mut self) -> Option<Stop> {
        Debugger::meet(self)
    }

    fn before_waiting(&mut self) {
        Debugger::before_waiting(self)
    }
}

/// Runs the guest until it stops for good.
pub fn run<V: Vcpu + 'static, L: Link + 'static>(machine: &mut Machine<V, L>) -> Stop {
    // Several vCPUs that hide their exits keep one coherent clock (`crate::time::smp`).
    let cpu = machine.cpu();
    if cpu.vm.smp.multi() {
        let now = cpu.vcpu.host().rdtsc();
        let running = cpu.startup == Startup::Running;
        cpu.time
            .share(&cpu.vm.smp.clocks, cpu.id as usize, running, now);
    }
    match machine {
        Machine::Plain(cpu) => {
            // Every vCPU of several exits now and then to look up to the machine (under the
            // debugger its own, shorter poll does it); the timer is then the machine's.
            if cpu.vm.smp.multi() {
                cpu.time.timer_free = false;
                if !cpu.vcpu.set_poll_timer(Some(crate::smp::POLL_TICKS)) {
                    log::warn!(
                        "vCPU {}: no periodic exit: the other vCPUs may wait for this one to stop",
                        cpu.id
                    );
                }
            }
            exits(cpu)
        }
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
fn exits<V: Vcpu + 'static, H: Handler<V>>(h: &mut H) -> Stop {
    loop {
        let cpu = h.cpu();
        if cpu.vm.smp.attention() {
            if let Some(stop) = h.meet() {
                return stop;
            }
        }
        let cpu = h.cpu();
        let generation = cpu.vm.smp.nested_generation();
        if generation != cpu.nested_seen {
            cpu.vcpu.invalidate_nested();
            cpu.nested_seen = generation;
        }
        let cpu = h.cpu();
        let plan = cpu.time.plan(&mut cpu.vcpu, cpu.exit_tsc);
        let stop = if cpu.startup == Startup::WaitForSipi {
            wait_for_sipi(h, &plan)
        } else {
            let result = cpu.vcpu.run(&plan);
            // CPUID, the exit every guest makes most, gets its own copy of the rest of the
            // loop, made for an exit known to be CPUID: only its time is read out of the
            // result, nothing of it is moved around.
            if let Ok(Exited {
                exit: Exit::Cpuid,
                exit_tsc,
                ..
            }) = result
            {
                after_cpuid(h, &plan, exit_tsc)
            } else {
                after_run(h, &plan, result)
            }
        };
        if let Some(stop) = stop {
            return stop;
        }
    }
}

/// An entry that waits for a start-up IPI: the vCPU runs no guest code, so the others may count
/// it as parked until its SIPI exit.
#[cold]
#[inline(never)]
fn wait_for_sipi<V: Vcpu + 'static, H: Handler<V>>(h: &mut H, plan: &EntryTime) -> Option<Stop> {
    h.before_waiting();
    let cpu = h.cpu();
    let id = cpu.id as usize;
    cpu.vm.smp.set_presence(id, Presence::WaitingForSipi);
    let result = cpu.vcpu.run(plan);
    cpu.vm.smp.set_presence(id, Presence::Running);
    after_run(h, plan, result)
}

/// The exit an entry ended with, through time's bookkeeping, its handler and the completion.
#[inline(always)]
fn after_run<V: Vcpu + 'static, H: Handler<V>>(
    h: &mut H,
    plan: &EntryTime,
    result: Result<Exited, Stop>,
) -> Option<Stop> {
    let cpu = h.cpu();
    let exited = match result {
        Ok(e) => e,
        Err(stop) => return Some(stop),
    };
    if plan.hide {
        let hidden = cpu.vcpu.hidden_time();
        cpu.time.after_exit(&hidden, exited.exit_tsc);
    }
    cpu.exit_tsc = exited.exit_tsc;
    cpu.events.interrupted = exited.interrupted;
    let exit = exited.exit;
    if !matches!(exit, Exit::Init | Exit::Sipi { .. }) {
        cpu.startup = cpu.startup.after_exit();
    }
    match handle_one(h, &exit) {
        Action::Stop(stop) => Some(stop),
        _ => None,
    }
}

/// [`after_run`] for a CPUID exit at host time `exit_tsc`.
#[inline(always)]
fn after_cpuid<V: Vcpu + 'static, H: Handler<V>>(
    h: &mut H,
    plan: &EntryTime,
    exit_tsc: u64,
) -> Option<Stop> {
    let cpu = h.cpu();
    if plan.hide {
        let hidden = cpu.vcpu.hidden_time();
        cpu.time.after_exit(&hidden, exit_tsc);
    }
    cpu.exit_tsc = exit_tsc;
    // An instruction's exit: no event was being delivered.
    cpu.events.interrupted = None;
    cpu.startup = cpu.startup.after_exit();
    match handle_one(h, &Exit::Cpuid) {
        Action::Stop(stop) => Some(stop),
        _ => None,
    }
}

/// One exit through its handler and the completion, then its statistics.
#[inline(always)]
fn handle_one<V: Vcpu + 'static, H: Handler<V>>(h: &mut H, exit: &Exit) -> Action {
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

/// Another vCPU holds this one, or the run ended: park until released.
#[cold]
fn meet<V: Vcpu>(cpu: &mut Cpu<V>) -> Released {
    cpu.vm.smp.park(cpu.id as usize)
}
