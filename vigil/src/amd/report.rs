//! Reports for the moments a human must read: an exit Vigil cannot handle, a VMRUN that
//! failed. Each prints the exit code and information, the guest's registers and the whole
//! VMCB.

use super::SvmVcpu;
use crate::println;
use crate::serial::CONSOLE;
use svm::exit::{EventInfo, ExitCode};
use svm::vmcb::{Field, VmcbAccess};
use vigil_core::vcpu::Vcpu;

pub fn guest_registers(vcpu: &SvmVcpu) {
    let r = &vcpu.regs;
    println!("guest registers:");
    println!(
        "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
        vcpu.gpr(0),
        r.rbx,
        r.rcx,
        r.rdx
    );
    println!(
        "  rsi={:#018x} rdi={:#018x} rbp={:#018x} rsp={:#018x}",
        r.rsi,
        r.rdi,
        r.rbp,
        vcpu.gpr(4)
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
        vcpu.vmcb.read(Field::CsSelector),
        vcpu.cpl(),
        vcpu.cr0(),
        vcpu.cr3(),
        vcpu.cr4(),
        vcpu.efer()
    );
}

fn vmcb_dump(vcpu: &SvmVcpu) {
    println!("VMCB:");
    let mut console = CONSOLE.lock();
    let _ = svm::vmcb::dump(&vcpu.vmcb, &mut *console);
}

/// An exit that ends the guest: what happened, the exit as the processor reported it, the
/// guest's registers and the VMCB. The `exit reason` line has the exit code as its number.
pub fn exit_report(vcpu: &SvmVcpu, what: &str) {
    let code = vcpu.exit.code;
    println!("==== exit report: {what}");
    println!(
        "exit reason {:#x} ({}), EXITINFO1 {:#x}, EXITINFO2 {:#x}, EXITINTINFO {}",
        code.0,
        code.name(),
        vcpu.exit.info1,
        vcpu.exit.info2,
        EventInfo(vcpu.vmcb.read(Field::ExitIntInfo))
    );
    guest_registers(vcpu);
    vmcb_dump(vcpu);
    println!("==== end of exit report");
}

/// A VMRUN that failed its consistency checks: the exit code, the checks that explain it, and
/// the VMCB as the processor saw it.
pub fn vmrun_failure(vcpu: &SvmVcpu, code: ExitCode) {
    println!("==== VMRUN failure");
    println!("exit code {code}: the processor's consistency checks refused the VMCB");
    super::checks::explain_failure(vcpu);
    guest_registers(vcpu);
    vmcb_dump(vcpu);
    println!("==== end of VMRUN failure report");
}
