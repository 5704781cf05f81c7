//! What only SVM can measure before the guest starts: the SVM round trip no timestamp covers,
//! for virtual time (the arithmetic lives in `vigil_core::time`; the bare costs and the TSC's
//! frequency are the host's, `crate::calibrate`).

use super::switch::SvmRegs;
use super::SvmVcpu;
use crate::calibrate::{bare_costs, round_trips, tsc_hz, Sample};
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
        let (round_trip, exit_lag) = round_trips(offset, rdtsc_cost, |path| {
            self.regs.hide = u64::from(path.hide);
            self.regs.credit = 0;
            self.regs.limit = i64::MAX as u64;
            self.regs.multiplier = path.multiplier;
            self.regs.tsc_offset = offset;
            self.regs.deadline = path.deadline;
            self.set_rip(scratch);
            let exited = self.enter()?;
            let sample = matches!(exited.exit, Exit::Cpuid).then(|| Sample {
                exit_tsc: self.regs.exit_tsc,
                entry_tsc: self.regs.entry_tsc,
                guest: (self.regs.rdx << 32 | (self.gpr(0) & 0xFFFF_FFFF))
                    .wrapping_sub(self.regs.tsc_offset),
            });
            self.regs = SvmRegs {
                exit_tsc: self.regs.exit_tsc,
                ..saved
            };
            Ok(sample)
        })?;
        self.vmcb.write(Field::InterceptMisc1, misc1);
        self.vmcb.write(Field::InterceptMisc2, misc2);
        self.set_rip(rip);
        self.set_gpr(0, rax);
        self.regs.hide = 0;
        self.vmcb.write(Field::TscOffset, offset);
        self.round_trip = round_trip;
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
}
