//! Hidden time on several vCPUs: one rule that keeps their clocks coherent.
//!
//! Each vCPU hides its own exits, so each has its own lag behind true time (`VirtualTsc::lag`).
//! A guest compares clocks across CPUs — Linux's TSC synchronization check at every CPU's
//! bring-up reads the TSC on two CPUs in turn under a lock and calls any value behind one read
//! earlier on the other a warp, and marks the TSC unstable. The guest TSC of vCPU `i` at host
//! time `t` is `t - lag_i` (plus a common base), so a read on `j` at `t2` is behind a read on `i`
//! at `t1 < t2` exactly when `lag_j - lag_i > t2 - t1`. Hence the rule:
//!
//! **The lags of all running vCPUs stay within `skew` of one another.** An entry may raise its
//! vCPU's lag (hide) only up to the smallest lag of the others plus `skew`, and repayment may
//! lower it only down to the largest lag of the others minus `skew`. A vCPU that starts (its
//! start-up IPI) takes the smallest lag of the running ones: its first reads are never behind
//! any earlier read. With `skew` no larger than the time one CPU needs to see another's store
//! (a cache-line transfer: [`SKEW_NS`]), no value read on one vCPU is ever behind a value read
//! earlier on another.
//!
//! What it costs: a vCPU can hide at most `skew` more than the least-hiding vCPU. A guest that
//! times CPUID on one CPU while another runs without exits sees CPUID's cost beyond that — the
//! clocks' agreement is worth more than the hiding (an unstable TSC costs a guest its best
//! clocksource).
//!
//! Lags change only at a vCPU's entries when more than one vCPU runs: repayment is then stepped
//! (`super::debt` without scaling), so what each vCPU publishes at its entry holds until its next
//! one. Deciding and publishing happen under one lock, so two entries never decide on each
//! other's stale values.

use core::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// vCPUs a machine may have.
pub const MAX_VCPUS: usize = 64;
/// The skew bound in nanoseconds: below the latency of one CPU seeing another's store.
pub const SKEW_NS: u64 = 50;

struct Slot {
    running: AtomicBool,
    lag: AtomicI64,
}

/// The lags of a machine's vCPUs, shared by all of them (one per `Vm`).
pub struct Clocks {
    skew: i64,
    lock: AtomicBool,
    slots: [Slot; MAX_VCPUS],
}

impl Clocks {
    /// The table for a TSC of `tsc_hz` ticks per second.
    pub const fn new(tsc_hz: u64) -> Clocks {
        let skew = (tsc_hz as u128 * SKEW_NS as u128 / 1_000_000_000) as i64;
        Clocks {
            skew: if skew < 1 { 1 } else { skew },
            lock: AtomicBool::new(false),
            slots: [const {
                Slot {
                    running: AtomicBool::new(false),
                    lag: AtomicI64::new(0),
                }
            }; MAX_VCPUS],
        }
    }

    pub fn skew(&self) -> i64 {
        self.skew
    }

    /// Runs `f` with the table locked.
    pub fn locked<R>(&self, f: impl FnOnce(&Self) -> R) -> R {
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

    /// The bounds the other running vCPUs put on `me`'s lag: (lowest, highest), or `None` when
    /// `me` runs alone. Call with the table locked.
    pub fn bounds(&self, me: usize) -> Option<(i64, i64)> {
        let mut others = self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != me && s.running.load(Ordering::Relaxed))
            .map(|(_, s)| s.lag.load(Ordering::Relaxed));
        let first = others.next()?;
        let (min, max) = others.fold((first, first), |(lo, hi), l| (lo.min(l), hi.max(l)));
        Some((max.saturating_sub(self.skew), min.saturating_add(self.skew)))
    }

    /// `me`'s lag from this entry to its next. Call with the table locked.
    pub fn publish(&self, me: usize, lag: i64) {
        self.slots[me % MAX_VCPUS].lag.store(lag, Ordering::Relaxed);
    }

    /// `me` starts running: its lag is the smallest of the running vCPUs' (0 for the first), so
    /// its clock is never behind theirs. Returns that lag.
    pub fn join(&self, me: usize) -> i64 {
        self.locked(|c| {
            let lag = c
                .slots
                .iter()
                .filter(|s| s.running.load(Ordering::Relaxed))
                .map(|s| s.lag.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0);
            let slot = &c.slots[me % MAX_VCPUS];
            slot.lag.store(lag, Ordering::Relaxed);
            slot.running.store(true, Ordering::Relaxed);
            lag
        })
    }

    /// `me` stops (INIT, wait-for-SIPI): it no longer bounds the others.
    pub fn leave(&self, me: usize) {
        self.locked(|c| {
            c.slots[me % MAX_VCPUS]
                .running
                .store(false, Ordering::Relaxed)
        });
    }

    /// How many vCPUs run.
    pub fn running(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.running.load(Ordering::Relaxed))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HideLimit;
    use crate::time::debt::Debt;
    use alloc::vec::Vec;

    #[test]
    fn the_skew_is_a_cache_line_transfer() {
        assert_eq!(Clocks::new(3_000_000_000).skew(), 150);
        assert_eq!(Clocks::new(50_000_000).skew(), 2);
        assert_eq!(Clocks::new(1_000).skew(), 1);
    }

    #[test]
    fn a_vcpu_alone_is_unbounded_and_a_new_one_takes_the_floor() {
        let c = Clocks::new(50_000_000);
        assert_eq!(c.join(0), 0);
        assert_eq!(c.locked(|c| c.bounds(0)), None);
        c.locked(|c| c.publish(0, 900));
        assert_eq!(c.join(1), 900, "never behind vCPU 0");
        assert_eq!(c.locked(|c| c.bounds(1)), Some((898, 902)));
        c.leave(0);
        assert_eq!(c.locked(|c| c.bounds(1)), None);
        assert_eq!(c.running(), 1);
    }

    /// A tiny deterministic generator for the simulation.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % below
        }
    }

    /// Four vCPUs exit at random with random handling times; each entry hides its exit within
    /// the bounds and repays in steps. Every published lag stays within the skew of every
    /// other, each vCPU's clock never goes backwards, and a read on one vCPU is never behind a
    /// read on another made more than the skew earlier.
    #[test]
    fn simulated_vcpus_stay_coherent() {
        const N: usize = 4;
        const HZ: u64 = 50_000_000;
        let clocks = Clocks::new(HZ);
        let skew = clocks.skew();
        let mut debts: Vec<Debt> = (0..N)
            .map(|_| Debt::new(HideLimit::Bounded, HZ, false))
            .collect();
        let mut lag = [0i64; N];
        for (i, l) in lag.iter_mut().enumerate() {
            *l = clocks.join(i);
        }
        let mut rng = Lcg(7);
        let mut now: u64 = 1 << 32;
        let mut last_read = [0u64; N];
        // (host time, guest value) of every read, to check causality across vCPUs.
        let mut reads: Vec<(u64, u64)> = Vec::new();
        for _ in 0..20_000 {
            now += 1 + rng.next(200);
            let i = rng.next(N as u64) as usize;
            // vCPU i reads its TSC, then exits; the exit takes `handling` host ticks.
            let value = now - lag[i] as u64;
            assert!(value >= last_read[i], "vCPU {i} went backwards");
            last_read[i] = value;
            reads.push((now, value));
            let handling = 50 + rng.next(400);
            now += handling;
            lag[i] = clocks.locked(|c| {
                let plan = debts[i].plan(lag[i], handling as i64, now, c.bounds(i));
                let hidden = (handling as i64 - plan.step as i64).min(plan.limit);
                // Never more than the exit took: the clock does not go back.
                assert!(hidden <= handling as i64);
                let new = lag[i] + hidden;
                c.publish(i, new);
                new
            });
            let (lo, hi) = (lag.iter().min().unwrap(), lag.iter().max().unwrap());
            assert!(hi - lo <= skew, "lags {lag:?} spread beyond {skew}");
        }
        // Causality: sort by host time; every read is at least every earlier read made more
        // than `skew` before it.
        reads.sort();
        let mut best_before = 0u64;
        let mut j = 0;
        for k in 0..reads.len() {
            while j < k && reads[j].0 + (skew as u64) < reads[k].0 {
                best_before = best_before.max(reads[j].1);
                j += 1;
            }
            assert!(
                reads[k].1 >= best_before,
                "a read went behind an earlier one"
            );
        }
        // And the vCPUs did hide: the lags grew well beyond the skew together.
        assert!(lag.iter().all(|&l| l > 10 * skew), "{lag:?}");
    }
}
