//! The VMX side of virtual time: boot-time calibration, keeping the VMCS TSC offset in step
//! with `VirtualTsc`, and the guest's TSC MSRs (IA32_TSC, IA32_TSC_ADJUST, the TSC deadline).

use super::Vcpu;
use crate::arch::regs::rdtsc;
use crate::arch::safe::wrmsr_safe;
use crate::exit::Exit;
use vigil_core::time::tsc::{Calibration, Cost};
use vmx::caps::PrimaryProcBased;
use vmx::vmcs::{Field, VmcsAccess};

pub const IA32_TSC: u32 = 0x10;
pub const IA32_TSC_ADJUST: u32 = 0x3B;
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;

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

impl Vcpu {
    pub fn rdtsc_exiting(&self) -> bool {
        self.vmcs.read(Field::PrimaryProcBasedControls)
            & PrimaryProcBased::RDTSC_EXITING.bits() as u64
            != 0
    }

    /// Measures the VMX round trip no timestamp covers, by running the guest on a CPUID placed
    /// at guest-physical `scratch` (in the guest's RAM, overwritten by the guest's own boot data
    /// afterwards), then puts the guest back at its entry point.
    pub fn calibrate(&mut self, scratch: u64) -> Result<Calibration, super::EntryFailure> {
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
        let offset = self.tsc.v.offset;
        self.regs.credit = 0;
        self.regs.tsc_offset = offset;
        let (mut round_trip, mut exit_side) = (u64::MAX, u64::MAX);
        for i in 0..33 {
            self.regs.hide = u64::from(i > 0);
            self.set_rip(scratch);
            let exit = self.enter()?;
            if i > 0 && matches!(exit, Exit::Cpuid) {
                let (x, e) = (self.regs.exit_tsc, self.regs.entry_tsc);
                let sample = (self.regs.rdx << 32 | (self.regs.rax & 0xFFFF_FFFF))
                    .wrapping_sub(self.regs.tsc_offset);
                round_trip = round_trip.min(x.wrapping_sub(e));
                exit_side = exit_side.min(x.wrapping_sub(sample));
            }
            // Keep the launch state: the VMCS is launched now.
            self.regs = super::switch::GuestRegs {
                launched: self.regs.launched,
                exit_tsc: self.regs.exit_tsc,
                ..regs
            };
        }
        self.vmcs.write(Field::PrimaryProcBasedControls, primary);
        self.set_rip(rip);
        self.regs.hide = 0;
        self.tsc.v.offset = offset;
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

    /// Sets up the world switch's time bookkeeping for the entry after `last` (none before
    /// the first entry): in `hide` and `frozen` the switch takes the exit's host time out of the
    /// offset itself, as late as it can, and re-arms the guest's TSC deadline for that offset.
    pub fn prepare_time(&mut self, last: Option<&Exit>) {
        let hide = self.tsc.v.hides_exits() && last.is_some();
        self.regs.hide = u64::from(hide);
        self.regs.deadline = 0;
        if !hide {
            return;
        }
        let cost = match last {
            Some(Exit::Rdtsc | Exit::Rdtscp) => Cost::Rdtsc,
            Some(Exit::Cpuid) => Cost::Cpuid,
            _ => Cost::Other,
        };
        self.regs.credit = self.tsc.v.credit(cost);
        self.regs.tsc_offset = self.tsc.v.offset;
        self.regs.deadline = self.tsc.v.deadline;
    }

    /// After an exit from a hidden-time entry: take over the offset the switch computed, and
    /// retire the guest's deadline if the timer fired before the stub stopped it.
    pub fn after_hidden_exit(&mut self) {
        self.tsc.v.offset = self.regs.tsc_offset;
        let d = self.tsc.v.deadline;
        if d != 0 && self.regs.deadline != 0 && self.tsc.v.guest_at(self.regs.disarm_tsc) >= d {
            self.tsc.v.deadline = 0;
        }
    }

    /// Writes the offset to the VMCS and moves an armed TSC deadline with it, so the guest's
    /// timer fires when *its* TSC reaches the deadline. (In `hide` and `frozen` the switch
    /// re-arms the deadline at every entry instead.)
    pub fn sync_tsc(&mut self) {
        self.vmcs.write(Field::TscOffset, self.tsc.v.offset);
        if !self.tsc.v.hides_exits() && self.deadline_pending() {
            self.program_deadline();
        }
    }

    /// Arms the host timer for the guest's deadline under the current offset.
    fn program_deadline(&mut self) {
        let host = self.tsc.v.host_for(self.tsc.v.deadline).max(1);
        self.tsc.deadline_host = host;
        wrmsr_safe(IA32_TSC_DEADLINE, host);
    }

    /// Whether the guest's deadline is armed and has not fired: the timer fires once the TSC
    /// reaches the programmed value (SDM Vol. 3A, "TSC-Deadline Mode"). Decided from time, not
    /// by reading the MSR back, which not every implementation clears.
    fn deadline_pending(&self) -> bool {
        if self.tsc.v.hides_exits() {
            return self.tsc.v.deadline != 0;
        }
        self.tsc.v.deadline != 0 && rdtsc() < self.tsc.deadline_host
    }

    /// RDMSR of one of the TSC MSRs Vigil owns in a virtual-time mode.
    pub fn read_tsc_msr(&self, msr: u32) -> Option<u64> {
        match msr {
            IA32_TSC => Some(self.tsc.v.guest_at_exit(self.regs.exit_tsc)),
            IA32_TSC_ADJUST => Some(self.tsc.v.adjust),
            IA32_TSC_DEADLINE => Some(if self.deadline_pending() {
                self.tsc.v.deadline
            } else {
                0
            }),
            _ => None,
        }
    }

    /// WRMSR of one of the TSC MSRs; false if the write faults as it would on hardware.
    pub fn write_tsc_msr(&mut self, msr: u32, value: u64) -> bool {
        match msr {
            IA32_TSC => self.tsc.v.write_tsc(rdtsc(), value),
            IA32_TSC_ADJUST => self.tsc.v.write_adjust(value),
            IA32_TSC_DEADLINE => {
                self.tsc.v.deadline = value;
                if value == 0 {
                    self.tsc.deadline_host = 0;
                    return wrmsr_safe(IA32_TSC_DEADLINE, 0);
                }
                // In hide and frozen the switch arms it at the entry, for the offset it sets.
                if !self.tsc.v.hides_exits() {
                    self.program_deadline();
                }
                return true;
            }
            _ => return false,
        }
        self.sync_tsc();
        true
    }
}
