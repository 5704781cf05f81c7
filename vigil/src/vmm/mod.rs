//! The VMX backend: turning VMX on, building a vCPU's VMCS, entering the guest and decoding
//! its exits. Everything above this module sees `Vcpu` methods and `exit::Exit` values.

mod decode;
pub mod ept_space;
pub mod guest_mem;
pub mod instr;
pub mod setup;
pub mod switch;
pub mod time;
mod vcpu;

pub use vcpu::Vcpu;

use crate::arch::regs;
use crate::exit::{Action, Exit, Fault};
use alloc::format;
use alloc::string::String;
use vmx::caps::VmxCaps;
use vmx::exit::{ExitReason, InterruptionInfo};
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

impl Vcpu {
    /// Runs the guest until its next VM exit and decodes it.
    pub fn enter(&mut self) -> Result<Exit, EntryFailure> {
        // SAFETY: VMX root operation with this vCPU's VMCS current and its host state set.
        match unsafe { switch::run(&mut self.regs) } {
            switch::RunResult::FailInvalid => Err(EntryFailure::NoVmcs),
            switch::RunResult::FailValid => Err(EntryFailure::Instruction(
                self.vmcs.read(Field::VmInstructionError) as u32,
            )),
            switch::RunResult::Exit => {
                if self.regs.hide != 0 {
                    // The switch moved the offset (hidden exit time).
                    self.after_hidden_exit();
                }
                let raw = self.vmcs.read(Field::VmExitReason) as u32;
                if raw & (1 << 31) != 0 {
                    let qualification = self.vmcs.read(Field::ExitQualification);
                    return Err(EntryFailure::GuestState {
                        reason: raw as u16,
                        qualification,
                    });
                }
                Ok(decode::decode(self, raw))
            }
        }
    }

    /// Carries out a handler's decision before the next entry.
    pub fn apply(&mut self, action: Action) {
        match action {
            Action::Resume | Action::Stop(_) => {}
            Action::Advance => {
                // Outside 64-bit mode RIP wraps at 4 GiB. Asking which mode the guest is in costs
                // two VMREADs, so only when it matters: a RIP above 4 GiB is 64-bit code already,
                // and below it only a sum that crosses 4 GiB can wrap.
                let old = self.rip();
                let mut rip = old.wrapping_add(self.instruction_length());
                if old <= 0xFFFF_FFFF && rip > 0xFFFF_FFFF && !self.long_mode_64() {
                    rip &= 0xFFFF_FFFF;
                }
                self.set_rip(rip);
                // The emulated instruction retired, so blocking by STI or MOV SS ends with it
                // (SDM Vol. 3C 25.4.2, interruptibility state bits 0-1).
                let blocking = self.vmcs.read(Field::GuestInterruptibilityState);
                if blocking & 3 != 0 {
                    self.vmcs
                        .write(Field::GuestInterruptibilityState, blocking & !3);
                }
            }
            Action::Inject(fault) => self.inject(fault),
        }
    }

    /// Delivers a hardware exception on the next entry (SDM Vol. 3C 27.6.1).
    pub fn inject(&mut self, fault: Fault) {
        let mut info = InterruptionInfo::exception(fault.vector);
        if let Some(code) = fault.error_code {
            info = info.with_error_code();
            self.vmcs
                .write(Field::VmEntryExceptionErrorCode, code as u64);
        }
        self.vmcs
            .write(Field::VmEntryInterruptionInfo, info.0 as u64);
        // An event ends a HLT (the activity state must be active to deliver it cleanly).
        self.vmcs.write(Field::GuestActivityState, 0);
    }

    /// Delivers the event that caused this exit (an exception from the exception bitmap) as it
    /// was, including software exceptions that need the instruction length (SDM Vol. 3C 27.6.1).
    pub fn reinject_exit_event(&mut self) {
        self.redeliver(
            Field::VmExitInterruptionInfo,
            Field::VmExitInterruptionErrorCode,
        );
    }

    /// Re-delivers the event whose delivery this exit interrupted (IDT-vectoring information,
    /// SDM Vol. 3C 28.2.4), as VMMs must when they resume a guest after such an exit: without
    /// it an external interrupt or NMI would be lost (SDM Vol. 3C 28.2.4, "Information for VM
    /// Exits During Event Delivery", and 27.6.1 for injection). Returns whether there was one.
    pub fn reinject_idt_vectoring(&mut self) -> bool {
        self.redeliver(Field::IdtVectoringInfo, Field::IdtVectoringErrorCode)
    }

    /// Injects, on the next entry, the event described by an information field and its error
    /// code; events delivered as if by an instruction also need its length (SDM Vol. 3C
    /// 27.6.1). Returns whether the field described an event.
    fn redeliver(&mut self, info_field: Field, code_field: Field) -> bool {
        let info = InterruptionInfo(self.vmcs.read(info_field) as u32);
        if !info.valid() {
            return false;
        }
        if info.has_error_code() {
            let code = self.vmcs.read(code_field);
            self.vmcs.write(Field::VmEntryExceptionErrorCode, code);
        }
        if info.kind().needs_instruction_length() {
            let len = self.instruction_length();
            self.vmcs.write(Field::VmEntryInstructionLength, len);
        }
        self.vmcs.write(
            Field::VmEntryInterruptionInfo,
            info.for_reinjection().0 as u64,
        );
        true
    }

    /// Name of the current exit reason, for reports.
    pub fn exit_reason_name(&self) -> &'static str {
        ExitReason::from_u16(self.exit_reason).name()
    }
}

/// Exit-reason names for the statistics table.
pub fn reason_name(reason: u16) -> &'static str {
    ExitReason::from_u16(reason).name()
}
