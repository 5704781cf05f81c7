//! RDMSR and WRMSR, for MSRs that exit: the ones the ownership table (`crate::owners`) gives a
//! handler, and every MSR the backend's bitmap cannot cover (VMX: outside its two ranges, SDM
//! Vol. 3C 26.1.3). The table decides who serves each access:
//!
//! - Vigil's virtualization MSRs: IA32_FEATURE_CONTROL reads back locked with VMX disabled; the
//!   VMX capability MSRs raise #GP, as on a processor without VMX.
//! - Time: the guest's TSC, TSC_ADJUST and deadline in guest units, and in the hiding modes
//!   MPERF and APERF (`crate::time`).
//! - State the processor switches (EFER, PAT, SYSENTER, DEBUGCTL, the FS/GS bases...): the
//!   vCPU's copy, or the host register where the backend does not switch it. A value the
//!   processor would refuse gets the #GP its WRMSR would raise, before it can reach the control
//!   block and make the next entry fail (SDM Vol. 4 for each MSR; Vol. 3C 27.3.1.1 for what
//!   entry checks).
//! - Everything else runs on the host, which the guest shares; the processor's own #GP comes
//!   back to the guest as #GP.

use super::Action;
use crate::cpu::Cpu;
use crate::owners::{MsrHandler, IA32_FEATURE_CONTROL};
use crate::vcpu::{msr as m, Host, Vcpu};
use x86_arch::event::Event;
use x86_arch::regs::{
    pat_is_valid, CR0_PG, CR4_LA57, DEBUGCTL_RESERVED, EFER_LMA, EFER_LME, EFER_NXE, EFER_SCE,
};

/// IA32_FEATURE_CONTROL bits that enable VMX (inside and outside SMX).
const FEATURE_CONTROL_VMX: u64 = (1 << 1) | (1 << 2);
/// EFER bits a guest may set: SCE, LME, NXE. LMA is the processor's (writes keep it).
const EFER_WRITABLE: u64 = EFER_SCE | EFER_LME | EFER_NXE;

pub fn read<V: Vcpu>(cpu: &mut Cpu<V>) -> Action {
    let msr = cpu.vcpu.gpr(1) as u32;
    let value = match cpu.vm.owners.msrs.handler(msr, false) {
        MsrHandler::FeatureControl => cpu
            .vcpu
            .host()
            .rdmsr(IA32_FEATURE_CONTROL)
            .map(|v| v & !FEATURE_CONTROL_VMX),
        MsrHandler::Absent => None,
        MsrHandler::Time => {
            let exit_tsc = cpu.exit_tsc;
            cpu.time.read_msr(cpu.vcpu.host(), msr, exit_tsc)
        }
        MsrHandler::Vcpu => match cpu.vcpu.msr(msr) {
            Some(v) => Some(v),
            None => cpu.vcpu.host().rdmsr(msr),
        },
        MsrHandler::Forward => cpu.vcpu.host().rdmsr(msr),
    };
    if cpu.config().log_exits {
        log::info!("rdmsr {msr:#x} -> {value:x?} (rip {:#x})", cpu.vcpu.rip());
    }
    match value {
        Some(v) => {
            cpu.set_edx_eax(v);
            Action::Advance
        }
        None => Action::Inject(Event::GP0),
    }
}

pub fn write<V: Vcpu>(cpu: &mut Cpu<V>) -> Action {
    let msr = cpu.vcpu.gpr(1) as u32;
    let value = cpu.edx_eax();
    if cpu.config().log_exits {
        log::info!("wrmsr {msr:#x} <- {value:#x} (rip {:#x})", cpu.vcpu.rip());
    }
    let ok = match cpu.vm.owners.msrs.handler(msr, true) {
        // Locked on every machine Vigil runs on (VMXON needs it locked): writes fault.
        MsrHandler::FeatureControl | MsrHandler::Absent => false,
        MsrHandler::Time => {
            let exit_tsc = cpu.exit_tsc;
            cpu.time.write_msr(&mut cpu.vcpu, msr, value, exit_tsc)
        }
        MsrHandler::Vcpu => match checked(&cpu.vcpu, msr, value) {
            Some(v) => cpu.vcpu.set_msr(msr, v) || cpu.vcpu.host().wrmsr(msr, v),
            None => false,
        },
        MsrHandler::Forward => {
            checked(&cpu.vcpu, msr, value).is_some_and(|v| cpu.vcpu.host().wrmsr(msr, v))
        }
    };
    if ok {
        Action::Advance
    } else {
        Action::Inject(Event::GP0)
    }
}

/// The value a WRMSR of a switched MSR stores, or `None` where the processor raises #GP.
fn checked<V: Vcpu>(vcpu: &V, msr: u32, value: u64) -> Option<u64> {
    let canonical = || {
        let width = if vcpu.cr4() & CR4_LA57 != 0 { 57 } else { 48 };
        x86_arch::is_canonical(value, width)
    };
    let ok = match msr {
        m::IA32_EFER => {
            let old = vcpu.efer();
            // Reserved bits fault, and LME may not change while paging is on (SDM Vol. 3A
            // 2.2.1, 10.8.5).
            let lme_changed = (old ^ value) & EFER_LME != 0;
            if value & !(EFER_WRITABLE | EFER_LMA) != 0 || (lme_changed && vcpu.cr0() & CR0_PG != 0)
            {
                return None;
            }
            return Some((value & EFER_WRITABLE) | (old & EFER_LMA));
        }
        // Every byte a valid memory type (SDM Vol. 3A 12.12.2).
        m::IA32_PAT => pat_is_valid(value),
        m::IA32_DEBUGCTL => value & DEBUGCTL_RESERVED == 0,
        // Addresses the processor will use must be canonical (SDM Vol. 2B WRMSR).
        m::IA32_SYSENTER_ESP
        | m::IA32_SYSENTER_EIP
        | m::IA32_FS_BASE
        | m::IA32_GS_BASE
        | m::IA32_KERNEL_GS_BASE
        | m::IA32_LSTAR
        | m::IA32_CSTAR => canonical(),
        _ => true,
    };
    ok.then_some(value)
}
