//! What only VMX can measure or probe before the guest starts: the VMX round trip no timestamp
//! covers (the bare costs and the TSC's frequency are the host's, `crate::calibrate`), and
//! whether the monitor trap flag really traps.

use super::switch::GuestRegs;
use super::{EntryFailure, VmxVcpu};
use crate::calibrate::{bare_costs, round_trips, tsc_hz, Sample};
use vigil_core::exit::Exit;
use vigil_core::time::tsc::Calibration;
use vigil_core::vcpu::Vcpu;
use vmx::caps::PrimaryProcBased;
use vmx::vmcs::{Field, VmcsAccess};

impl VmxVcpu {
    /// Measures the VMX round trip no timestamp covers, by running the guest on a CPUID placed
    /// at guest-physical `scratch` (in the guest's RAM, overwritten by the guest's own boot data
    /// afterwards), then puts the guest back at its entry point.
    pub fn calibrate(
        &mut self,
        scratch: u64,
        offset: u64,
        pm_timer: Option<u16>,
    ) -> Result<Calibration, EntryFailure> {
        let costs = bare_costs();
        let rdtsc_cost = costs.rdtsc as u64;
        let tsc_hz = tsc_hz(pm_timer);
        let rip = self.rip();
        let regs = self.regs;
        // `rdtsc; cpuid`: the guest's own TSC sample splits the round trip into the part before
        // the guest runs and the part after its exiting instruction.
        // SAFETY: `scratch` is guest RAM that the loader reserved for boot data.
        unsafe { (scratch as *mut [u8; 4]).write([0x0F, 0x31, 0x0F, 0xA2]) };
        // The sample must come from the processor, not from Vigil's RDTSC emulation.
        let primary = self.vmcs.read(Field::PrimaryProcBasedControls);
        self.vmcs.write(
            Field::PrimaryProcBasedControls,
            primary & !(PrimaryProcBased::RDTSC_EXITING.bits() as u64),
        );
        // Run the same bookkeeping the real exits will run, so the round trip covers it: each
        // of its paths (the guest's TSC at the host rate or scaled; no deadline, or one to
        // re-arm — far in the future, so it never fires), as their costs differ. The offset it
        // disturbs is restored afterwards.
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
                guest: (self.regs.rdx << 32 | (self.regs.rax & 0xFFFF_FFFF))
                    .wrapping_sub(self.regs.tsc_offset),
            });
            // Keep the launch state: the VMCS is launched now.
            self.regs = GuestRegs {
                launched: self.regs.launched,
                exit_tsc: self.regs.exit_tsc,
                ..regs
            };
            Ok(sample)
        })?;
        self.vmcs.write(Field::PrimaryProcBasedControls, primary);
        self.set_rip(rip);
        self.regs.hide = 0;
        self.vmcs.write(Field::TscOffset, offset);
        let c = Calibration {
            round_trip,
            exit_lag,
            costs,
            tsc_hz,
        };
        log::info!(
            "virtual time: TSC {} kHz; VMX round trip {:?} ticks (host rate, scaled; with a deadline: the same), {} after the exiting instruction",
            c.tsc_hz / 1000,
            c.round_trip,
            c.exit_lag,
        );
        log::info!(
            "bare costs: rdtsc {} rdtscp {} cpuid {}/{}/{} (leaf 0/1/0xb) rdmsr {} wrmsr {} xsetbv {} in {:?} out {} ins {:?} outs {:?} fault {} other {}",
            costs.rdtsc,
            costs.rdtscp,
            costs.cpuid_basic[0],
            costs.cpuid_basic[1],
            costs.cpuid_basic[0xB],
            costs.rdmsr,
            costs.wrmsr,
            costs.xsetbv,
            costs.port_in,
            costs.port_out[0],
            costs.ins[0],
            costs.outs[0],
            costs.fault,
            costs.simple,
        );
        Ok(c)
    }

    /// Whether the monitor trap flag really traps: one `nop; cpuid` run at `scratch` (guest RAM
    /// in the boot data page that nothing else uses yet) must exit with MTF after the NOP, not at
    /// the CPUID. Emulators may report the control without implementing it (Bochs 2.7).
    pub fn probe_monitor_trap(&mut self, scratch: u64) -> bool {
        if !self.caps.has_mtf() || !self.write_phys(scratch, &[0x90, 0x0F, 0xA2]) {
            return false;
        }
        let (rip, regs) = (self.rip(), self.regs);
        let primary = self.vmcs.read(Field::PrimaryProcBasedControls);
        let mtf = PrimaryProcBased::MONITOR_TRAP_FLAG.bits() as u64;
        self.vmcs
            .write(Field::PrimaryProcBasedControls, primary | mtf);
        self.regs.hide = 0;
        self.set_rip(scratch);
        let exited = self.enter();
        let stopped_at = self.rip();
        self.vmcs.write(Field::PrimaryProcBasedControls, primary);
        // Keep the launch state (the VMCS is launched now), put everything else back.
        self.regs = GuestRegs {
            launched: self.regs.launched,
            exit_tsc: self.regs.exit_tsc,
            ..regs
        };
        self.set_rip(rip);
        self.mtf_works =
            matches!(exited, Ok(e) if e.exit == Exit::Step) && stopped_at == scratch + 1;
        self.mtf_works
    }
}
