//! Turning a VMX exit into the exit layer's `Exit` (SDM Vol. 3C 28.2 for the exit information
//! fields, Vol. 3D appendix C for the reasons). Fields are read only for the reasons that use
//! them: an instruction exit such as CPUID reads nothing beyond its reason.
//!
//! The IDT-vectoring information (the event whose delivery the exit interrupted, 28.2.4) is
//! read for the reasons that can happen during event delivery: exceptions, EPT violations and
//! misconfigurations, task switches and triple faults. An instruction exit never interrupts a
//! delivery.

use super::VmxVcpu;
use vigil_core::exit::{CrAccess, CrOp, DrAccess, Exit, IoAccess, NestedFault, TaskSwitchSource};
use vigil_core::nested::Perms;
use vigil_core::vcpu::{Interruptibility, Seg, Vcpu};
use vmx::exit::{
    CrAccessType, EptViolation, ExitReason, InstructionDetail, InstructionInfo, InterruptionInfo,
    IoQualification, MemOperand, SegReg, TaskSwitch,
};
use vmx::vmcs::{Field, VmcsAccess};
use x86_arch::event::{Event, DF};

/// `raw` is the exit-reason field, already read by the caller.
#[inline(always)]
pub fn decode(vcpu: &mut VmxVcpu, raw: u32) -> (Exit, Option<Event>) {
    // The exit every guest makes most, and the one whose cost a guest can time: decided before
    // the table of reasons.
    const CPUID: u16 = ExitReason::Cpuid.as_u16();
    let basic = raw as u16;
    vcpu.exit_reason = basic;
    if basic == CPUID {
        return (Exit::Cpuid, None);
    }
    let v = &vcpu.vmcs;
    let q = || v.read(Field::ExitQualification);
    let exit = match ExitReason::from_u16(basic) {
        ExitReason::Cpuid => Exit::Cpuid,
        ExitReason::Rdtsc => Exit::Rdtsc,
        ExitReason::Rdtscp => Exit::Rdtscp,
        ExitReason::Rdmsr => Exit::Rdmsr,
        ExitReason::Wrmsr => Exit::Wrmsr,
        ExitReason::IoInstruction => Exit::Io(io(vcpu, q())),
        ExitReason::Hlt => Exit::Hlt,
        ExitReason::Vmcall => Exit::Hypercall,
        ExitReason::Xsetbv => Exit::Xsetbv,
        ExitReason::Invd => Exit::Invd,
        ExitReason::Rdpmc => Exit::Rdpmc,
        ExitReason::Invlpg => Exit::Invlpg { linear: q() },
        ExitReason::ControlRegisterAccess => {
            let a = vmx::exit::CrAccess::decode(q());
            Exit::Cr(CrAccess {
                cr: a.cr,
                op: match a.access {
                    CrAccessType::MovToCr(r) => CrOp::Write(r.index()),
                    CrAccessType::MovFromCr(r) => CrOp::Read(r.index()),
                    CrAccessType::Clts => CrOp::Clts,
                    CrAccessType::Lmsw { source, .. } => CrOp::Lmsw(source),
                },
            })
        }
        ExitReason::MovDr => {
            let a = vmx::exit::DrAccess::decode(q());
            Exit::Dr(DrAccess {
                dr: a.dr,
                read: a.from_dr,
                gpr: a.gpr.index(),
            })
        }
        ExitReason::Invpcid => invpcid(vcpu, q()),
        ExitReason::ExceptionOrNmi => return exception(vcpu),
        ExitReason::EptViolation => {
            let ev = EptViolation(q());
            let f = NestedFault {
                gpa: v.read(Field::GuestPhysicalAddress),
                linear: ev
                    .linear_address_valid()
                    .then(|| v.read(Field::GuestLinearAddress)),
                read: ev.read(),
                write: ev.write(),
                fetch: ev.fetch(),
                allowed: Perms {
                    read: ev.readable(),
                    write: ev.writable(),
                    exec: ev.executable(),
                },
            };
            let interrupted = idt_vectoring(vcpu);
            if ev.nmi_unblocking() && interrupted.is_none() {
                reblock_nmi(vcpu);
            }
            return (Exit::NestedFault(f), interrupted);
        }
        ExitReason::EptMisconfiguration => {
            let gpa = v.read(Field::GuestPhysicalAddress);
            return (Exit::NestedMisconfig { gpa }, idt_vectoring(vcpu));
        }
        ExitReason::TaskSwitch => {
            let t = TaskSwitch::decode(q());
            let source = match t.source {
                vmx::exit::TaskSwitchSource::Call => TaskSwitchSource::Call,
                vmx::exit::TaskSwitchSource::Iret => TaskSwitchSource::Iret,
                vmx::exit::TaskSwitchSource::Jmp => TaskSwitchSource::Jmp,
                vmx::exit::TaskSwitchSource::TaskGate => TaskSwitchSource::Gate,
            };
            let exit = Exit::TaskSwitch {
                selector: t.selector,
                source,
            };
            return (exit, idt_vectoring(vcpu));
        }
        ExitReason::TripleFault => Exit::TripleFault,
        ExitReason::InitSignal => Exit::Init,
        ExitReason::StartupIpi => Exit::Sipi { vector: q() as u8 },
        ExitReason::InterruptWindow => Exit::InterruptWindow,
        ExitReason::NmiWindow => Exit::NmiWindow,
        ExitReason::Getsec => Exit::Undefined { mnemonic: "getsec" },
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
        | ExitReason::Vmfunc) => Exit::Undefined { mnemonic: r.name() },
        ExitReason::MonitorTrapFlag => Exit::Step,
        ExitReason::PreemptionTimer => Exit::Timer,
        r => Exit::Unhandled { reason: r.name() },
    };
    (exit, None)
}

/// The event this exit interrupted, if it interrupted one.
fn idt_vectoring(vcpu: &VmxVcpu) -> Option<Event> {
    let info = InterruptionInfo(vcpu.vmcs.read(Field::IdtVectoringInfo) as u32);
    if !info.valid() {
        return None;
    }
    let code = if info.has_error_code() {
        vcpu.vmcs.read(Field::IdtVectoringErrorCode) as u32
    } else {
        0
    };
    let len = if info.kind().needs_instruction_length() {
        vcpu.vmcs.read(Field::VmExitInstructionLength)
    } else {
        0
    };
    info.event(code, len)
}

/// "NMI unblocking due to IRET": the exit interrupted an IRET that had unblocked NMIs, so the
/// VMM must block them again before resuming the guest (SDM Vol. 3C 28.2.3, 33.3.x
/// "Resuming Guest Software after Handling an Exception").
fn reblock_nmi(vcpu: &mut VmxVcpu) {
    let i = vcpu.interruptibility();
    vcpu.set_interruptibility(Interruptibility { nmi: true, ..i });
}

fn exception(vcpu: &mut VmxVcpu) -> (Exit, Option<Event>) {
    let v = &vcpu.vmcs;
    let info = InterruptionInfo(v.read(Field::VmExitInterruptionInfo) as u32);
    let code = if info.has_error_code() {
        v.read(Field::VmExitInterruptionErrorCode) as u32
    } else {
        0
    };
    let len = if info.kind().needs_instruction_length() {
        v.read(Field::VmExitInstructionLength)
    } else {
        0
    };
    // #PF: the faulting address; #DB: B0-B3, BD and BS (SDM Vol. 3C 28.2.1).
    let extra = v.read(Field::ExitQualification);
    let interrupted = idt_vectoring(vcpu);
    if info.nmi_unblocking() && interrupted.is_none() && info.vector() != DF {
        reblock_nmi(vcpu);
    }
    let exit = match info.event(code, len) {
        Some(event) => Exit::Exception { event, info: extra },
        None => Exit::Unhandled {
            reason: "exception or NMI with an undefined interruption type",
        },
    };
    (exit, interrupted)
}

fn seg(r: SegReg) -> Seg {
    match r {
        SegReg::Es => Seg::Es,
        SegReg::Cs => Seg::Cs,
        SegReg::Ss => Seg::Ss,
        SegReg::Fs => Seg::Fs,
        SegReg::Gs => Seg::Gs,
        SegReg::Ds | SegReg::Invalid(_) => Seg::Ds,
    }
}

fn io(vcpu: &VmxVcpu, q: u64) -> IoAccess {
    let q = IoQualification::decode(q);
    let (addr_size, segment) = if q.string {
        let info = InstructionInfo(vcpu.vmcs.read(Field::VmExitInstructionInfo) as u32);
        match info.decode(ExitReason::IoInstruction) {
            Some(InstructionDetail::StringIo {
                address_size,
                segment,
            }) => (address_size / 8, seg(segment)),
            _ => (8, Seg::Ds),
        }
    } else {
        (8, Seg::Ds)
    };
    IoAccess {
        port: q.port,
        size: q.size,
        input: q.input,
        string: q.string,
        rep: q.rep,
        addr_size,
        segment,
    }
}

/// INVPCID's descriptor address: segment base + base + index × scale + displacement (the
/// displacement is the exit qualification), at the operand's address size (SDM Vol. 3C 28.2.1,
/// 28.2.5).
fn invpcid(vcpu: &VmxVcpu, displacement: u64) -> Exit {
    let info = InstructionInfo(vcpu.vmcs.read(Field::VmExitInstructionInfo) as u32);
    let Some(InstructionDetail::Invalidation { descriptor, kind }) =
        info.decode(ExitReason::Invpcid)
    else {
        return Exit::Unhandled {
            reason: "INVPCID without instruction information",
        };
    };
    Exit::Invpcid {
        kind_gpr: kind.index(),
        descriptor: operand_address(vcpu, &descriptor, displacement),
    }
}

fn operand_address(vcpu: &VmxVcpu, m: &MemOperand, displacement: u64) -> u64 {
    let mut offset = displacement;
    if let Some(b) = m.base {
        offset = offset.wrapping_add(vcpu.gpr(b.index()));
    }
    if let Some(i) = m.index {
        offset = offset.wrapping_add(vcpu.gpr(i.index()).wrapping_mul(m.scale as u64));
    }
    offset &= match m.address_size {
        16 => 0xFFFF,
        32 => 0xFFFF_FFFF,
        _ => u64::MAX,
    };
    let long = vcpu.long_mode_64();
    let segment = seg(m.segment);
    let base = if long && !matches!(segment, Seg::Fs | Seg::Gs) {
        0
    } else {
        vcpu.segment(segment).base
    };
    let linear = base.wrapping_add(offset);
    if long {
        linear
    } else {
        linear & 0xFFFF_FFFF
    }
}
