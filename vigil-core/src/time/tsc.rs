//! The guest's time-stamp counter as a function of the host's.
//!
//! guest TSC = scale(host TSC) + offset, where scale multiplies by a 16.48 fixed-point ratio
//! exactly as hardware TSC scaling does (SDM Vol. 3C 26.3, "Time-Stamp Counter Offset and
//! Multiplier"), so Vigil's emulation and the processor always agree on a value.
//!
//! In `hide` and `frozen` modes the offset shrinks at every VM exit by the host time the guest
//! lost: the handler's time plus the cost of the two VMX transitions (measured once at boot).
//! `hide` then gives back what the trapped instruction would have cost on bare metal (measured on
//! the host at boot), so a guest timing `rdtsc; cpuid; rdtsc` sees bare-metal numbers.
//!
//! The guest's IA32_TSC_ADJUST and TSC-deadline timer are kept in guest units here; Vigil
//! translates the deadline to host units whenever the offset moves.

use crate::config::TscMode;

/// Host measurements that make hidden time match bare metal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calibration {
    /// Ticks of one VM entry plus one VM exit that no host-side timestamp covers.
    pub round_trip: u64,
    /// The part of the round trip between the guest's exiting instruction and the exit stub's
    /// timestamp: the exit happened this long before `exit_tsc`.
    pub exit_lag: u64,
    /// Bare-metal cost of one RDTSC.
    pub rdtsc: u64,
    /// Bare-metal cost of one CPUID.
    pub cpuid: u64,
}

/// What the guest was doing when it exited, for the bare-metal cost `hide` gives back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cost {
    Rdtsc,
    Cpuid,
    /// Anything else: counted as free.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualTsc {
    pub mode: TscMode,
    /// guest = scale(host) + offset (wrapping).
    pub offset: u64,
    /// 16.48 fixed-point multiplier; 1 << 48 means the host rate.
    pub multiplier: u64,
    pub calibration: Calibration,
    /// The guest's IA32_TSC_ADJUST.
    pub adjust: u64,
    /// The guest's TSC deadline (0 = disarmed), in guest units.
    pub deadline: u64,
}

pub const UNITY: u64 = 1 << 48;

impl VirtualTsc {
    /// The guest TSC starts equal to the host's at `host_now`, plus the mode's offset.
    pub fn new(mode: TscMode, host_now: u64, adjust: u64) -> VirtualTsc {
        let multiplier = match mode {
            TscMode::Scale(p, q) => (((p as u128) << 48) / q as u128) as u64,
            _ => UNITY,
        };
        let mut t = VirtualTsc {
            mode,
            offset: 0,
            multiplier,
            calibration: Calibration::default(),
            adjust,
            deadline: 0,
        };
        t.offset = host_now
            .wrapping_sub(t.scale(host_now))
            .wrapping_add(mode.offset());
        t
    }

    pub fn scale(&self, host: u64) -> u64 {
        if self.multiplier == UNITY {
            host
        } else {
            ((host as u128 * self.multiplier as u128) >> 48) as u64
        }
    }

    /// The guest's TSC at host time `host`.
    pub fn guest_at(&self, host: u64) -> u64 {
        self.scale(host).wrapping_add(self.offset)
    }

    /// The guest's TSC when it executed the instruction that caused an exit the stub stamped
    /// `exit_tsc`: what an emulated RDTSC or RDMSR(IA32_TSC) returns, so that it agrees with
    /// the processor's own reads before and after.
    pub fn guest_at_exit(&self, exit_tsc: u64) -> u64 {
        self.guest_at(exit_tsc.wrapping_sub(self.calibration.exit_lag))
    }

    /// The earliest host time at which the guest's TSC reaches `guest` (for the deadline).
    /// A deadline the guest's TSC had already passed at host time 0 — below the offset — is
    /// due at once: 0, not the wrapped difference, which would never come (on bare metal a
    /// deadline in the past fires immediately, SDM Vol. 3A, "TSC-Deadline Mode").
    pub fn host_for(&self, guest: u64) -> u64 {
        let scaled = guest.wrapping_sub(self.offset);
        if (scaled as i64) < 0 {
            return 0;
        }
        if self.multiplier == UNITY {
            scaled
        } else {
            let h = ((scaled as u128) << 48).div_ceil(self.multiplier as u128);
            h.min(u64::MAX as u128) as u64
        }
    }

    /// Whether this mode hides the host time of VM exits from the guest.
    pub fn hides_exits(&self) -> bool {
        matches!(self.mode, TscMode::Hide | TscMode::Frozen)
    }

    /// What an exit of this kind costs the guest beyond the handler's own time: the VMX round
    /// trip, less (in `hide`) what the instruction costs on bare metal. Wrapping arithmetic:
    /// a "negative" credit gives time back.
    pub fn credit(&self, cost: Cost) -> u64 {
        let c = &self.calibration;
        let bare = match (self.mode, cost) {
            (TscMode::Hide, Cost::Rdtsc) => c.rdtsc,
            (TscMode::Hide, Cost::Cpuid) => c.cpuid,
            _ => 0,
        };
        c.round_trip.wrapping_sub(bare)
    }

    /// The offset update the world switch performs just before re-entering the guest after an
    /// exit that happened at host time `exit_tsc`, with `now` read as late as possible (the VMX
    /// backend's `intel/switch.rs` does this in assembly; this is the same arithmetic, for tests
    /// and documentation). Returns true when the offset changed.
    pub fn account_exit(&mut self, exit_tsc: u64, now: u64, cost: Cost) -> bool {
        if !self.hides_exits() {
            return false;
        }
        let lost = now.wrapping_sub(exit_tsc).wrapping_add(self.credit(cost));
        self.offset = self.offset.wrapping_sub(lost);
        true
    }

    /// The guest writes IA32_TSC at host time `host_now`: its TSC becomes `value`, and
    /// IA32_TSC_ADJUST moves by the same amount (SDM Vol. 3B 18.17.3).
    pub fn write_tsc(&mut self, host_now: u64, value: u64) {
        let old = self.guest_at(host_now);
        self.offset = value.wrapping_sub(self.scale(host_now));
        self.adjust = self.adjust.wrapping_add(value.wrapping_sub(old));
    }

    /// The guest writes IA32_TSC_ADJUST: its TSC moves by the difference (SDM Vol. 3B 18.17.3).
    pub fn write_adjust(&mut self, value: u64) {
        self.offset = self.offset.wrapping_add(value.wrapping_sub(self.adjust));
        self.adjust = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_mode_adds_the_offset() {
        let t = VirtualTsc::new(TscMode::Offset(1000), 5000, 0);
        assert_eq!(t.guest_at(6000), 7000);
        assert_eq!(t.host_for(7000), 6000);
    }

    #[test]
    fn scale_runs_at_p_over_q_and_starts_continuous() {
        let t = VirtualTsc::new(TscMode::Scale(3, 2), 1_000_000, 0);
        assert_eq!(t.guest_at(1_000_000), 1_000_000);
        assert_eq!(t.guest_at(1_000_200) - t.guest_at(1_000_000), 300);
        // The deadline translation is the inverse, rounded up so it never fires early.
        let g = t.guest_at(1_000_000) + 301;
        let h = t.host_for(g);
        assert!(t.guest_at(h) >= g && t.guest_at(h - 1) < g);
    }

    #[test]
    fn a_deadline_below_the_offset_is_due_at_once() {
        let t = VirtualTsc::new(TscMode::Offset(0x1000_0000_0000), 5000, 0);
        assert_eq!(t.host_for(1), 0);
        assert_eq!(t.host_for(0x1000_0000_0000 + 6000), 6000);
        // Scaled: guest 0 came at host 333,334 (1.5 h - 500,000); a deadline before it is due.
        let s = VirtualTsc::new(TscMode::Scale(3, 2), 1_000_000, 0);
        assert_eq!(s.host_for(0), 333_334);
    }

    #[test]
    fn hide_makes_a_trapped_cpuid_cost_bare_metal() {
        // Bare metal: `rdtsc; mov; cpuid; rdtsc` measures rdtsc + mov + cpuid = 5 + 1 + 4.
        let mut t = VirtualTsc::new(TscMode::Hide, 0, 0);
        t.calibration = Calibration {
            round_trip: 40,
            exit_lag: 15,
            rdtsc: 5,
            cpuid: 4,
        };
        let rt = t.calibration.round_trip;
        // First RDTSC exits at host time 1000 and is handled until 1300.
        let t1 = t.guest_at_exit(1000);
        t.account_exit(1000, 1300, Cost::Rdtsc);
        // After the entry, the guest runs its mov (1 tick), then CPUID exits: one round trip
        // of transitions plus the mov. Vigil handles it for 500 ticks.
        let cpuid_exit = 1300 + rt + 1;
        t.account_exit(cpuid_exit, cpuid_exit + 500, Cost::Cpuid);
        // The second RDTSC exits right after the next entry.
        let t2 = t.guest_at_exit(cpuid_exit + 500 + rt);
        assert_eq!(t2 - t1, 5 + 1 + 4);
    }

    #[test]
    fn emulated_reads_agree_with_the_processor() {
        // Frozen mode, exit lag 15 of a 40-tick round trip. The guest reads the TSC in hardware
        // at host 985, then RDMSR(IA32_TSC) exits (the instruction at 986, stamped at 1001),
        // then after the entry (1300 + 25 ticks) reads in hardware again.
        let mut t = VirtualTsc::new(TscMode::Frozen, 0, 0);
        t.calibration = Calibration {
            round_trip: 40,
            exit_lag: 15,
            rdtsc: 1,
            cpuid: 1,
        };
        let before = t.guest_at(985);
        let emulated = t.guest_at_exit(1001);
        t.account_exit(1001, 1300, Cost::Other);
        let after = t.guest_at(1300 + 25);
        assert!(
            before < emulated && emulated <= after,
            "{before} {emulated} {after}"
        );
    }

    #[test]
    fn frozen_stops_time_during_exits() {
        let mut t = VirtualTsc::new(TscMode::Frozen, 0, 0);
        t.calibration.round_trip = 10;
        let before = t.guest_at(100);
        t.account_exit(100, 1_000_000, Cost::Other);
        assert_eq!(t.guest_at(1_000_010), before);
    }

    #[test]
    fn native_and_offset_do_not_hide() {
        let mut t = VirtualTsc::new(TscMode::Offset(7), 0, 0);
        assert!(!t.account_exit(0, 100, Cost::Cpuid));
        assert_eq!(t.offset, 7);
    }

    #[test]
    fn tsc_and_adjust_writes_stay_consistent() {
        let mut t = VirtualTsc::new(TscMode::Offset(0), 0, 0);
        t.write_tsc(1000, 50_000);
        assert_eq!(t.guest_at(1000), 50_000);
        assert_eq!(t.adjust, 49_000);
        t.write_adjust(0);
        assert_eq!(t.guest_at(1000), 1000);
    }
}
