//! RDTSC and RDTSCP (exit reasons 16 and 51), which exit only when the user traps them
//! ("RDTSC exiting" governs both, SDM Vol. 3C 26.1.3).
//!
//! The guest reads its virtual TSC at the moment of the exit (the host TSC the exit stub read),
//! computed as the processor would with TSC offsetting and scaling (26.3). RDTSCP also returns
//! IA32_TSC_AUX in ECX, which VMX does not switch, so the host MSR holds the guest's value.

use super::Action;
use crate::arch::regs::rdmsr;
use crate::vmm::Vcpu;

const IA32_TSC_AUX: u32 = 0xC000_0103;

pub fn handle(vcpu: &mut Vcpu, rdtscp: bool) -> Action {
    let value = vcpu.tsc.v.guest_at_exit(vcpu.regs.exit_tsc);
    vcpu.tsc.last_emulated = Some(value);
    vcpu.set_edx_eax(value);
    if rdtscp {
        vcpu.set_gpr32(1, rdmsr(IA32_TSC_AUX) as u32);
    }
    if vcpu.config.log_exits {
        log::info!(
            "{} -> {value:#x} (rip {:#x})",
            if rdtscp { "rdtscp" } else { "rdtsc" },
            vcpu.rip()
        );
    }
    Action::Advance
}
