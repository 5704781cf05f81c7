//! RDMSR and WRMSR, for MSRs that exit: the ones the ownership table (`crate::owners`) gives a
//! handler, and every MSR the backend's bitmap cannot cover (VMX: outside its two ranges, SDM
//! Vol. 3C 26.1.3). The table decides who serves each access:
//!
//! - Vigil's virtualization MSRs: IA32_FEATURE_CONTROL reads back locked with VMX disabled; the
//!   VMX capability MSRs raise #GP, as on a processor without VMX.
//! - Time: the guest's TSC, TSC_ADJUST and deadline in guest units (`crate::time`).
//! - State the processor switches (EFER, PAT, SYSENTER, DEBUGCTL, the FS/GS bases...): the
//!   vCPU's copy, or the host register where the backend does not switch it. A value the
//!   processor would refuse gets the #GP its WRMSR would raise, before it can reach the control
//!   block and make the next entry fail (SDM Vol. 4 for each MSR; Vol. 3C 27.3.1.1 for what
//!   entry checks).
//! - The platform's MSRs (`crate::platform`): the APIC base, x2APIC SMI IPIs, the MTRRs (the
//!   guest's own copy), MISC_ENABLE's XD disable, and the MSRs that hold addresses the processor
//!   writes to (DS_AREA, Intel PT output), checked against Vigil's memory.
//! - MSRs on the ownership table's pass-through list never exit. Any other MSR is read on the
//!   host (the guest sees what bare metal shows; the processor's own #GP comes back as #GP),
//!   and written nowhere: #GP.

use super::Action;
use crate::cpu::Cpu;
use crate::owners::{
    MsrHandler, IA32_APIC_BASE, IA32_DS_AREA, IA32_FEATURE_CONTROL, IA32_RTIT_CTL,
    IA32_RTIT_OUTPUT_BASE, IA32_RTIT_OUTPUT_MASK_PTRS,
};
use crate::platform;
use crate::vcpu::{msr as m, Host, Vcpu};
use x86_arch::event::Event;
use x86_arch::regs::{
    pat_is_valid, CR0_PG, CR4_LA57, DEBUGCTL_RESERVED, EFER_LMA, EFER_LME, EFER_NXE, EFER_SCE,
};

/// IA32_FEATURE_CONTROL bits that enable VMX (inside and outside SMX).
const FEATURE_CONTROL_VMX: u64 = (1 << 1) | (1 << 2);
/// IA32_MISC_ENABLE bit 34: XD bit disable (SDM Vol. 4 Table 2-2).
const MISC_ENABLE_XD_DISABLE: u64 = 1 << 34;
/// Vigil's virtual window (its image runs there, vigil/link.ld).
const VIGIL_WINDOW: u64 = 0xFFFF_FFFF_8000_0000;
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
        MsrHandler::Mtrr => cpu.vm.platform.state.lock().mtrrs.read(msr),
        MsrHandler::Forward
        | MsrHandler::ApicBase
        | MsrHandler::X2apicIcr
        | MsrHandler::MiscEnable
        | MsrHandler::Address
        | MsrHandler::Default => cpu.vcpu.host().rdmsr(msr),
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
        MsrHandler::Time => cpu.time.write_msr(&mut cpu.vcpu, msr, value),
        MsrHandler::Vcpu => match checked(&cpu.vcpu, msr, value) {
            Some(v) => cpu.vcpu.set_msr(msr, v) || cpu.vcpu.host().wrmsr(msr, v),
            None => false,
        },
        MsrHandler::Forward => {
            checked(&cpu.vcpu, msr, value).is_some_and(|v| cpu.vcpu.host().wrmsr(msr, v))
        }
        MsrHandler::ApicBase => apic_base(cpu, value),
        MsrHandler::X2apicIcr => {
            if platform::apic::is_smi_ipi(value) {
                log::info!("x2APIC SMI IPI (ICR <- {value:#x}) dropped: SMM is not the guest's");
                true
            } else {
                cpu.vcpu.host().wrmsr(msr, value)
            }
        }
        MsrHandler::Mtrr => {
            let bits = cpu.vcpu.phys_addr_bits();
            let memory = &cpu.vm.platform.memory;
            cpu.vm
                .platform
                .state
                .lock()
                .mtrrs
                .write(msr, value, bits, memory)
        }
        MsrHandler::MiscEnable => {
            if value & MISC_ENABLE_XD_DISABLE != 0 {
                log::info!("IA32_MISC_ENABLE <- {value:#x} refused: XD disable would break Vigil's page tables");
                false
            } else {
                cpu.vcpu.host().wrmsr(msr, value)
            }
        }
        MsrHandler::Address => address(cpu, msr, value),
        MsrHandler::Default => {
            log::debug!(
                "wrmsr {msr:#x} <- {value:#x} refused: not on Vigil's list (rip {:#x})",
                cpu.vcpu.rip()
            );
            false
        }
    };
    if ok {
        Action::Advance
    } else {
        Action::Inject(Event::GP0)
    }
}

/// IA32_APIC_BASE: the base moves only onto guest RAM or back to the default page
/// (`platform::apic`); the processor checks the rest.
fn apic_base<V: Vcpu>(cpu: &mut Cpu<V>, value: u64) -> bool {
    let Some(old) = cpu.vcpu.host().rdmsr(IA32_APIC_BASE) else {
        return false;
    };
    let bits = cpu.vcpu.phys_addr_bits();
    let (v, refused) = platform::apic::base_write(old, value, bits, &cpu.vm.platform.memory);
    if let Some(base) = refused {
        log::info!(
            "IA32_APIC_BASE <- {value:#x}: the APIC page stays at {:#x} ({base:#x} is not guest RAM)",
            old & !0xFFF & ((1u64 << bits) - 1)
        );
    }
    cpu.vcpu.host().wrmsr(IA32_APIC_BASE, v)
}

/// MSRs that hold an address the processor writes to.
fn address<V: Vcpu>(cpu: &mut Cpu<V>, msr: u32, value: u64) -> bool {
    let memory = &cpu.vm.platform.memory;
    let refused = match msr {
        // A linear address, used only while the guest runs (BTS is off in VMX root, PEBS is
        // not offered); still never one of Vigil's: its window, or its memory through the
        // identity map.
        IA32_DS_AREA => {
            let width = if cpu.vcpu.cr4() & CR4_LA57 != 0 {
                57
            } else {
                48
            };
            if !x86_arch::is_canonical(value, width) {
                return false;
            }
            value >= VIGIL_WINDOW || memory.touches_vigil(value & !0xFFF, (value & !0xFFF) + 0x1000)
        }
        // A physical output region: base and size together, only guest RAM.
        IA32_RTIT_OUTPUT_BASE | IA32_RTIT_OUTPUT_MASK_PTRS => {
            let host = cpu.vcpu.host();
            let (base, mask) = if msr == IA32_RTIT_OUTPUT_BASE {
                (value, host.rdmsr(IA32_RTIT_OUTPUT_MASK_PTRS).unwrap_or(0))
            } else {
                (host.rdmsr(IA32_RTIT_OUTPUT_BASE).unwrap_or(0), value)
            };
            let start = base & !0x7F;
            let end = start + ((mask & 0xFFFF_FF80) | 0x7F) + 1;
            !memory.is_ram(start, end) || memory.touches_vigil(start, end)
        }
        // ToPA (bit 8): output regions listed in a table in memory, which Vigil could not check.
        IA32_RTIT_CTL => value & (1 << 8) != 0,
        _ => false,
    };
    if refused {
        log::info!("wrmsr {msr:#x} <- {value:#x} refused: the address is not the guest's");
        return false;
    }
    cpu.vcpu.host().wrmsr(msr, value)
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
