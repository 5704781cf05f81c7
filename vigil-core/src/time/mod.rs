//! Time as the guest sees it — the one home for virtual time.
//!
//! - [`tsc`]: the guest's TSC as a function of the host's (offset, scaling, hidden exit time).
//! - this module: the per-vCPU state around it, what the world switch must do at each entry
//!   ([`Time::plan`], [`EntryTime`]) and take back at each exit ([`Time::after_exit`]), and the
//!   guest's TSC MSRs (IA32_TSC, IA32_TSC_ADJUST, the TSC deadline), which are Vigil's in every
//!   virtual mode.
//!
//! What stays in a backend is what only hardware can do: the world switch's own arithmetic
//! (in assembly, as late as possible before the entry) and the boot-time calibration of the
//! round trip.

pub mod tsc;

use crate::exit::Exit;
use crate::owners::{IA32_TSC, IA32_TSC_ADJUST, IA32_TSC_DEADLINE};
use crate::vcpu::{Host, Vcpu};
use tsc::{Cost, VirtualTsc};

/// The guest's view of its time-stamp counter.
#[derive(Debug)]
pub struct Time {
    pub v: VirtualTsc,
    /// The last value Vigil's RDTSC/RDTSCP emulation returned (for the confirm-tsc hypercall).
    pub last_emulated: Option<u64>,
    /// The host TSC value the guest's deadline was last programmed for (0: none).
    pub deadline_host: u64,
}

/// What the world switch does about time at one entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryTime {
    /// Take this exit's host time out of the offset: `offset -= (now - exit_tsc) + credit`,
    /// as the last step before the entry, then re-arm the deadline for the new offset.
    pub hide: bool,
    /// Ticks taken off beyond the handling time (wrapping: may give time back).
    pub credit: u64,
    pub offset: u64,
    /// The guest's TSC deadline (0: none), re-armed by the switch in host time.
    pub deadline: u64,
}

/// What the world switch reports after an exit that followed a hiding entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HiddenTime {
    /// The offset it computed and wrote.
    pub offset: u64,
    /// Whether it had armed a deadline (and so disarmed it on the exit).
    pub deadline_armed: bool,
    /// Host TSC right after the exit stub disarmed the deadline timer.
    pub disarm_tsc: u64,
}

/// What an exit costs on bare metal, for `tsc=hide`.
pub fn cost_of(exit: &Exit) -> Cost {
    match exit {
        Exit::Rdtsc | Exit::Rdtscp => Cost::Rdtsc,
        Exit::Cpuid => Cost::Cpuid,
        _ => Cost::Other,
    }
}

impl Time {
    pub fn new(v: VirtualTsc) -> Time {
        Time {
            v,
            last_emulated: None,
            deadline_host: 0,
        }
    }

    /// The world switch's time bookkeeping for the entry after `last` (none before the first
    /// entry): in `hide` and `frozen` the switch takes the exit's host time out of the offset
    /// itself, as late as it can, and re-arms the guest's TSC deadline for that offset.
    #[inline]
    pub fn plan(&self, last: Option<Cost>) -> EntryTime {
        match last {
            Some(cost) if self.v.hides_exits() => EntryTime {
                hide: true,
                credit: self.v.credit(cost),
                offset: self.v.offset,
                deadline: self.v.deadline,
            },
            _ => EntryTime::default(),
        }
    }

    /// After an exit from a hiding entry: take over the offset the switch computed, and retire
    /// the guest's deadline if the timer fired before the stub stopped it.
    pub fn after_exit(&mut self, hidden: &HiddenTime) {
        self.v.offset = hidden.offset;
        let d = self.v.deadline;
        if d != 0 && hidden.deadline_armed && self.v.guest_at(hidden.disarm_tsc) >= d {
            self.v.deadline = 0;
        }
    }

    /// Gives the offset to the processor and moves an armed TSC deadline with it, so the
    /// guest's timer fires when *its* TSC reaches the deadline. (In `hide` and `frozen` the
    /// switch re-arms the deadline at every entry instead.)
    pub fn sync<V: Vcpu>(&mut self, vcpu: &mut V) {
        vcpu.set_tsc_offset(self.v.offset);
        if !self.v.hides_exits() && self.deadline_pending(vcpu.host()) {
            self.program_deadline(vcpu.host());
        }
    }

    /// A debugger stop of `held` host ticks: `frozen` and `hide` take the whole exit out at the
    /// next entry; an offset alone needs the stop taken out here (SDM Vol. 3C 26.3).
    pub fn held<V: Vcpu>(&mut self, vcpu: &mut V, held: u64) {
        if self.v.mode.virtualized() && !self.v.hides_exits() {
            self.v.offset = self.v.offset.wrapping_sub(held);
            self.sync(vcpu);
        }
    }

    /// Arms the host timer for the guest's deadline under the current offset.
    fn program_deadline<H: Host>(&mut self, host: &mut H) {
        let at = self.v.host_for(self.v.deadline).max(1);
        self.deadline_host = at;
        host.wrmsr(IA32_TSC_DEADLINE, at);
    }

    /// Whether the guest's deadline is armed and has not fired: the timer fires once the TSC
    /// reaches the programmed value (SDM Vol. 3A, "TSC-Deadline Mode"). Decided from time, not
    /// by reading the MSR back, which not every implementation clears.
    fn deadline_pending<H: Host>(&self, host: &mut H) -> bool {
        if self.v.hides_exits() {
            return self.v.deadline != 0;
        }
        self.v.deadline != 0 && host.rdtsc() < self.deadline_host
    }

    /// RDMSR of one of the TSC MSRs, at an exit stamped `exit_tsc`.
    pub fn read_msr<H: Host>(&self, host: &mut H, msr: u32, exit_tsc: u64) -> Option<u64> {
        match msr {
            IA32_TSC => Some(self.v.guest_at_exit(exit_tsc)),
            IA32_TSC_ADJUST => Some(self.v.adjust),
            IA32_TSC_DEADLINE => Some(if self.deadline_pending(host) {
                self.v.deadline
            } else {
                0
            }),
            _ => None,
        }
    }

    /// WRMSR of one of the TSC MSRs; false if the write faults as it would on hardware.
    pub fn write_msr<V: Vcpu>(&mut self, vcpu: &mut V, msr: u32, value: u64) -> bool {
        match msr {
            IA32_TSC => {
                let now = vcpu.host().rdtsc();
                self.v.write_tsc(now, value);
            }
            IA32_TSC_ADJUST => self.v.write_adjust(value),
            IA32_TSC_DEADLINE => {
                self.v.deadline = value;
                if value == 0 {
                    self.deadline_host = 0;
                    return vcpu.host().wrmsr(IA32_TSC_DEADLINE, 0);
                }
                // In hide and frozen the switch arms it at the entry, for the offset it sets.
                if !self.v.hides_exits() {
                    self.program_deadline(vcpu.host());
                }
                return true;
            }
            _ => return false,
        }
        self.sync(vcpu);
        true
    }
}
