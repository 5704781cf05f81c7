//! The VMX backend (Intel VT-x): turning VMX on, building a vCPU's VMCS, the world switch,
//! decoding exits into the exit layer's `Exit`, the EPT, and the reports that need the VMCS.
//! Everything above it sees the `vigil_core::vcpu::Vcpu` trait, which [`VmxVcpu`] implements.
//! An SVM backend (`amd/`) will sit beside it with the same shape.

pub mod ap;
pub mod calibrate;
pub mod checks;
mod decode;
pub mod ept;
pub mod flat;
pub mod instr;
pub mod nmi;
pub mod report;
pub mod setup;
pub mod switch;
mod vcpu;

pub use vcpu::VmxVcpu;

use crate::arch::regs;
use alloc::format;
use alloc::string::String;
use vigil_core::cpu::Exited;
use vigil_core::time::HiddenTime;
use vmx::caps::VmxCaps;
use vmx::exit::ExitReason;
use vmx::regs::{CR4_OSXSAVE, CR4_VMXE};
use vmx::vmcs::{Field, VmcsAccess};

const IA32_FEATURE_CONTROL: u32 = 0x3A;
const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// Checks that this CPU can run VMX and reads its capabilities (SDM Vol. 3C 24.6, 24.7).
pub fn capabilities() -> Result<VmxCaps, String> {
    if regs::cpuid(1, 0)[2] & (1 << 5) == 0 {
        return Err("this processor has no VMX (CPUID.1:ECX.VMX = 0)".into());
    }
    let fc = regs::rdmsr(IA32_FEATURE_CONTROL);
    if fc & FEATURE_CONTROL_LOCK != 0 && fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
        return Err(
            "VMX is disabled by the firmware (IA32_FEATURE_CONTROL is locked without VMX)".into(),
        );
    }
    if fc & FEATURE_CONTROL_LOCK == 0 {
        // SAFETY: enabling VMX outside SMX and locking the MSR is what firmware normally does.
        unsafe {
            regs::wrmsr(
                IA32_FEATURE_CONTROL,
                fc | FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMX_OUTSIDE_SMX,
            )
        };
    }
    Ok(VmxCaps::from_msrs(&mut |msr| {
        let value = regs::rdmsr(msr);
        log::trace!("capability MSR {msr:#x} = {value:#018x}");
        value
    }))
}

/// Enters VMX root operation on this CPU: CR0/CR4 fixed bits, CR4.VMXE, VMXON
/// (SDM Vol. 3C 24.7, 24.8).
pub fn vmxon(caps: &VmxCaps) -> Result<u64, String> {
    // SAFETY: forcing the fixed bits keeps Vigil's own mode valid (PE, PG and NE are already
    // set by the trampoline); VMXE only permits VMXON.
    unsafe {
        regs::write_cr0((regs::cr0() | caps.cr0_fixed0) & caps.cr0_fixed1);
        regs::write_cr4((regs::cr4() | caps.cr4_fixed0 | CR4_VMXE) & caps.cr4_fixed1);
    }
    // XCR0 is not switched by VMX: Vigil executes the guest's XSETBV itself, which needs
    // CR4.OSXSAVE on the host (SDM Vol. 2D XSETBV). Vigil uses no extended state of its own.
    if regs::cpuid(1, 0)[2] & (1 << 26) != 0 {
        // SAFETY: the processor has XSAVE; setting OSXSAVE only enables XGETBV/XSETBV.
        unsafe { regs::write_cr4(regs::cr4() | CR4_OSXSAVE) };
    }
    let region = crate::mem::alloc_frames(1).ok_or("out of memory for the VMXON region")?;
    // SAFETY: the region's first dword holds the revision identifier (SDM Vol. 3C 25.11.5).
    unsafe {
        (region as *mut u32).write(caps.revision_id());
        instr::vmxon(region).map_err(|e| format!("VMXON failed: {e:?}"))?;
    }
    Ok(region)
}

/// Why VM entry did not happen (SDM Vol. 3C 27.7 and 27.8).
#[derive(Clone, Copy, Debug)]
pub enum EntryFailure {
    /// VMLAUNCH/VMRESUME failed its own checks: the VM-instruction error number.
    Instruction(u32),
    /// No current VMCS.
    NoVmcs,
    /// The entry failed while loading guest state: exit reason 33, 34 or 41 and its qualification.
    GuestState { reason: u16, qualification: u64 },
}

impl VmxVcpu {
    /// Runs the guest until its next VM exit and decodes it.
    #[inline(always)]
    pub fn enter(&mut self) -> Result<Exited, EntryFailure> {
        // SAFETY: VMX root operation with this vCPU's VMCS current and its host state set.
        match unsafe { switch::run(&mut self.regs) } {
            switch::RunResult::FailInvalid => Err(EntryFailure::NoVmcs),
            switch::RunResult::FailValid => Err(EntryFailure::Instruction(
                self.vmcs.read(Field::VmInstructionError) as u32,
            )),
            switch::RunResult::Exit => {
                // The switch moved the offset (hidden exit time) if asked to.
                let hidden = (self.regs.hide != 0).then_some(HiddenTime {
                    offset: self.regs.tsc_offset,
                    deadline_armed: self.regs.deadline != 0,
                    disarm_tsc: self.regs.disarm_tsc,
                });
                let raw = self.vmcs.read(Field::VmExitReason) as u32;
                if raw & (1 << 31) != 0 {
                    let qualification = self.vmcs.read(Field::ExitQualification);
                    return Err(EntryFailure::GuestState {
                        reason: raw as u16,
                        qualification,
                    });
                }
                let (exit, interrupted) = decode::decode(self, raw);
                Ok(Exited {
                    exit,
                    interrupted,
                    exit_tsc: self.regs.exit_tsc,
                    hidden,
                })
            }
        }
    }

    /// Name of the current exit reason, for reports.
    pub fn exit_reason_name(&self) -> &'static str {
        ExitReason::from_u16(self.exit_reason).name()
    }
}
