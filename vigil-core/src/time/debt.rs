//! Repaying what `tsc=hide` hides, so the guest's TSC stays true over long times.
//!
//! Each exit the switch hides makes the guest's TSC lag true time (the PIT, the ACPI PM timer,
//! the RTC, the host's TSC) by that exit's overhead. Left alone the lag only grows: an
//! exit-heavy guest would see its TSC run slow against every other clock, which a detector (or
//! Linux's clocksource watchdog) measures over a second or two. So the lag is a debt, repaid
//! under these rules:
//!
//! - **Never backwards, no step a short probe can see.** With TSC scaling the guest's TSC runs
//!   `1 + 2^-s` times the host rate while it owes more than [`Debt::start`]: the clock speeds
//!   up, it never jumps, and a probe of n ticks reads at most n/2^s ticks more (and, across an
//!   exit, a tick of the scaled counter's rounding). `s` follows how much the guest has lately
//!   hidden: 11 (0.049 % fast) when it hides little, down to 5 (3.1 %) right after a burst or
//!   for a guest that keeps exiting, so that what a window hides, the next one repays. Repayment accrues only while the
//!   guest runs (the switch takes exits out at the fast rate), and the backend's timer ends it
//!   when the debt is paid, so the guest is never ahead of true time. Without TSC scaling the
//!   debt is repaid in steps at the backend's timer exit (or, without a timer, at the next
//!   exit), one per [`Debt::period`] of `2^-11` of that period: such a step shows to a probe
//!   that straddles it, like an interrupt a real machine takes now and then.
//! - **True over a second**: the TSC runs fast only to repay what it lost, at 1.25 times the
//!   rate it lost it lately, so a guest that spends up to 2.5 % of its time in exits keeps its
//!   TSC within 0.1 % of true time over every second; a quiet stretch after a storm repays at
//!   0.049 % (the rate is looked at again every 1/8 s).
//! - **Bounded** (`tsc=hide`): the lag never exceeds [`Debt::cap`], [`MAX_LAG_PPM`]
//!   millionths of a second (250 µs), so between any two moments the guest's TSC and the
//!   platform's clocks disagree by less than that: Linux's clocksource watchdog (which allows
//!   400 µs between two checks half a second apart) never objects, and over any window of a
//!   second or more the TSC's rate is true within 0.025 %. The price: a burst of exits whose
//!   overhead exceeds the budget shows, exit by exit, until repayment makes room (on hardware a
//!   CPUID exit costs a microsecond or two, so the budget holds some 150 of them; in Bochs,
//!   where one costs some 600 instructions at 50 M a second, about 20). `tsc=hide:unbounded`
//!   hides every exit and lets the lag grow during a storm of exits.
//! - **Coherent across vCPUs** (`super::smp`): on a machine of several vCPUs what this plan
//!   would take is only what the vCPU wants; the machine's rule decides what it gets, and
//!   repayment is stepped.

use crate::config::HideLimit;

/// Repayment runs the TSC `1 + 2^-REPAY_SHIFT` times fast when the guest has lately hidden
/// little: 1/2048, 0.049 % — half the 0.1 % a second-long comparison resolves, so a quiet
/// window spent entirely repaying an old debt stays within it.
pub const REPAY_SHIFT: u32 = 11;
/// The fastest repayment, `1 + 2^-FASTEST_SHIFT` (3.1 %), right after a burst of exits: the
/// rate follows the hidden share of the last [`RATE_WINDOW_PPM`], so over a window where exits
/// keep coming (Linux reads IA32_APERF and IA32_MPERF at every tick) the TSC gains what it
/// loses and keeps true time, and a burst is repaid within milliseconds of guest time; a short
/// probe still reads its bare cost (n ticks read at most n/32 more, and only just after a
/// burst).
pub const FASTEST_SHIFT: u32 = 5;
/// The window over which the rate of hiding is measured (1/16 s).
pub const RATE_WINDOW_PPM: u64 = 62_500;
/// The multiplier of the slowest repayment (16.48 fixed point, as TSC scaling takes it).
pub const FAST: u64 = super::tsc::UNITY + (super::tsc::UNITY >> REPAY_SHIFT);
/// The multiplier of the fastest; every multiplier Vigil sets lies between 1 and this.
pub const FASTEST: u64 = super::tsc::UNITY + (super::tsc::UNITY >> FASTEST_SHIFT);
/// The bound on the lag under `tsc=hide`, in millionths of a second of TSC time (250 µs): less
/// than the 400 µs Linux's clocksource watchdog allows between two checks (twice its
/// 100 µs `WATCHDOG_MAX_SKEW` for each of the two clocks it compares, kernel/time/clocksource.c),
/// with room for the watchdog's own reading.
pub const MAX_LAG_PPM: u64 = 250;
/// Repayment starts once the guest owes this much (20 µs of TSC time), and stops below half
/// of it: the timer exit that ends a repayment is hidden too, and must not start another.
pub const START_PPM: u64 = 20;
/// Without TSC scaling: one repayment step per this long (100 ms).
pub const STEP_PERIOD_PPM: u64 = 100_000;
/// The TSC frequency assumed when the backend could not measure it.
pub const FALLBACK_HZ: u64 = 1_000_000_000;

/// The repayment state of one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Debt {
    /// The largest lag allowed (`u64::MAX`: unbounded), in host ticks.
    pub cap: u64,
    /// Repay once the lag exceeds this; stop below half of it.
    pub start: u64,
    /// The backend can scale the guest's TSC (repay continuously).
    pub scaling: bool,
    /// Without scaling: the time between two steps, and the largest step.
    pub period: u64,
    pub step: u64,
    /// Repaying now (scaling: the TSC runs fast).
    pub repaying: bool,
    /// Host time of the last step (without scaling).
    last_step: u64,
    /// The rate window: its length, when the current one started, what was hidden in it, and
    /// what was hidden in the last full one.
    window: u64,
    window_start: u64,
    window_hidden: u64,
    last_window_hidden: u64,
}

/// What the switch does about the debt at one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebtPlan {
    /// The most this entry may hide (signed host ticks; `i64::MAX`: no limit).
    pub limit: i64,
    /// Ticks to give back beyond hiding less (a step, without scaling).
    pub step: u64,
    /// The multiplier the guest runs at next.
    pub multiplier: u64,
    /// Ask the backend for an exit after this much guest run time (`None`: not needed).
    pub timer: Option<u64>,
}

impl Debt {
    pub fn new(limit: HideLimit, tsc_hz: u64, scaling: bool) -> Debt {
        let hz = if tsc_hz == 0 { FALLBACK_HZ } else { tsc_hz };
        let ppm = |n: u64| (hz as u128 * n as u128 / 1_000_000) as u64;
        let period = ppm(STEP_PERIOD_PPM);
        Debt {
            cap: match limit {
                HideLimit::Bounded => ppm(MAX_LAG_PPM),
                HideLimit::Unbounded => u64::MAX,
            },
            start: ppm(START_PPM),
            scaling,
            period,
            step: period >> REPAY_SHIFT,
            repaying: false,
            last_step: 0,
            window: ppm(RATE_WINDOW_PPM).max(1),
            window_start: 0,
            window_hidden: 0,
            last_window_hidden: 0,
        }
    }

    /// How fast to repay: `2^-shift` of the guest's run time, at least 1.25 times the share of
    /// time hidden lately — in the last full window, or in the current one so far (counted as at
    /// least an eighth of a window, so a burst just now repays at once) —, between
    /// [`FASTEST_SHIFT`] and [`REPAY_SHIFT`].
    pub fn shift_at(&self, now: u64) -> u32 {
        let elapsed = now
            .wrapping_sub(self.window_start)
            .clamp(self.window / 8, self.window);
        // (In 64 bits whenever the product fits, as it does for any window of under a second.)
        let current = match self.window_hidden.checked_mul(self.window) {
            Some(p) => p / elapsed.max(1),
            None => (self.window_hidden as u128 * self.window as u128 / elapsed.max(1) as u128)
                .min(u64::MAX as u128) as u64,
        };
        let recent = if now.wrapping_sub(self.window_start) >= 2 * self.window {
            0
        } else {
            self.last_window_hidden.max(current)
        };
        let need = recent.saturating_mul(5) / 4;
        // The largest shift with need << shift no more than the window: need * 2^s <= window
        // exactly when 2^s <= window / need (rounded down).
        match self.window.checked_div(need) {
            None => REPAY_SHIFT,
            Some(0) => FASTEST_SHIFT,
            Some(q) => (63 - q.leading_zeros()).clamp(FASTEST_SHIFT, REPAY_SHIFT),
        }
    }

    /// Host time of the last repayment step (without scaling; 0: none yet).
    pub fn last_step(&self) -> u64 {
        self.last_step
    }

    /// How long the guest runs without an exit before a pending change of rate is made (1 ms:
    /// a probe's burst of exits comes far faster).
    pub fn settle(&self) -> u64 {
        self.window / 64
    }

    /// [`Debt::shift_at`] as of the last exit counted.
    pub fn shift(&self) -> u32 {
        self.shift_at(self.window_start)
    }

    /// Counts `hidden` ticks, which an entry took out of the guest's TSC before host time
    /// `now`, into the rate window.
    pub fn count(&mut self, hidden: i64, now: u64) {
        let elapsed = now.wrapping_sub(self.window_start);
        if elapsed >= self.window {
            // A window with nothing in it since (a long quiet stretch) counts as empty.
            self.last_window_hidden = if elapsed >= 2 * self.window {
                0
            } else {
                self.window_hidden
            };
            self.window_start = now;
            self.window_hidden = 0;
        }
        self.window_hidden = self.window_hidden.saturating_add(hidden.max(0) as u64);
    }

    /// The plan for the entry after an exit: `lag` is the guest's lag at the exit, `hidden` what
    /// this entry would hide without a limit (the exit's host time so far and its credit), `now`
    /// the host time. (On a machine of several vCPUs this is what the vCPU wants; the machine's
    /// rule, `super::smp`, decides what it gets.)
    pub fn plan(&mut self, lag: i64, hidden: i64, now: u64) -> DebtPlan {
        let cap = i64::try_from(self.cap).unwrap_or(i64::MAX);
        let limit = if cap == i64::MAX {
            i64::MAX
        } else {
            cap.saturating_sub(lag)
        };
        let owed = lag.saturating_add(hidden.min(limit));
        let start = self.start as i64;
        if self.scaling {
            let shift = self.shift_at(now);
            self.repaying = if self.repaying {
                owed > start / 2
            } else {
                owed > start
            };
            return DebtPlan {
                limit,
                step: 0,
                multiplier: if self.repaying {
                    super::tsc::UNITY + (super::tsc::UNITY >> shift)
                } else {
                    super::tsc::UNITY
                },
                // The lag falls by one tick per 2^shift ticks the guest runs; the rate is
                // looked at again every two windows, so a quiet guest slows it down.
                timer: self.repaying.then(|| {
                    (owed as u64)
                        .saturating_mul(1 << shift)
                        .min(2 * self.window)
                }),
            };
        }
        let mut step = 0;
        if owed > start && now.wrapping_sub(self.last_step) >= self.period {
            step = (owed as u64).min(self.step);
            self.last_step = now;
        }
        DebtPlan {
            limit,
            step,
            multiplier: super::tsc::UNITY,
            timer: (owed.saturating_sub(step as i64) > start).then_some(self.period),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 50_000_000;

    #[test]
    fn the_shift_is_the_largest_that_repays_in_time() {
        let mut d = Debt::new(HideLimit::Bounded, HZ, true);
        for hidden in (0..200_000u64).step_by(97).chain([1 << 40, u64::MAX / 3]) {
            d.window_hidden = hidden;
            d.last_window_hidden = hidden / 3;
            for now in [0, d.window / 16, d.window / 2, d.window, 3 * d.window] {
                let got = d.shift_at(now);
                // The rule as a loop: from the slowest rate down while it would not keep up.
                let elapsed = now.clamp(d.window / 8, d.window);
                let current = (hidden as u128 * d.window as u128 / elapsed as u128)
                    .min(u64::MAX as u128) as u64;
                let recent = if now >= 2 * d.window {
                    0
                } else {
                    d.last_window_hidden.max(current)
                };
                let need = recent.saturating_mul(5) / 4;
                let mut want = REPAY_SHIFT;
                while want > FASTEST_SHIFT && need.saturating_mul(1 << want) > d.window {
                    want -= 1;
                }
                assert_eq!(got, want, "hidden {hidden} at {now}");
            }
        }
    }

    #[test]
    fn the_budget_follows_the_tsc_frequency() {
        let d = Debt::new(HideLimit::Bounded, HZ, true);
        assert_eq!(d.cap, 12_500, "250 µs at 50 MHz");
        assert_eq!(d.start, 1_000, "20 µs");
        assert_eq!(Debt::new(HideLimit::Unbounded, HZ, true).cap, u64::MAX);
        // 0.1 % over one second is 50,000 ticks: the cap stays below it.
        assert!(d.cap < HZ / 1000);
    }

    #[test]
    fn bounded_hiding_stops_at_the_cap() {
        let mut d = Debt::new(HideLimit::Bounded, HZ, true);
        let p = d.plan(12_400, 300, 0);
        assert_eq!(p.limit, 100, "only what is left under the cap");
        let p = d.plan(0, 300, 0);
        assert_eq!(p.limit, 12_500);
        let mut u = Debt::new(HideLimit::Unbounded, HZ, true);
        assert_eq!(u.plan(1 << 40, 300, 0).limit, i64::MAX);
    }

    #[test]
    fn scaling_repays_with_hysteresis_and_a_timer_for_the_end() {
        let mut d = Debt::new(HideLimit::Bounded, HZ, true);
        let p = d.plan(500, 300, 0);
        assert_eq!(
            p.multiplier,
            super::super::tsc::UNITY,
            "800 owed: below 1,000"
        );
        assert_eq!(p.timer, None);
        let p = d.plan(900, 300, 0);
        assert_eq!(p.multiplier, FAST);
        assert_eq!(
            p.timer,
            Some(1200 << REPAY_SHIFT),
            "the debt is paid by then"
        );
        // Still repaying above half the start.
        assert_eq!(d.plan(400, 200, 0).multiplier, FAST);
        // The timer exit that ends it hides ~300 ticks: that does not start it again.
        assert_eq!(d.plan(0, 300, 0).multiplier, super::super::tsc::UNITY);
        assert!(!d.repaying);
    }

    #[test]
    fn without_scaling_steps_come_once_per_period() {
        let mut d = Debt::new(HideLimit::Bounded, HZ, false);
        assert_eq!(d.period, 5_000_000);
        let p = d.plan(40_000, 300, 5_000_000);
        assert_eq!(p.step, d.step);
        assert_eq!(p.step, 5_000_000 >> REPAY_SHIFT);
        assert_eq!(p.timer, Some(d.period));
        // Not again before a period has passed.
        assert_eq!(d.plan(40_000, 300, 5_000_100).step, 0);
        assert_eq!(d.plan(40_000, 300, 10_000_000).step, d.step);
        // A small debt is never stepped: the step would cost more than it repays.
        assert_eq!(d.plan(100, 300, 50_000_000).step, 0);
    }
}
