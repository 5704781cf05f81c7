//! What only SVM can measure before the guest starts: the SVM round trip no timestamp covers,
//! for virtual time (the arithmetic lives in `vigil_core::time`; the bare costs and the TSC's
//! frequency are the host's, `crate::calibrate`).

use super::switch::SvmRegs;
use super::SvmVcpu;
use crate::arch::regs;
use crate::calibrate::{bare_costs, tsc_hz};
use svm::intercept::{Misc1, Misc2};
use svm::vmcb::{Field, VmcbAccess};
use vigil_core::exit::{Exit, Stop};
use vigil_core::time::tsc::Calibration;
use vigil_core::vcpu::Vcpu;

impl SvmVcpu {
    /// Measures the SVM round trip by running the guest on `rdtsc; cpuid` placed at
    /// guest-physical `scratch` (guest RAM in the boot data, overwritten by the guest's own data
    /// later), then puts the guest back at its entry point. The guest's TSC sample splits the
    /// round trip into the part before the guest runs and the part after its exiting
    /// instruction, as `intel/calibrate.rs` does, for each of the switch's four paths (scaled or
    /// not, a deadline to re-arm or not).
    pub fn calibrate(
        &mut self,
        scratch: u64,
        offset: u64,
        pm_timer: Option<u16>,
    ) -> Result<Calibration, Stop> {
        let costs = bare_costs();
        let rdtsc_cost = costs.rdtsc as u64;
        let tsc_hz = tsc_hz(pm_timer);
        let rip = self.rip();
        let rax = self.gpr(0);
        let saved = self.regs;
        if !self.write_phys(scratch, &[0x0F, 0x31, 0x0F, 0xA2]) {
            return Err(Stop::Failed("calibration scratch is not guest RAM"));
        }
        // The sample must come from the processor, not from Vigil's RDTSC emulation.
        let misc1 = self.vmcb.read(Field::InterceptMisc1);
        let misc2 = self.vmcb.read(Field::InterceptMisc2);
        self.vmcb
            .write(Field::InterceptMisc1, misc1 & !(Misc1::RDTSC.bits() as u64));
        self.vmcb.write(
            Field::InterceptMisc2,
            misc2 & !(Misc2::RDTSCP.bits() as u64),
        );
        let deadline_timer = regs::cpuid(1, 0)[2] & (1 << 24) != 0;
        let mut round_trip = [0u64; 4];
        let mut exit_side = u64::MAX;
        for variant in 0..round_trip.len() {
            let multiplier = if variant & 1 != 0 {
                vigil_core::time::debt::FAST
            } else {
                0
            };
            let deadline = variant & 2 != 0;
            if deadline && !deadline_timer {
                round_trip[variant] = round_trip[variant & 1];
                continue;
            }
            let (trip, side) = self.round_trip(scratch, offset, multiplier, deadline, saved)?;
            round_trip[variant] = trip.saturating_sub(rdtsc_cost);
            exit_side = exit_side.min(side);
        }
        self.vmcb.write(Field::InterceptMisc1, misc1);
        self.vmcb.write(Field::InterceptMisc2, misc2);
        self.set_rip(rip);
        self.set_gpr(0, rax);
        self.regs.hide = 0;
        self.vmcb.write(Field::TscOffset, offset);
        self.round_trip = round_trip;
        let exit_lag = if exit_side == u64::MAX {
            0
        } else {
            exit_side.saturating_sub(rdtsc_cost)
        };
        let c = Calibration {
            round_trip,
            exit_lag,
            costs,
            tsc_hz,
        };
        log::info!(
            "virtual time: TSC {} kHz; SVM round trip {:?} ticks (host rate, scaled; with a deadline: the same), {} after the exiting instruction; bare rdtsc {} cpuid {} (leaf 0)",
            c.tsc_hz / 1000,
            c.round_trip,
            c.exit_lag,
            costs.rdtsc,
            costs.cpuid_basic[0],
        );
        Ok(c)
    }

    /// The smallest round trip (host ticks from the switch's last timestamp to the exit stub's)
    /// and exit side (from the guest's own TSC read to the stub's) of 32 runs of the calibration
    /// guest, with the switch on the path `multiplier` and `deadline` choose (a deadline far in
    /// the future, so it never fires).
    fn round_trip(
        &mut self,
        scratch: u64,
        offset: u64,
        multiplier: u64,
        deadline: bool,
        saved: SvmRegs,
    ) -> Result<(u64, u64), Stop> {
        let (mut trip, mut side) = (u64::MAX, u64::MAX);
        for i in 0..33 {
            self.regs.hide = u64::from(i > 0);
            self.regs.credit = 0;
            self.regs.limit = i64::MAX as u64;
            self.regs.multiplier = multiplier;
            self.regs.tsc_offset = offset;
            self.regs.deadline = if deadline {
                offset.wrapping_add(1 << 62)
            } else {
                0
            };
            self.set_rip(scratch);
            let exited = self.enter()?;
            if i > 0 && matches!(exited.exit, Exit::Cpuid) {
                let (x, e) = (self.regs.exit_tsc, self.regs.entry_tsc);
                let sample = (self.regs.rdx << 32 | (self.gpr(0) & 0xFFFF_FFFF))
                    .wrapping_sub(self.regs.tsc_offset);
                trip = trip.min(x.wrapping_sub(e));
                side = side.min(x.wrapping_sub(sample));
            }
            self.regs = SvmRegs {
                exit_tsc: self.regs.exit_tsc,
                ..saved
            };
        }
        if trip == u64::MAX {
            return Ok((0, u64::MAX));
        }
        Ok((trip, side))
    }
}
