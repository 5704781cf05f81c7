//! Reports for the moments a human must read: an exit Vigil cannot handle, a failed VM entry,
//! a fault in Vigil itself. Each one prints everything needed to understand it without
//! re-running: the exit reason and qualification, the guest's registers, and the whole VMCS.

use super::{EntryFailure, VmxVcpu};
use crate::println;
use crate::serial::CONSOLE;
use vigil_core::vcpu::Vcpu;
use vmx::vmcs::{Field, VmcsAccess};

pub fn guest_registers(vcpu: &VmxVcpu) {
    let r = &vcpu.regs;
    let v = &vcpu.vmcs;
    println!("guest registers:");
    println!(
        "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
        r.rax, r.rbx, r.rcx, r.rdx
    );
    println!(
        "  rsi={:#018x} rdi={:#018x} rbp={:#018x} rsp={:#018x}",
        r.rsi,
        r.rdi,
        r.rbp,
        v.read(Field::GuestRsp)
    );
    println!(
        "  r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}",
        r.r8, r.r9, r.r10, r.r11
    );
    println!(
        "  r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}",
        r.r12, r.r13, r.r14, r.r15
    );
    println!(
        "  rip={:#018x} rflags={:#010x} cs={:#06x} cpl={} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
        vcpu.rip(),
        vcpu.rflags(),
        v.read(Field::GuestCsSelector),
        vcpu.cpl(),
        vcpu.cr0(),
        vcpu.cr3(),
        vcpu.cr4(),
        vcpu.efer()
    );
}

fn vmcs_dump(vcpu: &VmxVcpu) {
    println!("VMCS:");
    let mut console = CONSOLE.lock();
    let _ = vmx::vmcs::dump(&vcpu.vmcs, &mut *console);
}

/// An exit that ends the guest: what happened, the decoded exit, registers and VMCS.
pub fn exit_report(vcpu: &VmxVcpu, what: &str) {
    println!("==== exit report: {what}");
    println!(
        "exit reason {} ({}), qualification {:#x}, instruction length {}",
        vcpu.exit_reason,
        vcpu.exit_reason_name(),
        vcpu.vmcs.read(Field::ExitQualification),
        vcpu.vmcs.read(Field::VmExitInstructionLength)
    );
    guest_registers(vcpu);
    vmcs_dump(vcpu);
    println!("==== end of exit report");
}

/// A VM entry that failed: the error, and the VMCS as the processor saw it.
pub fn entry_failure(vcpu: &VmxVcpu, failure: EntryFailure) {
    println!("==== VM-entry failure");
    match failure {
        EntryFailure::Instruction(n) => {
            println!(
                "VM-instruction error {n}: {}",
                vmx::vmcs::vm_instruction_error_name(n)
            );
        }
        EntryFailure::NoVmcs => println!("VMfailInvalid: no current VMCS"),
        EntryFailure::GuestState {
            reason,
            qualification,
        } => {
            let r = vmx::exit::ExitReason::from_u16(reason);
            println!(
                "exit reason {reason} ({}), qualification {qualification}: {}",
                r.name(),
                vmx::exit::entry_failure_qualification_name(r, qualification)
            );
        }
    }
    super::checks::explain_failure(vcpu, failure);
    guest_registers(vcpu);
    vmcs_dump(vcpu);
    println!("==== end of VM-entry failure report");
}
