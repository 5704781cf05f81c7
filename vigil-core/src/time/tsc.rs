//! The guest's time-stamp counter as a function of the host's.
//!
//! guest TSC = scale(host TSC) + offset, where scale multiplies by a 16.48 fixed-point ratio
//! exactly as hardware TSC scaling does (SDM Vol. 3C 26.3, "Time-Stamp Counter Offset and
//! Multiplier"), so Vigil's emulation and the processor always agree on a value.
//!
//! In `hide` and `frozen` modes the offset shrinks at every VM exit by the host time the guest
//! lost: the handler's time plus the cost of the two VMX transitions (measured once at boot),
//! less (in `hide`) what the exiting instruction costs on bare metal (`super::cost`). What was
//! taken is the guest's *lag* behind true time ([`VirtualTsc::lag`]); `hide` repays it
//! (`super::debt`), `frozen` never does.
//!
//! The guest's IA32_TSC_ADJUST and TSC-deadline timer are kept in guest units here; Vigil
//! translates the deadline to host units whenever the offset moves.

use super::cost::BareCosts;
use crate::config::TscMode;

/// Host measurements that make hidden time match bare metal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calibration {
    /// Ticks of one VM entry plus one VM exit that no host-side timestamp covers, for each path
    /// of the switch: index bit 0 set when the guest's TSC is scaled, bit 1 when a deadline is
    /// re-armed.
    pub round_trip: [u64; 4],
    /// The part of the round trip between the guest's exiting instruction and the exit stub's
    /// timestamp: the exit happened this long before `exit_tsc`.
    pub exit_lag: u64,
    /// What each exiting instruction costs on bare metal.
    pub costs: BareCosts,
    /// TSC ticks per second (0: not measured).
    pub tsc_hz: u64,
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
    /// Where the guest's clock started (host time, guest time): the reference of [`Self::hidden`].
    start: (u64, u64),
    /// What the guest's own writes (IA32_TSC, IA32_TSC_ADJUST) moved its clock by (wrapping).
    writes: u64,
    /// Hidden time the guest does not owe: debugger stops and holds, and the lag a write of
    /// IA32_TSC made moot.
    forgiven: u64,
}

pub const UNITY: u64 = 1 << 48;

/// `host` scaled by the 16.48 multiplier `m`.
pub fn scale_by(m: u64, host: u64) -> u64 {
    if m == UNITY {
        host
    } else {
        ((host as u128 * m as u128) >> 48) as u64
    }
}

/// The round trip no timestamp covers on the world switch's path for a guest TSC running at
/// `multiplier` (16.48, [`UNITY`] for the host rate), with or without a deadline to re-arm, at the
/// guest's rate: `trips` is [`Calibration::round_trip`], indexed by that path.
pub fn round_trip_of(trips: &[u64; 4], multiplier: u64, deadline: bool) -> u64 {
    let path = usize::from(multiplier != UNITY) | usize::from(deadline) << 1;
    scale_by(multiplier, trips[path])
}

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
            start: (0, 0),
            writes: 0,
            forgiven: 0,
        };
        t.offset = host_now
            .wrapping_sub(t.scale(host_now))
            .wrapping_add(mode.offset());
        t.start = (host_now, t.guest_at(host_now));
        t
    }

    pub fn scale(&self, host: u64) -> u64 {
        scale_by(self.multiplier, host)
    }

    /// The guest's TSC at host time `host`.
    pub fn guest_at(&self, host: u64) -> u64 {
        self.scale(host).wrapping_add(self.offset)
    }

    /// The guest's TSC when it executed the instruction that caused an exit the stub stamped
    /// `exit_tsc`: what an emulated RDTSC or RDMSR(IA32_TSC) returns, so that it agrees with
    /// the processor's own reads before and after.
    pub fn guest_at_exit(&self, exit_tsc: u64) -> u64 {
        self.guest_at(self.instruction_time(exit_tsc))
    }

    /// The host time at which the guest executed the instruction of an exit stamped `exit_tsc`.
    pub fn instruction_time(&self, exit_tsc: u64) -> u64 {
        exit_tsc.wrapping_sub(self.calibration.exit_lag)
    }

    /// Another vCPU's clock, started from this one's before the guest runs: the same offset and
    /// rate (one TSC for the whole machine, as on bare metal), its own processor's
    /// IA32_TSC_ADJUST, no deadline armed.
    pub fn sibling(&self, adjust: u64) -> VirtualTsc {
        VirtualTsc {
            adjust,
            deadline: 0,
            ..self.clone()
        }
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
        self.mode.hides_exits()
    }

    /// Host time the guest's clock has not seen by host time `host`: the exits hidden so far
    /// (and what they gave back), less what the TSC's rate added (repayment, or `scale`), not
    /// counting the guest's own writes of its TSC. It is what IA32_MPERF and IA32_APERF must lose
    /// to stay in step with the TSC (wrapping: negative when the guest is ahead).
    pub fn hidden(&self, host: u64) -> u64 {
        let (h0, g0) = self.start;
        let natural = self.guest_at(host).wrapping_sub(self.writes);
        host.wrapping_sub(h0).wrapping_sub(natural.wrapping_sub(g0))
    }

    /// How far the guest's TSC is behind true time at host time `host`, in host ticks: the
    /// hidden time it still owes (negative: ahead).
    pub fn lag(&self, host: u64) -> i64 {
        self.hidden(host).wrapping_sub(self.forgiven) as i64
    }

    /// Time Vigil held the guest that it need not repay (a debugger stop, the hold hypercall):
    /// hidden, and forgiven.
    pub fn forgive(&mut self, ticks: u64) {
        self.forgiven = self.forgiven.wrapping_add(ticks);
    }

    /// Runs the guest's TSC at multiplier `m` from host time `now` on, without a jump.
    pub fn set_multiplier(&mut self, m: u64, now: u64) {
        let before = self.guest_at(now);
        self.multiplier = m;
        self.offset = before.wrapping_sub(self.scale(now));
    }

    /// The guest writes IA32_TSC with its instruction at host time `at`: its TSC becomes
    /// `value` then, and IA32_TSC_ADJUST moves by the same amount (SDM Vol. 3B 18.17.3). Its lag
    /// is forgiven: the guest set its clock, and true time goes on from there.
    pub fn write_tsc(&mut self, at: u64, value: u64) {
        let old = self.guest_at(at);
        self.offset = value.wrapping_sub(self.scale(at));
        let moved = value.wrapping_sub(old);
        self.adjust = self.adjust.wrapping_add(moved);
        self.writes = self.writes.wrapping_add(moved);
        self.forgiven = self.hidden(at);
    }

    /// The guest writes IA32_TSC_ADJUST: its TSC moves by the difference (SDM Vol. 3B 18.17.3).
    pub fn write_adjust(&mut self, value: u64) {
        let moved = value.wrapping_sub(self.adjust);
        self.offset = self.offset.wrapping_add(moved);
        self.writes = self.writes.wrapping_add(moved);
        self.adjust = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HideLimit;

    #[test]
    fn offset_mode_adds_the_offset() {
        let t = VirtualTsc::new(TscMode::Offset(1000), 5000, 0);
        assert_eq!(t.guest_at(6000), 7000);
        assert_eq!(t.host_for(7000), 6000);
        assert_eq!(t.lag(6000), 0, "an offset hides nothing");
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
    fn a_new_multiplier_keeps_the_clock_continuous() {
        let mut t = VirtualTsc::new(TscMode::Hide(HideLimit::Bounded), 1 << 40, 0);
        t.offset = t.offset.wrapping_sub(5000);
        let before = t.guest_at((1 << 40) + 100);
        t.set_multiplier(UNITY + (UNITY >> 11), (1 << 40) + 100);
        assert_eq!(t.guest_at((1 << 40) + 100), before);
        // 2048 ticks later the guest has gained one.
        assert_eq!(t.guest_at((1 << 40) + 100 + 2048), before + 2049);
        assert_eq!(t.lag((1 << 40) + 100 + 2048), 5000 - 1);
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
    fn writes_move_the_clock_without_making_lag() {
        let mut t = VirtualTsc::new(TscMode::Hide(HideLimit::Bounded), 0, 0);
        t.offset = t.offset.wrapping_sub(700); // 700 ticks hidden
        assert_eq!(t.lag(1000), 700);
        t.write_adjust(1 << 30);
        assert_eq!(t.guest_at(1000), 300 + (1 << 30));
        assert_eq!(
            t.lag(1000),
            700,
            "TSC_ADJUST moves the clock, the debt stays"
        );
        // A write of IA32_TSC sets the clock: from then on it counts true time, owing nothing.
        t.write_tsc(2000, 0);
        assert_eq!(t.guest_at(2000), 0);
        assert_eq!(t.lag(2000), 0);
        assert_eq!(t.guest_at(2100), 100);
        assert_eq!(
            t.adjust,
            (1u64 << 30).wrapping_add(0u64.wrapping_sub(1300 + (1 << 30)))
        );
        // IA32_MPERF still loses everything hidden, the write's forgiven debt included.
        assert_eq!(t.hidden(2100), 700);
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
