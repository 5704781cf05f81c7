//! Running the `vmx` VM-entry checks against the live VMCS: before the first entry (with
//! `check-entry=on`), and after any failed entry to explain it.

use super::{EntryFailure, VmxVcpu};
use crate::arch::regs::cpuid;
use crate::println;
use alloc::vec::Vec;
use vmx::checks::{self, EntryFailureKind, Platform, Violation};
use vmx::regs::{CR4_LA57, EFER_LMA, EFER_LME, EFER_NXE, EFER_SCE};

/// The facts about this processor that the capability MSRs do not hold.
fn platform() -> Platform {
    let ext = cpuid(0x8000_0001, 0);
    let mut efer_supported = 0;
    if ext[3] & (1 << 11) != 0 {
        efer_supported |= EFER_SCE;
    }
    if ext[3] & (1 << 29) != 0 {
        efer_supported |= EFER_LME | EFER_LMA;
    }
    if ext[3] & (1 << 20) != 0 {
        efer_supported |= EFER_NXE;
    }
    let leaf7 = if cpuid(0, 0)[0] >= 7 {
        cpuid(7, 0)
    } else {
        [0; 4]
    };
    Platform {
        phys_addr_width: (cpuid(0x8000_0008, 0)[0] & 0xFF) as u8,
        linear_addr_width: if crate::arch::regs::cr4() & CR4_LA57 != 0 {
            57
        } else {
            48
        },
        host_long_mode: true,
        in_smm: false,
        efer_supported,
        // CET shadow stacks (CPUID.7.0:ECX[7]) or indirect-branch tracking (EDX[20]).
        cet: leaf7[2] & (1 << 7) != 0 || leaf7[3] & (1 << 20) != 0,
    }
}

pub fn violations(vcpu: &VmxVcpu) -> Vec<Violation> {
    checks::check_vm_entry_with(&vcpu.vmcs, &vcpu.caps, &platform())
}

/// Prints each VM-entry rule the current VMCS breaks; returns how many.
pub fn report_violations(vcpu: &VmxVcpu) -> usize {
    let found = violations(vcpu);
    for v in &found {
        println!("entry check failed: {v}");
    }
    if found.is_empty() {
        log::info!(
            "entry checks: {} rules, no violation",
            checks::rules::ALL.len()
        );
    }
    found.len()
}

/// After a failed entry: the rules the VMCS breaks, and whether they explain what the processor
/// reported.
pub fn explain_failure(vcpu: &VmxVcpu, failure: EntryFailure) {
    let reported = match failure {
        EntryFailure::Instruction(n) => Some(EntryFailureKind::from_instruction_error(n)),
        EntryFailure::GuestState { reason, .. } => {
            EntryFailureKind::from_exit_reason((1 << 31) | reason as u32)
        }
        EntryFailure::NoVmcs => None,
    };
    let found = violations(vcpu);
    for v in &found {
        println!(
            "entry check failed: {v} (reported as {})",
            v.expected_failure()
        );
    }
    let Some(reported) = reported else { return };
    if checks::agrees(&found, reported) {
        println!("entry checks agree with the processor: {reported}");
    } else if found.is_empty() {
        println!("entry checks found no violated rule; rules that produce {reported}:");
        for r in checks::rules_for(reported) {
            println!("  [{}] SDM Vol. 3C {}: {}", r.id, r.sdm, r.requires);
        }
    } else {
        println!("entry checks disagree with the processor: it reported {reported}");
    }
}
