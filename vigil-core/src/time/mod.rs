//! Time as the guest sees it — the one home for virtual time.
//!
//! - [`tsc`]: the guest's TSC as a function of the host's (offset, scaling), and its lag behind
//!   true time.
//! - [`cost`]: what each exiting instruction costs on bare metal, which `hide` leaves visible.
//! - [`debt`]: repaying the lag, within bounds.
//! - [`smp`]: the rule that keeps several vCPUs' clocks coherent.
//! - this module: the per-vCPU state around them, what the world switch must do at each entry
//!   ([`Time::plan`], [`EntryTime`]) and take back at each exit ([`Time::after_exit`]), and the
//!   guest's time MSRs (IA32_TSC, IA32_TSC_ADJUST, the TSC deadline, IA32_MPERF and IA32_APERF),
//!   which are Vigil's whenever they must follow the virtual TSC.
//!
//! What stays in a backend is what only hardware can do: the world switch's own arithmetic
//! (in assembly, as late as possible before the entry: [`EntryTime::apply`] is the same
//! arithmetic in Rust) and the boot-time calibration of the round trip and the bare costs.

pub mod cost;
pub mod debt;
pub mod smp;
pub mod tsc;

use crate::config::TscMode;
use crate::exit::{Action, Exit};
use crate::owners::{IA32_APERF, IA32_MPERF, IA32_TSC, IA32_TSC_ADJUST, IA32_TSC_DEADLINE};
use crate::vcpu::{Host, Vcpu};
use cost::Cost;
use debt::Debt;
use tsc::{VirtualTsc, UNITY};

/// The guest's view of its time-stamp counter.
#[derive(Debug)]
pub struct Time {
    pub v: VirtualTsc,
    /// The last value Vigil's RDTSC/RDTSCP emulation returned (for the confirm-tsc hypercall).
    pub last_emulated: Option<u64>,
    /// The host TSC value the guest's deadline was last programmed for (0: none).
    pub deadline_host: u64,
    /// `hide`'s repayment (`None` in other modes).
    pub debt: Option<Debt>,
    /// What the handler of the exit being handled noted about it for its bare cost: CPUID's
    /// leaf, the elements a string I/O moved.
    pub detail: u32,
    /// The kind of the last exit, for the next entry's credit (`None`: no exit yet).
    last: Option<Cost>,
    /// Whether this vCPU may use the backend's poll timer (not while the debugger owns it).
    pub timer_free: bool,
    /// What this vCPU last gave the backend's timer (`None`: disarmed).
    timer_set: Option<u64>,
    /// The backend has a poll timer (until it says otherwise).
    timer_works: bool,
    /// IA32_MPERF and IA32_APERF, once the host is known to have them.
    perf: Option<PerfCounters>,
    /// The largest lag seen at an exit (for the run's report).
    pub largest_lag: i64,
    /// Everything the switch took out of the offset (for the run's report).
    hidden_total: u64,
    /// The guest's TSC is scaled in software: every read of it exits and is emulated
    /// ([`Time::scaled_in_software`]).
    soft_scaled: bool,
    /// On a machine of several vCPUs: the clocks they share ([`Time::share`]).
    shared: Option<Shared>,
    /// Waiting for a start-up IPI ([`Time::waiting`]).
    waiting: bool,
}

/// This vCPU's place among the clocks of a machine of several vCPUs (`smp`).
#[derive(Clone, Copy, Debug)]
struct Shared {
    clocks: &'static smp::Clocks,
    me: usize,
    /// The largest value this vCPU can have read, less the common origin, as of its last exit
    /// from guest code (`None`: it never ran): what it must never go back on, through an INIT
    /// and a start-up too.
    mark: Option<u64>,
    /// The entry being planned runs guest code (not a wait for a start-up IPI).
    in_guest: bool,
}

/// What the guest's IA32_MPERF and IA32_APERF need beyond the host's values.
#[derive(Clone, Copy, Debug, Default)]
struct PerfCounters {
    /// The hidden time at the guest's first read: only what is hidden after it is taken off,
    /// so the first read is the host's value.
    base: Option<u64>,
    /// The host's last value of each, to tell a counter that stands still (an emulator that
    /// reports the counters without running them): the guest then reads it as it is.
    last: [Option<u64>; 2],
    /// What the guest's writes moved each by.
    writes: [u64; 2],
}

/// What the world switch does about time at one entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryTime {
    /// Take this exit's host time out of the offset as the last step before the entry, then
    /// re-arm the deadline for the new offset ([`EntryTime::apply`]).
    pub hide: bool,
    /// Ticks taken off beyond the handling time: the round trip no timestamp covers, less the
    /// exiting instruction's bare cost and any repayment step (wrapping: may give time back).
    pub credit: u64,
    /// The most one entry may take off (an `i64`; `i64::MAX` for no limit): the debt's cap.
    pub limit: u64,
    pub offset: u64,
    /// The guest's TSC multiplier when it is not 1 (0 for 1): the handling time is taken off at
    /// the rate the guest's TSC runs.
    pub multiplier: u64,
    /// The guest's TSC deadline (0: none), re-armed by the switch in host time.
    pub deadline: u64,
}

impl EntryTime {
    /// The switch's arithmetic (VMX: `vmx_run` in `vigil/src/intel/switch.rs`, in assembly):
    /// for an exit stamped `exit_tsc` and the entry's last timestamp `now`, the new TSC offset
    /// and the host time to arm the deadline timer for (`None`: no deadline).
    pub fn apply(&self, exit_tsc: u64, now: u64) -> (u64, Option<u64>) {
        let mut hidden = now.wrapping_sub(exit_tsc);
        if self.multiplier != 0 {
            hidden = tsc::scale_by(self.multiplier, hidden);
        }
        let hidden = (hidden.wrapping_add(self.credit) as i64).min(self.limit as i64) as u64;
        let offset = self.offset.wrapping_sub(hidden);
        if self.deadline == 0 {
            return (offset, None);
        }
        let scaled = self.deadline.wrapping_sub(offset);
        let host = if self.multiplier == 0 {
            scaled
        } else {
            ((scaled as u128) << 48).div_ceil(self.multiplier as u128) as u64
        };
        (offset, Some(host.max(1)))
    }
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

impl Time {
    pub fn new(v: VirtualTsc) -> Time {
        let debt = match v.mode {
            TscMode::Hide(limit) => Some(Debt::new(limit, v.calibration.tsc_hz, false)),
            _ => None,
        };
        Time {
            v,
            last_emulated: None,
            deadline_host: 0,
            debt,
            detail: 0,
            last: None,
            timer_free: true,
            timer_set: None,
            timer_works: true,
            perf: None,
            largest_lag: 0,
            hidden_total: 0,
            soft_scaled: false,
            shared: None,
            waiting: false,
        }
    }

    /// This vCPU (`me`) is one of several that share `clocks` (`smp`): from now on its entries
    /// hide exactly what the machine's rule allows, and it repays in steps (no rate: a scaled
    /// clock changes between entries, where nobody decides). `running`: it runs guest code
    /// from the start (the boot vCPU), at host time `now`.
    pub fn share(&mut self, clocks: &'static smp::Clocks, me: usize, running: bool, now: u64) {
        if !self.v.hides_exits() {
            return;
        }
        self.calibrated(false);
        if running {
            clocks.start_running(me, self.v.hidden(now) as i64);
        }
        self.shared = Some(Shared {
            clocks,
            me,
            mark: None,
            in_guest: false,
        });
    }

    /// The vCPU waits for a start-up IPI (`yes`, from its INIT) or was started by one: an
    /// entry that waits runs no guest code, so it takes nothing and its clock stays stopped
    /// where its INIT left it.
    pub fn waiting(&mut self, yes: bool) {
        self.waiting = yes;
    }

    /// [`Time::calibrated`] for a backend that scales the guest's TSC in software: every read
    /// of it (RDTSC, RDTSCP, RDMSR of IA32_TSC) exits and is emulated at [`VirtualTsc::guest_at`],
    /// so repayment can run the clock fast without hardware. Such a backend may have no timer
    /// to end repayment when the debt is paid; [`Time::after_exit`] then sets a clock that ran
    /// past true time back to it at every exit, before any handler reads it.
    pub fn scaled_in_software(&mut self) {
        self.soft_scaled = true;
        self.calibrated(true);
    }

    /// The boot calibration is in `v.calibration`, and the backend can (`scaling`) or cannot
    /// scale the guest's TSC: size the debt's budget for this machine.
    pub fn calibrated(&mut self, scaling: bool) {
        if let TscMode::Hide(limit) = self.v.mode {
            self.debt = Some(Debt::new(limit, self.v.calibration.tsc_hz, scaling));
        }
    }

    /// Records the exit just handled (its kind decides the next entry's credit). Only the
    /// hiding modes look at it.
    #[inline]
    pub fn exited(&mut self, exit: &Exit, action: &Action) {
        if self.v.hides_exits() {
            self.last = Some(cost::cost_of(exit, action, self.detail));
        }
    }

    /// The world switch's time bookkeeping for the next entry, after an exit stamped
    /// `exit_tsc`: in `hide` and `frozen` the switch takes the exit's host time out of the offset
    /// itself, as late as it can, and re-arms the guest's TSC deadline for that offset. `hide`
    /// leaves the instruction's bare cost in, bounds what it takes, and repays.
    #[inline]
    pub fn plan<V: Vcpu>(&mut self, vcpu: &mut V, exit_tsc: u64) -> EntryTime {
        match self.last {
            Some(cost) if self.v.hides_exits() => self.plan_hidden(vcpu, exit_tsc, cost),
            _ => EntryTime::default(),
        }
    }

    fn plan_hidden<V: Vcpu>(&mut self, vcpu: &mut V, exit_tsc: u64, cost: Cost) -> EntryTime {
        // What the switch takes beyond the handling time: the round trip no timestamp covers
        // (of the path it takes: scaled or not, a deadline to re-arm or not), at the rate the
        // guest's TSC runs, less what the exiting instruction costs on bare metal (in `hide`;
        // `frozen` keeps nothing) and what repayment gives back.
        let trips = self.v.calibration.round_trip;
        let trip = |v: &VirtualTsc| tsc::round_trip_of(&trips, v.multiplier, v.deadline != 0);
        let mut less = 0u64;
        let mut limit = i64::MAX;
        if self.debt.is_some() {
            let bare = self.v.calibration.costs.ticks(cost);
            let now = vcpu.host().rdtsc();
            // (Looked at after the timestamp: one processor's exits take no longer for it.)
            if let Some(shared) = self.shared {
                return self.plan_shared(vcpu, exit_tsc, cost, shared, trip(&self.v));
            }
            let Some(debt) = self.debt.as_mut() else {
                unreachable!("checked above")
            };
            // The lag now (while repaying it shrank during the exit too, which the switch takes
            // back at the guest's rate), and what the switch would take: the bound applies to
            // the two together.
            let lag = self.v.lag(now);
            self.largest_lag = self.largest_lag.max(lag);
            let so_far = tsc::scale_by(self.v.multiplier, now.wrapping_sub(exit_tsc));
            let hidden = so_far.wrapping_add(trip(&self.v)).wrapping_sub(bare) as i64;
            let plan = debt.plan(lag, hidden, now);
            limit = plan.limit;
            less = bare.wrapping_add(plan.step);
            let mut timer = plan.timer;
            // The rate changes only at an exit the guest did not cause (the timer's), so the
            // few ticks a change may show never fall into a probe around an instruction the
            // guest times: at an instruction's exit the timer is set to end the guest's next
            // stretch of 1 ms without exits instead — a burst of exits keeps putting it off,
            // and the change comes once the burst is over. (Without a timer, the next exit of
            // any kind changes it.)
            let change = plan.multiplier != self.v.multiplier;
            if change && cost != Cost::Nothing && self.timer_free && self.timer_works {
                timer = Some(debt.settle());
            } else if change {
                // The switch takes the whole exit out at the new rate, but until `now` the
                // guest's clock ran at the old one: correct by the difference. Two more ticks
                // cover the rounding of the scaled values involved, so the exit never looks
                // shorter than bare metal's (at most 4 ticks longer, once per change).
                let so_far = now.wrapping_sub(exit_tsc);
                let old = tsc::scale_by(self.v.multiplier, so_far);
                let new = tsc::scale_by(plan.multiplier, so_far);
                less = less.wrapping_add(new.wrapping_sub(old)).wrapping_add(2);
                self.v.set_multiplier(plan.multiplier, now);
                vcpu.set_tsc_multiplier(plan.multiplier);
            }
            // The timer counts down from its value at every entry: the same value need not be
            // given again.
            if self.timer_free && timer != self.timer_set {
                let armed = vcpu.set_poll_timer(timer);
                self.timer_works &= armed;
                self.timer_set = if armed { timer } else { None };
            }
        }
        EntryTime {
            hide: true,
            credit: trip(&self.v).wrapping_sub(less),
            limit: limit as u64,
            offset: self.v.offset,
            multiplier: if self.v.multiplier == UNITY {
                0
            } else {
                self.v.multiplier
            },
            deadline: self.v.deadline,
        }
    }

    /// [`Time::plan_hidden`] on a machine of several vCPUs: the new clock lag is decided under
    /// the machine's lock (`smp::Clocks::decide`) and the switch takes exactly that much out of
    /// the TSC offset (which the processor adds to every guest read, SDM Vol. 3C 26.3). Its
    /// own measure of the exit, `now − exit_tsc + credit` at its last timestamp, is made never
    /// smaller than the amount (the credit is the amount less the exit's time up to the
    /// decision's timestamp), so its `min(…, limit)` is the limit: what the others see is what
    /// this vCPU runs with. The cost: the time from the decision's timestamp to the switch's
    /// shows, which alone the switch would take too.
    fn plan_shared<V: Vcpu>(
        &mut self,
        vcpu: &mut V,
        exit_tsc: u64,
        cost: Cost,
        shared: Shared,
        trip: u64,
    ) -> EntryTime {
        if self.waiting {
            if let Some(s) = self.shared.as_mut() {
                s.in_guest = false;
            }
            return EntryTime::default();
        }
        let bare = self.v.calibration.costs.ticks(cost);
        // In clock lags (host time less the guest's TSC, the same origin on every vCPU); the
        // multiplier stays 1 (`Time::share`), so it does not move between entries.
        let clock = self.v.hidden(exit_tsc) as i64;
        let tail = trip.wrapping_sub(self.v.calibration.exit_lag);
        let (v, debt, largest) = (&self.v, &mut self.debt, &mut self.largest_lag);
        let (now, decided) = shared.clocks.decide(shared.me, || {
            let now = vcpu.host().rdtsc();
            let so_far = now.wrapping_sub(exit_tsc);
            let lag = v.lag(now);
            *largest = (*largest).max(lag);
            // What this vCPU would hide alone, as `plan_hidden` computes it (repayment stepped).
            let natural = so_far.wrapping_add(trip).wrapping_sub(bare) as i64;
            let mut wanted = natural;
            if let Some(debt) = debt.as_mut() {
                let plan = debt.plan(lag, natural, now);
                wanted = natural.min(plan.limit).saturating_sub(plan.step as i64);
            }
            // Never back on this vCPU's own reads: its next read comes at least the part of
            // the round trip after the switch's timestamp after `now` (as alone, where the
            // switch takes up to the whole round trip beyond the handling time).
            let most = match shared.mark {
                Some(mark) => now.wrapping_add(tail).wrapping_sub(mark) as i64,
                None => i64::MAX,
            };
            let want = smp::Want {
                alone: clock.saturating_add(wanted),
                most,
                whole: clock.saturating_add(natural),
            };
            (now, want)
        });
        let so_far = now.wrapping_sub(exit_tsc);
        let amount = decided.wrapping_sub(clock);
        if let Some(s) = self.shared.as_mut() {
            s.in_guest = true;
        }
        EntryTime {
            hide: true,
            credit: (amount as u64).wrapping_sub(so_far),
            limit: amount as u64,
            offset: self.v.offset,
            multiplier: 0,
            deadline: self.v.deadline,
        }
    }

    /// What every vCPU of this machine hid and showed (`None`: one vCPU, or not hiding).
    pub fn shared_report(&self) -> Option<smp::Shown> {
        self.shared.map(|s| s.clocks.shown())
    }

    /// A line for the end of the run: what the hiding modes hid and still owe.
    pub fn report(&self, host_now: u64) -> Option<alloc::string::String> {
        self.v.hides_exits().then(|| {
            let mut line = alloc::format!(
                "virtual time: {} ticks hidden from the TSC in all, {} still owed at the end \
                 (the rest repaid or forgiven), {} owed at most",
                self.hidden_total as i64,
                self.v.lag(host_now),
                self.largest_lag
            );
            if let Some(s) = self.shared_report() {
                line.push_str(&alloc::format!(
                    "\nvirtual time on several vCPUs: {} entries hid their whole exit, {} less \
                     for the bound or a repayment step, {} less for another vCPU's clock ({} \
                     ticks shown for it)",
                    s.whole,
                    s.bounded,
                    s.others,
                    s.others_ticks
                ));
            }
            line
        })
    }

    /// After an exit (stamped `exit_tsc`) from a hiding entry: take over the offset the switch
    /// computed, and retire the guest's deadline if the timer fired before the stub stopped it.
    pub fn after_exit(&mut self, hidden: &HiddenTime, exit_tsc: u64) {
        // What the entry took (its offset less the switch's), for the rate repayment follows:
        // the guest's own exits only — the timer's exist for repayment, and counting them
        // would keep it going.
        let took = self.v.offset.wrapping_sub(hidden.offset);
        self.hidden_total = self.hidden_total.wrapping_add(took);
        if let (Some(debt), Some(cost)) = (self.debt.as_mut(), self.last) {
            if cost != Cost::Nothing {
                debt.count(took as i64, exit_tsc);
            }
        }
        self.v.offset = hidden.offset;
        let d = self.v.deadline;
        if d != 0 && hidden.deadline_armed && self.v.guest_at(hidden.disarm_tsc) >= d {
            self.v.deadline = 0;
        }
        if self.soft_scaled {
            self.catch_up(exit_tsc);
        } else if let Some(s) = self.shared.as_mut() {
            // Out of guest code: the others now see this clock stopped at its exiting
            // instruction. (Only VMX runs several vCPUs.)
            if s.in_guest {
                let at = self.v.instruction_time(exit_tsc);
                let mark = at.wrapping_sub(self.v.hidden(at));
                s.mark = Some(mark);
                s.clocks.stopped(s.me, mark);
            }
        }
    }

    /// A clock scaled in software that ran fast since the last exit may have passed true time
    /// (no timer ended repayment when the debt was paid): set it back to true time at the
    /// exiting instruction. The guest cannot have seen the excess — every read exits, and at
    /// each one the lag was at least 0 — so what it reads next is still later than anything it
    /// read before: the clock never goes backwards, and is never ahead.
    fn catch_up(&mut self, exit_tsc: u64) {
        if self.v.multiplier == UNITY {
            return;
        }
        let lag = self.v.lag(self.v.instruction_time(exit_tsc));
        if lag < 0 {
            self.v.offset = self.v.offset.wrapping_add(lag as u64);
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

    /// Vigil held the guest for `held` host ticks (a debugger stop, the hold hypercall):
    /// `frozen` and `hide` take the whole exit out at the next entry and owe nothing for it; an
    /// offset alone needs the stop taken out here (SDM Vol. 3C 26.3).
    pub fn held<V: Vcpu>(&mut self, vcpu: &mut V, held: u64) {
        if self.v.hides_exits() {
            self.v.forgive(held);
        } else if self.v.mode.virtualized() {
            self.v.offset = self.v.offset.wrapping_sub(held);
            self.sync(vcpu);
        }
    }

    /// In `hide` and `frozen`: `held` host ticks of the exit being handled were a stop (the
    /// hold hypercall), hidden and never repaid.
    pub fn forgive(&mut self, held: u64) {
        if self.v.hides_exits() {
            self.v.forgive(held);
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

    /// Whether the processor has IA32_MPERF and IA32_APERF (CPUID.06H:ECX[0], SDM Vol. 3B
    /// 15.2), asked once.
    fn perf_counters<H: Host>(&mut self, host: &mut H) -> Option<&mut PerfCounters> {
        if self.perf.is_none() && host.cpuid(0, 0)[0] >= 6 && host.cpuid(6, 0)[2] & 1 != 0 {
            self.perf = Some(PerfCounters::default());
        }
        self.perf.as_mut()
    }

    /// The guest's IA32_MPERF or IA32_APERF at an exit stamped `exit_tsc`: the host's, less the
    /// time hidden since the guest first read one; as the host's where the processor does not
    /// have them or they stand still.
    fn read_perf<H: Host>(&mut self, host: &mut H, msr: u32, exit_tsc: u64) -> Option<u64> {
        let hidden = self.v.hidden(self.v.instruction_time(exit_tsc));
        let value = host.rdmsr(msr)?;
        let i = (msr - IA32_MPERF) as usize & 1;
        let Some(p) = self.perf_counters(host) else {
            return Some(value);
        };
        let still = p.last[i] == Some(value);
        p.last[i] = Some(value);
        if still {
            return Some(value);
        }
        let base = *p.base.get_or_insert(hidden);
        Some(
            value
                .wrapping_sub(hidden.wrapping_sub(base))
                .wrapping_add(p.writes[i]),
        )
    }

    /// RDMSR of one of the time MSRs, at an exit stamped `exit_tsc`.
    pub fn read_msr<H: Host>(&mut self, host: &mut H, msr: u32, exit_tsc: u64) -> Option<u64> {
        match msr {
            IA32_TSC => Some(self.v.guest_at_exit(exit_tsc)),
            IA32_TSC_ADJUST => Some(self.v.adjust),
            IA32_TSC_DEADLINE => Some(if self.deadline_pending(host) {
                self.v.deadline
            } else {
                0
            }),
            // MPERF counts at the TSC's rate while the processor runs, APERF at its actual
            // rate (SDM Vol. 3B 15.2): both lose the time the TSC lost, so the guest's
            // APERF/MPERF and MPERF/TSC ratios are bare metal's (APERF at the nominal rate for
            // the hidden time).
            // MPERF counts at the TSC's rate while the processor runs, APERF at its actual
            // rate (SDM Vol. 3B 15.2): both lose the time the TSC lost, so the guest's
            // APERF/MPERF and MPERF/TSC ratios are bare metal's (APERF at the nominal rate for
            // the hidden time).
            IA32_MPERF | IA32_APERF => self.read_perf(host, msr, exit_tsc),
            _ => None,
        }
    }

    /// WRMSR of one of the time MSRs at an exit stamped `exit_tsc`; false if the write faults as
    /// it would on hardware.
    pub fn write_msr<V: Vcpu>(
        &mut self,
        vcpu: &mut V,
        msr: u32,
        value: u64,
        exit_tsc: u64,
    ) -> bool {
        match msr {
            // The write happens when the instruction executes, not when Vigil gets to it: the
            // guest's next read is `value` plus what it ran since (and in `hide`, plus
            // WRMSR's bare cost), as on bare metal.
            IA32_TSC => {
                let at = self.v.instruction_time(exit_tsc);
                self.v.write_tsc(at, value);
            }
            IA32_TSC_ADJUST => self.v.write_adjust(value),
            IA32_TSC_DEADLINE => {
                // Only a processor with the TSC-deadline timer has the MSR (CPUID.01H:ECX[24],
                // SDM Vol. 3A 12.5.4.1); the switch would otherwise write it on the host.
                if vcpu.host().cpuid(1, 0)[2] & (1 << 24) == 0 {
                    return false;
                }
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
            IA32_MPERF | IA32_APERF => {
                let Some(now) = self.read_perf(vcpu.host(), msr, exit_tsc) else {
                    return false;
                };
                let i = (msr - IA32_MPERF) as usize & 1;
                return match self.perf_counters(vcpu.host()) {
                    Some(p) => {
                        p.writes[i] = p.writes[i].wrapping_add(value.wrapping_sub(now));
                        true
                    }
                    None => vcpu.host().wrmsr(msr, value),
                };
            }
            _ => return false,
        }
        self.sync(vcpu);
        true
    }
}

#[cfg(test)]
mod smp_tests;
#[cfg(test)]
mod tests;
