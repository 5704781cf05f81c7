//! Hidden time on several vCPUs: one rule that keeps their clocks coherent.
//!
//! Each vCPU hides its own exits, so each has its own *clock lag*: host time less the guest's
//! TSC, not counting the guest's own writes (`VirtualTsc::hidden`; the same origin on every
//! vCPU, `VirtualTsc::sibling`). A guest compares clocks across CPUs — Linux's TSC
//! synchronization check at every CPU's bring-up reads the TSC on two CPUs in turn under a lock
//! and calls any value behind one read earlier on the other a warp, and marks the TSC unstable.
//! The invariant kept here: **no value read on one vCPU is ever behind a value read earlier on
//! another** — with no allowance for the time one processor takes to see another's store: in
//! Bochs every processor reads the same TSC for a whole round of the emulator's scheduling, so
//! a lock handed over within a round is seen at the same tick.
//!
//! The rule, for a vCPU deciding at host time `now` (its plan, before the entry) the clock lag
//! it runs with until its next exit:
//!
//! - Each vCPU is, as the others see it, *running* with a lag (from its decision on), *stopped*
//!   (from just after an exit until its next decision) with a *mark*: the largest value it can
//!   have read, the guest's TSC at its exiting instruction — or *absent* (an application
//!   processor that never ran). A vCPU waiting for a start-up IPI stays stopped with the mark
//!   of its INIT: what it read before must not be overtaken by what others read later.
//! - **Running vCPUs share one lag.** With another running, the decider takes its lag exactly:
//!   the two clocks are then one, read in either order. (A vCPU that starts takes it too.)
//! - **A stopped vCPU's mark bounds every clock that runs.** The decider's first read comes at
//!   `now` or later, so its lag may be at most `now − mark` for every stopped vCPU.
//! - Otherwise the decider takes what it would take alone (its exit hidden, within the debt's
//!   cap, less a repayment step), never more than it can without going back on its own reads.
//!
//! Decisions and publication happen under one lock, and what is published is exact: on a
//! machine with several vCPUs the world switch takes exactly the planned amount (`limit`, with a
//! credit that makes its own measure never smaller: `super::Time::plan_shared`). A vCPU is published
//! running from its decision, before its entry, and stopped only from the loop's look at the
//! switch's report after its exit: in both gaps it runs no guest code, and being seen as
//! running is the stricter of the two.
//!
//! What it costs: time is hidden only while *no* vCPU runs guest code. An exit on one vCPU while
//! another runs shows in full (the running clock cannot lose it, so neither may this one); the
//! part of an exit during which every other vCPU was stopped too (a debugger stop, exits that
//! overlap) is hidden, and the vCPUs that follow take the same lag at their next entries.
//! Repayment works the same way: a lag lowered while the others are stopped is taken by each at
//! its next entry, and with several processors repayment is stepped (no TSC scaling: a rate
//! would change the clocks between entries).

use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};

/// vCPUs a machine may have (`crate::smp::MAX_VCPUS`).
pub const MAX_VCPUS: usize = crate::smp::MAX_VCPUS;

const ABSENT: u8 = 0;
const RUNNING: u8 = 1;
const STOPPED: u8 = 2;

/// How one vCPU's clock stands, as the others see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Never ran guest code.
    Absent,
    /// Runs (or is about to) with this clock lag.
    Running(i64),
    /// Stopped: it read at most this guest TSC value, less the common origin (host time less
    /// lag at its last exiting instruction).
    Stopped(u64),
}

struct Slot {
    state: AtomicU8,
    /// The lag (running) or the mark (stopped).
    value: AtomicU64,
}

/// What the vCPUs' decisions hid and showed, for the run's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shown {
    /// Entries that hid their whole exit (less its bare cost).
    pub whole: u64,
    /// Entries that hid less because of the bound on the lag or a repayment step: what they
    /// would have done alone.
    pub bounded: u64,
    /// Entries that hid less than they would alone, because another vCPU's clock ran on.
    pub others: u64,
    /// Host ticks those last entries showed beyond what they would alone.
    pub others_ticks: u64,
}
/// What a deciding vCPU wants, in clock lags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// What it would take alone.
    pub alone: i64,
    /// The most it may take without going back on its own reads.
    pub most: i64,
    /// The lag with its whole exit hidden (for the report).
    pub whole: i64,
}

/// The clocks of a machine's vCPUs, shared by all of them (in `crate::smp::Smp`).
pub struct Clocks {
    lock: AtomicBool,
    slots: [Slot; MAX_VCPUS],
    whole: AtomicU64,
    bounded: AtomicU64,
    others: AtomicU64,
    others_ticks: AtomicI64,
}

impl core::fmt::Debug for Clocks {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Clocks").finish_non_exhaustive()
    }
}

impl Default for Clocks {
    fn default() -> Self {
        Self::new()
    }
}

impl Clocks {
    pub const fn new() -> Clocks {
        Clocks {
            lock: AtomicBool::new(false),
            slots: [const {
                Slot {
                    state: AtomicU8::new(ABSENT),
                    value: AtomicU64::new(0),
                }
            }; MAX_VCPUS],
            whole: AtomicU64::new(0),
            bounded: AtomicU64::new(0),
            others: AtomicU64::new(0),
            others_ticks: AtomicI64::new(0),
        }
    }

    /// Runs `f` with the table locked.
    fn locked<R>(&self, f: impl FnOnce(&Self) -> R) -> R {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        let r = f(self);
        self.lock.store(false, Ordering::Release);
        r
    }

    fn set(&self, me: usize, clock: Clock) {
        let (state, value) = match clock {
            Clock::Absent => (ABSENT, 0),
            Clock::Running(lag) => (RUNNING, lag as u64),
            Clock::Stopped(mark) => (STOPPED, mark),
        };
        let slot = &self.slots[me % MAX_VCPUS];
        slot.value.store(value, Ordering::Relaxed);
        slot.state.store(state, Ordering::Relaxed);
    }

    /// vCPU `me`'s clock as published.
    pub fn get(&self, me: usize) -> Clock {
        let slot = &self.slots[me % MAX_VCPUS];
        let value = slot.value.load(Ordering::Relaxed);
        match slot.state.load(Ordering::Relaxed) {
            RUNNING => Clock::Running(value as i64),
            STOPPED => Clock::Stopped(value),
            _ => Clock::Absent,
        }
    }

    /// vCPU `me` runs guest code from the start with clock lag `lag` (the boot vCPU).
    pub fn start_running(&self, me: usize, lag: i64) {
        self.locked(|c| c.set(me, Clock::Running(lag)));
    }

    /// vCPU `me` left the guest: it read at most `mark` (host time of its exiting instruction
    /// less its lag).
    pub fn stopped(&self, me: usize, mark: u64) {
        self.locked(|c| c.set(me, Clock::Stopped(mark)));
    }

    /// vCPU `me` decides its clock lag from its next entry to the exit after it. `want` reads
    /// the host time of the decision and says what the vCPU wants then ([`Want`]); it runs under
    /// the lock, after the others' clocks are read, so that the time the lock and the table
    /// take is before the decision's timestamp, where the vCPU's own exit hides it. Returns
    /// that timestamp and the lag, published as running (the module's rule).
    pub fn decide(&self, me: usize, want: impl FnOnce() -> (u64, Want)) -> (u64, i64) {
        self.locked(|c| {
            let mut running: Option<i64> = None;
            let mut latest: Option<u64> = None;
            for j in (0..MAX_VCPUS).filter(|&j| j != me % MAX_VCPUS) {
                match c.get(j) {
                    Clock::Absent => {}
                    Clock::Running(lag) => running = Some(running.map_or(lag, |r| r.min(lag))),
                    Clock::Stopped(mark) => {
                        latest = Some(match latest {
                            Some(m) if (mark.wrapping_sub(m) as i64) <= 0 => m,
                            _ => mark,
                        })
                    }
                }
            }
            let (now, w) = want();
            let ceiling = match latest {
                Some(mark) => w.most.min(now.wrapping_sub(mark) as i64),
                None => w.most,
            };
            let lag = running.unwrap_or(w.alone).min(ceiling);
            c.set(me, Clock::Running(lag));
            if w.alone >= w.whole && lag >= w.whole {
                c.whole.fetch_add(1, Ordering::Relaxed);
            } else if lag >= w.alone {
                c.bounded.fetch_add(1, Ordering::Relaxed);
            } else {
                c.others.fetch_add(1, Ordering::Relaxed);
                c.others_ticks
                    .fetch_add(w.alone.saturating_sub(lag), Ordering::Relaxed);
            }
            (now, lag)
        })
    }

    /// What the decisions hid and showed so far.
    pub fn shown(&self) -> Shown {
        Shown {
            whole: self.whole.load(Ordering::Relaxed),
            bounded: self.bounded.load(Ordering::Relaxed),
            others: self.others.load(Ordering::Relaxed),
            others_ticks: self.others_ticks.load(Ordering::Relaxed).max(0) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(now: u64, alone: i64, most: i64, whole: i64) -> impl FnOnce() -> (u64, Want) {
        move || (now, Want { alone, most, whole })
    }

    #[test]
    fn a_vcpu_alone_takes_what_it_wants_and_a_running_one_pins_the_others() {
        let c = Clocks::new();
        assert_eq!(c.decide(0, want(1000, 300, 400, 300)).1, 300, "alone");
        assert_eq!(
            c.decide(0, want(1000, 500, 400, 500)).1,
            400,
            "never back on itself"
        );
        assert_eq!(
            c.decide(0, want(1000, 350, 400, 500)).1,
            350,
            "within the bound"
        );
        // vCPU 1 runs with lag 400: vCPU 0 takes exactly that, up or down.
        c.start_running(1, 400);
        assert_eq!(c.decide(0, want(2000, 900, 1000, 900)).1, 400);
        assert_eq!(
            c.decide(0, want(2000, 100, 1000, 900)).1,
            400,
            "repaid only with the other"
        );
        assert_eq!(
            c.shown(),
            Shown {
                whole: 1,
                bounded: 2,
                others: 2,
                others_ticks: 600
            }
        );
    }

    #[test]
    fn a_stopped_vcpu_bounds_the_others_by_its_mark() {
        let c = Clocks::new();
        // vCPU 1 read at most 10_000 (host 10_500, lag 500) before it stopped.
        c.stopped(1, 10_000);
        // At host 10_600 vCPU 0 may lag at most 600: its first read is at 10_600 or later.
        assert_eq!(c.decide(0, want(10_600, 2_000, i64::MAX, 2_000)).1, 600);
        // Later the bound is looser.
        assert_eq!(c.decide(0, want(20_000, 2_000, i64::MAX, 2_000)).1, 2_000);
        // vCPU 1 decides next: it takes vCPU 0's lag, whatever it would take alone.
        assert_eq!(c.decide(1, want(20_100, 700, i64::MAX, 700)).1, 2_000);
        assert_eq!(c.get(1), Clock::Running(2_000));
    }
}
