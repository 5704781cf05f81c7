//! Running the `svm` VMRUN checks against the live VMCB: before the first VMRUN (with
//! `check-entry=on`), and after a VMRUN that failed, to explain it.

use super::SvmVcpu;
use crate::arch::regs::{cpuid, cr0, rdmsr};
use crate::println;
use alloc::vec::Vec;
use svm::caps::Features;
use svm::checks::{self, Failure, Host, Platform, Violation};
use svm::intercept::EFER_SVME;
use vigil_core::vcpu::msr as m;
use x86_arch::regs::{EFER_LMA, EFER_LME, EFER_NXE, EFER_SCE};

/// The facts about this processor the VMCB does not hold, from CPUID.
pub fn platform(vcpu: &SvmVcpu) -> Platform {
    let ext = cpuid(0x8000_0001, 0);
    let long_mode = ext[3] & (1 << 29) != 0;
    let mut efer = EFER_SVME;
    for (present, bits) in [
        (ext[3] & (1 << 11) != 0 || long_mode, EFER_SCE),
        (long_mode, EFER_LME | EFER_LMA),
        (ext[3] & (1 << 20) != 0, EFER_NXE),
        (ext[3] & (1 << 25) != 0 && long_mode, 1 << 14), // FFXSR
        (ext[2] & (1 << 17) != 0 && long_mode, 1 << 15), // TCE
    ] {
        if present {
            efer |= bits;
        }
    }
    Platform {
        phys_addr_width: vcpu.phys_bits,
        long_mode,
        efer_supported: efer,
        cr4_supported: vcpu.cr4_supported,
        nested_paging: vcpu.caps.has(Features::NP),
        cet: cpuid(0, 0)[0] >= 7 && cpuid(7, 0)[2] & (1 << 7) != 0,
    }
}

/// The host as the world switch's VMRUN runs: 64-bit, CPL 0, this CPU's EFER and CR0, RAX the
/// VMCB's address.
fn host(vcpu: &SvmVcpu) -> Host {
    Host {
        efer: rdmsr(m::IA32_EFER),
        cr0: cr0(),
        cpl: 0,
        v8086: false,
        vmcb_pa: vcpu.vmcb.address(),
    }
}

pub fn violations(vcpu: &SvmVcpu) -> Vec<Violation> {
    checks::check_vmrun(&vcpu.vmcb, &platform(vcpu), &host(vcpu))
}

/// Prints each VMRUN rule the current VMCB breaks; returns how many.
pub fn report_violations(vcpu: &SvmVcpu) -> usize {
    let found = violations(vcpu);
    for v in &found {
        println!("VMRUN check failed: {v}");
    }
    if found.is_empty() {
        log::info!(
            "VMRUN checks: {} rules, no violation",
            checks::rules::ALL.len()
        );
    }
    found.len()
}

/// After a VMRUN that exited with VMEXIT_INVALID: the rules the VMCB breaks, and whether they
/// explain it.
pub fn explain_failure(vcpu: &SvmVcpu) {
    let found = violations(vcpu);
    for v in &found {
        println!(
            "VMRUN check failed: {v} (reported as {})",
            v.expected_failure()
        );
    }
    let reported = Failure::VmexitInvalid;
    if checks::agrees(&found, reported) {
        println!("VMRUN checks agree with the processor: {reported}");
    } else if found.is_empty() {
        println!("VMRUN checks found no violated rule; rules that produce {reported}:");
        for r in checks::rules_for(reported) {
            println!("  [{}] APM Vol. 2 {}: {}", r.id, r.apm, r.requires);
        }
    } else {
        println!("VMRUN checks disagree with the processor: it reported {reported}");
    }
}
