//! RDTSC and RDTSCP, which exit only when Vigil traps them (VMX: "RDTSC exiting" governs both,
//! SDM Vol. 3C 26.1.3; SVM: two intercepts).
//!
//! The guest reads its virtual TSC at the moment of the exit (the host TSC the world switch
//! read), computed as the processor would with TSC offsetting and scaling (SDM Vol. 3C 26.3).
//! RDTSCP also returns IA32_TSC_AUX in ECX, which VMX does not switch, so the host MSR holds the
//! guest's value.

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::{Host, Vcpu};

const IA32_TSC_AUX: u32 = 0xC000_0103;

#[inline]
pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, rdtscp: bool) -> Action {
    let value = cpu.time.v.guest_at_exit(cpu.exit_tsc);
    cpu.time.last_emulated = Some(value);
    cpu.set_edx_eax(value);
    if rdtscp {
        let aux = cpu.vcpu.host().rdmsr(IA32_TSC_AUX).unwrap_or(0);
        cpu.vcpu.set_gpr(1, aux & 0xFFFF_FFFF);
    }
    if cpu.config().log_exits {
        log::info!(
            "{} -> {value:#x} (rip {:#x})",
            if rdtscp { "rdtscp" } else { "rdtsc" },
            cpu.vcpu.rip()
        );
    }
    Action::Advance
}
