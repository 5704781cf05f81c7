//! What only the hardware can measure before the guest starts: the SVM round trip no timestamp
//! covers, for virtual time (the arithmetic lives in `vigil_core::time`; the bare costs of
//! RDTSC and CPUID are measured on the host as for VMX).

use super::SvmVcpu;
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
    /// instruction, as `intel/calibrate.rs` does.
    pub fn calibrate(&mut self, scratch: u64, offset: u64) -> Result<Calibration, Stop> {
        let (rdtsc_cost, cpuid_cost) = crate::intel::calibrate::host_costs();
        let rip = self.rip();
        let rax = self.gpr(0);
        let regs = self.regs;
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
        self.regs.credit = 0;
        self.regs.tsc_offset = offset;
        let (mut round_trip, mut exit_side) = (u64::MAX, u64::MAX);
        for i in 0..33 {
            self.regs.hide = u64::from(i > 0);
            self.set_rip(scratch);
            let exited = self.enter()?;
            if i > 0 && matches!(exited.exit, Exit::Cpuid) {
                let (x, e) = (self.regs.exit_tsc, self.regs.entry_tsc);
                let sample = (self.regs.rdx << 32 | (self.gpr(0) & 0xFFFF_FFFF))
                    .wrapping_sub(self.regs.tsc_offset);
                round_trip = round_trip.min(x.wrapping_sub(e));
                exit_side = exit_side.min(x.wrapping_sub(sample));
            }
            self.regs = super::switch::SvmRegs {
                exit_tsc: self.regs.exit_tsc,
                ..regs
            };
        }
        self.vmcb.write(Field::InterceptMisc1, misc1);
        self.vmcb.write(Field::InterceptMisc2, misc2);
        self.set_rip(rip);
        self.set_gpr(0, rax);
        self.regs.hide = 0;
        self.vmcb.write(Field::TscOffset, offset);
        let measured = |v: u64| {
            if v == u64::MAX {
                0
            } else {
                v.saturating_sub(rdtsc_cost)
            }
        };
        let c = Calibration {
            round_trip: measured(round_trip),
            exit_lag: measured(exit_side),
            rdtsc: rdtsc_cost,
            cpuid: cpuid_cost,
        };
        self.round_trip = c.round_trip;
        log::info!(
            "virtual time: SVM round trip {} ticks ({} after the exiting instruction); bare rdtsc {} and cpuid {} ticks",
            c.round_trip,
            c.exit_lag,
            c.rdtsc,
            c.cpuid
        );
        Ok(c)
    }
}
