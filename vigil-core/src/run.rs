//! The exit loop: enter, decode, handle, complete, account, repeat — until a handler stops the
//! guest. One loop for every backend: it sees only the [`Vcpu`] trait and [`Exit`] values.
//! Each vCPU runs its own loop on its own processor; before every entry it looks up to the
//! machine (`crate::smp`): it parks while another vCPU holds it, stops when the run has ended
//! elsewhere, and drops cached nested translations another vCPU made stale.

use crate::cpu::Cpu;
use crate::debugger::exits::{Debugger, Link};
use crate::exit::{complete::complete, dispatch, Action, Exit, Stop};
use crate::smp::startup::Startup;
use crate::smp::{Presence, Released};
use crate::time::cost_of;
use crate::vcpu::{Host, Vcpu};

/// A vCPU on its own, or under the debugger (which then owns it).
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

/// Runs the guest until it stops for good.
pub fn run<V: Vcpu + 'static, L: Link + 'static>(machine: &mut Machine<V, L>) -> Stop {
    if let Machine::Debugged(d) = machine {
        if d.cpu().config().gdb_wait {
            if let Some(stop) = d.wait_for_attach() {
                return stop;
            }
        }
    }
    // (Under the debugger its own, shorter poll does it.)
    if let Machine::Plain(cpu) = machine {
        if cpu.vm.smp.multi() && !cpu.vcpu.set_poll_timer(Some(crate::smp::POLL_TICKS)) {
            log::warn!(
                "vCPU {}: no periodic exit: the other vCPUs may wait for this one to stop",
                cpu.id
            );
        }
    }
    let mut last: Option<Exit> = None;
    loop {
        let cpu = machine.cpu();
        let vm = cpu.vm;
        let smp = &vm.smp;
        if smp.attention() {
            let stop = match machine {
                Machine::Plain(cpu) => (meet(cpu) == Released::Ended).then_some(Stop::Elsewhere),
                Machine::Debugged(d) => d.meet(),
            };
            if let Some(stop) = stop {
                return stop;
            }
        }
        let cpu = machine.cpu();
        let generation = smp.nested_generation();
        if generation != cpu.nested_seen {
            cpu.vcpu.invalidate_nested();
            cpu.nested_seen = generation;
        }
        // A vCPU waiting for a start-up IPI runs no guest code: the others may count it as
        // parked until its SIPI exit.
        let waiting = cpu.startup == Startup::WaitForSipi;
        if waiting {
            if let Machine::Debugged(d) = machine {
                d.before_waiting();
            }
            smp.set_presence(machine.cpu().id as usize, Presence::WaitingForSipi);
        }
        let cpu = machine.cpu();
        let plan = cpu.time.plan(last.as_ref().map(cost_of));
        let result = cpu.vcpu.run(&plan);
        if waiting {
            smp.set_presence(cpu.id as usize, Presence::Running);
        }
        let exited = match result {
            Ok(e) => e,
            Err(stop) => return stop,
        };
        if let Some(hidden) = &exited.hidden {
            cpu.time.after_exit(hidden);
        }
        cpu.exit_tsc = exited.exit_tsc;
        cpu.events.interrupted = exited.interrupted;
        let exit = exited.exit;
        if !matches!(exit, Exit::Init | Exit::Sipi { .. }) {
            cpu.startup = cpu.startup.after_exit();
        }
        let action = match machine {
            Machine::Plain(cpu) => dispatch(cpu, &exit),
            Machine::Debugged(d) => d.handle(&exit),
        };
        let cpu = machine.cpu();
        complete(cpu, action);
        // Host ticks from the exit (read by the world switch) to just before the next entry.
        let now = cpu.vcpu.host().rdtsc();
        cpu.stats
            .record(exit.kind() as u16, now.wrapping_sub(cpu.exit_tsc));
        if let Action::Stop(stop) = action {
            return stop;
        }
        last = Some(exit);
    }
}

/// Another vCPU holds this one, or the run ended: park until released.
#[cold]
fn meet<V: Vcpu>(cpu: &mut Cpu<V>) -> Released {
    cpu.vm.smp.park(cpu.id as usize)
}
