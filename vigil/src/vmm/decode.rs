//! Turning a VMX exit into the vendor-neutral `Exit` (SDM Vol. 3C 28.2 for the exit
//! information fields, Vol. 3D appendix C for the reasons).

use super::Vcpu;
use crate::exit::Exit;
use vmx::exit::{CrAccess, DrAccess, EptViolation, ExitReason, InterruptionInfo, IoQualification};
use vmx::vmcs::{Field, VmcsAccess};

/// `raw` is the exit-reason field, already read by the caller.
pub fn decode(vcpu: &mut Vcpu, raw: u32) -> Exit {
    let basic = raw as u16;
    let q = vcpu.vmcs.read(Field::ExitQualification);
    vcpu.exit_reason = basic;
    vcpu.exit_qualification = q;
    match ExitReason::from_u16(basic) {
        ExitReason::ExceptionOrNmi => {
            let info = InterruptionInfo(vcpu.vmcs.read(Field::VmExitInterruptionInfo) as u32);
            let error_code = info
                .has_error_code()
                .then(|| vcpu.vmcs.read(Field::VmExitInterruptionErrorCode) as u32);
            Exit::Exception {
                vector: info.vector(),
                error_code,
            }
        }
        ExitReason::TripleFault => Exit::TripleFault,
        ExitReason::InitSignal => Exit::InitSignal,
        ExitReason::Cpuid => Exit::Cpuid,
        ExitReason::Getsec => Exit::UndefinedForGuest { mnemonic: "getsec" },
        ExitReason::Hlt => Exit::Hlt,
        ExitReason::Invlpg => Exit::Invlpg { address: q },
        ExitReason::Rdpmc => Exit::Rdpmc,
        ExitReason::Invd => Exit::Invd,
        ExitReason::Rdtsc => Exit::Rdtsc,
        ExitReason::Rdtscp => Exit::Rdtscp,
        ExitReason::Vmcall => Exit::Vmcall,
        r @ (ExitReason::Vmclear
        | ExitReason::Vmlaunch
        | ExitReason::Vmptrld
        | ExitReason::Vmptrst
        | ExitReason::Vmread
        | ExitReason::Vmresume
        | ExitReason::Vmwrite
        | ExitReason::Vmxoff
        | ExitReason::Vmxon
        | ExitReason::Invept
        | ExitReason::Invvpid
        | ExitReason::Vmfunc) => Exit::UndefinedForGuest { mnemonic: r.name() },
        ExitReason::ControlRegisterAccess => Exit::CrAccess(CrAccess::decode(q)),
        ExitReason::MovDr => Exit::MovDr(DrAccess::decode(q)),
        ExitReason::IoInstruction => Exit::Io(IoQualification::decode(q)),
        ExitReason::Rdmsr => Exit::Rdmsr,
        ExitReason::Wrmsr => Exit::Wrmsr,
        ExitReason::Xsetbv => Exit::Xsetbv,
        ExitReason::EptViolation => {
            let ev = EptViolation(q);
            let gpa = vcpu.vmcs.read(Field::GuestPhysicalAddress);
            let linear = ev
                .linear_address_valid()
                .then(|| vcpu.vmcs.read(Field::GuestLinearAddress));
            Exit::EptViolation {
                gpa,
                linear,
                read: ev.read(),
                write: ev.write(),
                fetch: ev.fetch(),
            }
        }
        ExitReason::MonitorTrapFlag => Exit::MonitorTrap,
        ExitReason::PreemptionTimer => Exit::PreemptionTimer,
        ExitReason::EptMisconfiguration => Exit::EptMisconfig {
            gpa: vcpu.vmcs.read(Field::GuestPhysicalAddress),
        },
        _ => Exit::Unhandled,
    }
}
