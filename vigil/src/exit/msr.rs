//! RDMSR and WRMSR (exit reasons 31 and 32). They exit for MSRs whose bit is set in the MSR
//! bitmaps and for every MSR outside the bitmaps' two ranges (SDM Vol. 3C 26.1.3).
//!
//! - Vigil's own MSRs: IA32_FEATURE_CONTROL reads back with the VMX-enable bits clear (the guest
//!   sees a processor without VMX); the VMX capability MSRs raise #GP as they do on such a
//!   processor.
//! - The time-stamp counter: IA32_TSC reads the virtual TSC, and writing it moves the guest's
//!   offset instead of the host's counter; in the virtual-time modes IA32_TSC_ADJUST and the
//!   TSC deadline are kept in guest units too (`vmm/time.rs`).
//! - MSRs that VM entry and exit switch through the VMCS (EFER, PAT, SYSENTER, DEBUGCTL, FS and
//!   GS base) live in guest-state fields; touching the host MSR would change Vigil instead.
//! - Everything else is executed on the guest's behalf; an MSR the processor rejects gets the
//!   same #GP the guest would have had on bare metal.

use super::{Action, Fault};
use crate::arch::safe::{rdmsr_safe, wrmsr_safe};
use crate::vmm::Vcpu;
use vmx::vmcs::{Field, VmcsAccess};

use crate::vmm::time::{IA32_TSC, IA32_TSC_ADJUST, IA32_TSC_DEADLINE};
const IA32_FEATURE_CONTROL: u32 = 0x3A;
const FEATURE_CONTROL_VMX: u64 = (1 << 1) | (1 << 2);
const VMX_CAPABILITY_MSRS: core::ops::RangeInclusive<u32> = 0x480..=0x493;
const IA32_EFER: u32 = 0xC000_0080;
/// EFER bits a guest may set: SCE, LME, NXE (LMA is read-only and follows CR0.PG).
const EFER_WRITABLE: u64 = (1 << 0) | (1 << 8) | (1 << 11);
const EFER_LMA: u64 = 1 << 10;

/// The guest-state field that holds an MSR VMX switches on entry and exit (SDM Vol. 3C 25.4.1).
fn vmcs_field(msr: u32) -> Option<Field> {
    Some(match msr {
        0x174 => Field::GuestIa32SysenterCs,
        0x175 => Field::GuestIa32SysenterEsp,
        0x176 => Field::GuestIa32SysenterEip,
        0x1D9 => Field::GuestIa32Debugctl,
        0x277 => Field::GuestIa32Pat,
        IA32_EFER => Field::GuestIa32Efer,
        0xC000_0100 => Field::GuestFsBase,
        0xC000_0101 => Field::GuestGsBase,
        _ => return None,
    })
}

/// IA32_TSC is always Vigil's when trapped (the guest sets its own clock, never the host's);
/// IA32_TSC_ADJUST and the deadline are Vigil's in the virtual-time modes.
fn owns_time_msr(vcpu: &Vcpu, msr: u32) -> bool {
    msr == IA32_TSC
        || (vcpu.config.tsc.virtualized() && matches!(msr, IA32_TSC_ADJUST | IA32_TSC_DEADLINE))
}

pub fn handle_read(vcpu: &mut Vcpu) -> Action {
    let msr = vcpu.regs.rcx as u32;
    let value = match msr {
        m if owns_time_msr(vcpu, m) => vcpu.read_tsc_msr(m),
        IA32_FEATURE_CONTROL => rdmsr_safe(msr).map(|v| v & !FEATURE_CONTROL_VMX),
        m if VMX_CAPABILITY_MSRS.contains(&m) => None,
        m => match vmcs_field(m) {
            Some(field) => Some(vcpu.vmcs.read(field)),
            None => rdmsr_safe(m),
        },
    };
    if vcpu.config.log_exits {
        log::info!("rdmsr {msr:#x} -> {value:x?} (rip {:#x})", vcpu.rip());
    }
    match value {
        Some(v) => {
            vcpu.set_edx_eax(v);
            Action::Advance
        }
        None => Action::Inject(Fault::GP0),
    }
}

pub fn handle_write(vcpu: &mut Vcpu) -> Action {
    let msr = vcpu.regs.rcx as u32;
    let value = vcpu.edx_eax();
    if vcpu.config.log_exits {
        log::info!("wrmsr {msr:#x} <- {value:#x} (rip {:#x})", vcpu.rip());
    }
    let ok = match msr {
        m if owns_time_msr(vcpu, m) => vcpu.write_tsc_msr(m, value),
        // Locked on every machine Vigil runs on (VMXON needs it locked): writes fault.
        IA32_FEATURE_CONTROL => false,
        m if VMX_CAPABILITY_MSRS.contains(&m) => false,
        IA32_EFER => {
            let old = vcpu.efer();
            // Reserved bits fault, and LME may not change while paging is on (SDM Vol. 3A 2.2.1,
            // 10.8.5).
            let lme_changed = (old ^ value) & (1 << 8) != 0;
            if value & !(EFER_WRITABLE | EFER_LMA) != 0 || (lme_changed && vcpu.paging()) {
                false
            } else {
                vcpu.vmcs.write(
                    Field::GuestIa32Efer,
                    (value & EFER_WRITABLE) | (old & EFER_LMA),
                );
                true
            }
        }
        m => match vmcs_field(m) {
            Some(field) => {
                vcpu.vmcs.write(field, value);
                true
            }
            None => wrmsr_safe(m, value),
        },
    };
    if ok {
        Action::Advance
    } else {
        Action::Inject(Fault::GP0)
    }
}
