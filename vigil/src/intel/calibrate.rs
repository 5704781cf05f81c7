//! What only the hardware can measure or probe before the guest starts: the calibration of
//! virtual time (the bare cost of RDTSC and CPUID, and the VMX round trip no timestamp covers;
//! the arithmetic lives in `vigil_core::time`), and whether the monitor trap flag really traps.

use super::switch::GuestRegs;
use super::{EntryFailure, VmxVcpu};
use vigil_core::exit::Exit;
use vigil_core::time::tsc::Calibration;
use vigil_core::vcpu::Vcpu;
use vmx::caps::PrimaryProcBased;
use vmx::vmcs::{Field, VmcsAccess};

/// The smallest of `n` samples: on a quiet CPU the minimum is the cost without interference.
fn min_of(n: usize, mut sample: impl FnMut() -> u64) -> u64 {
    (0..n).map(|_| sample()).min().unwrap_or(0)
}

/// Ticks between two RDTSCs around the given instructions (which may use r8-r10 and clobber
/// RAX-RDX): `rdtsc; mov r8d, eax; <body>; rdtsc`.
macro_rules! timed {
    ($($body:literal),*) => {{
        let (start, end): (u32, u32);
        // SAFETY: the sequence only reads the TSC, moves registers and executes CPUID.
        unsafe {
            core::arch::asm!(
                "mov r10, rbx",
                "rdtsc",
                "mov r8d, eax",
                $($body,)*
                "rdtsc",
                "mov rbx, r10",
                out("eax") end, out("r8") start, out("ecx") _, out("edx") _,
                out("r9") _, out("r10") _, options(nomem, nostack)
            );
        }
        end.wrapping_sub(start) as u64
    }};
}

/// Bare-metal cost of RDTSC and of CPUID, measured on the host where nothing traps: the
/// difference between sequences that differ by one instruction, so the cost of the code around
/// the measurement cancels out (on Bochs every instruction is one tick; on hardware these are the
/// instructions' latencies).
pub fn host_costs() -> (u64, u64) {
    let one_mov = min_of(64, || timed!());
    let two_movs = min_of(64, || timed!("mov r9d, eax"));
    let with_cpuid = min_of(64, || timed!("xor eax, eax", "cpuid"));
    let mov = two_movs.saturating_sub(one_mov);
    let rdtsc_cost = one_mov.saturating_sub(mov);
    // `xor eax, eax` costs what a mov costs.
    let cpuid_cost = with_cpuid.saturating_sub(one_mov + mov);
    (rdtsc_cost, cpuid_cost)
}

impl VmxVcpu {
    /// Measures the VMX round trip no timestamp covers, by running the guest on a CPUID placed
    /// at guest-physical `scratch` (in the guest's RAM, overwritten by the guest's own boot data
    /// afterwards), then puts the guest back at its entry point.
    pub fn calibrate(&mut self, scratch: u64, offset: u64) -> Result<Calibration, EntryFailure> {
        let (rdtsc_cost, cpuid_cost) = host_costs();
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
        // Run the same bookkeeping the real exits will run (hide set, no credit), so the round
        // trip covers it; the offset it disturbs is restored afterwards.
        self.regs.credit = 0;
        self.regs.tsc_offset = offset;
        let (mut round_trip, mut exit_side) = (u64::MAX, u64::MAX);
        for i in 0..33 {
            self.regs.hide = u64::from(i > 0);
            self.set_rip(scratch);
            let exited = self.enter()?;
            if i > 0 && matches!(exited.exit, Exit::Cpuid) {
                let (x, e) = (self.regs.exit_tsc, self.regs.entry_tsc);
                let sample = (self.regs.rdx << 32 | (self.regs.rax & 0xFFFF_FFFF))
                    .wrapping_sub(self.regs.tsc_offset);
                round_trip = round_trip.min(x.wrapping_sub(e));
                exit_side = exit_side.min(x.wrapping_sub(sample));
            }
            // Keep the launch state: the VMCS is launched now.
            self.regs = GuestRegs {
                launched: self.regs.launched,
                exit_tsc: self.regs.exit_tsc,
                ..regs
            };
        }
        self.vmcs.write(Field::PrimaryProcBasedControls, primary);
        self.set_rip(rip);
        self.regs.hide = 0;
        self.vmcs.write(Field::TscOffset, offset);
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
        log::info!(
            "virtual time: VMX round trip {} ticks ({} after the exiting instruction); bare rdtsc {} and cpuid {} ticks",
            c.round_trip,
            c.exit_lag,
            c.rdtsc,
            c.cpuid
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
