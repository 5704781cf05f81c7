//! The world switch: enter the guest with all its general-purpose registers, and come back to
//! the caller of `vmx_run` on the next VM exit as if the call had returned.
//!
//! VMX saves and loads RSP, RIP and RFLAGS through the VMCS but no other general-purpose
//! register (SDM Vol. 3C 28.5 and 27.3.2), so the stub does it. HOST_RSP is written on every
//! entry to the stack pointer at that moment, whose top holds the pointer to `GuestRegs`; the
//! exit stub (HOST_RIP) finds it there, stores the guest's registers, reads the TSC as early as
//! it can (so statistics and time virtualization see the whole exit), restores the
//! callee-saved registers of the Rust caller and returns 0.

use core::arch::global_asm;
use vmx::vmcs::Field;

/// The guest's general-purpose registers (except RSP, which lives in the VMCS), plus what the
/// stub records about the exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// Host TSC read by the exit stub right after the VM exit.
    pub exit_tsc: u64,
    /// Non-zero once VMLAUNCH succeeded: later entries use VMRESUME (SDM Vol. 3C 25.1,
    /// the VMCS launch state).
    pub launched: u64,
    /// Host TSC read by `vmx_run` just before the entry (after the time bookkeeping below).
    pub entry_tsc: u64,
    /// Non-zero: hide this exit's host time from the guest. `vmx_run` then does, as its last
    /// step before the entry, `tsc_offset -= (now - exit_tsc) + credit` and writes the VMCS TSC
    /// offset, so the time the bookkeeping itself takes is inside the calibrated round trip.
    pub hide: u64,
    /// Ticks to take off in addition to the handling time (round trip minus the bare-metal cost
    /// of the exiting instruction), wrapping.
    pub credit: u64,
    /// The guest's TSC offset, updated by `vmx_run` when `hide` is set.
    pub tsc_offset: u64,
    /// With `hide` set: the guest's TSC deadline (0: none). The exit stub disarms the timer
    /// first thing, so it cannot fire during the exit's hidden time, and `vmx_run` re-arms it
    /// for the new offset as its last step, so it fires when the guest's TSC reaches it.
    pub deadline: u64,
    /// Host TSC just after the exit stub disarmed the deadline timer: a timer that fired before
    /// this moment has fired for the guest.
    pub disarm_tsc: u64,
}

impl GuestRegs {
    /// Register by the index VMX uses in exit qualifications and instruction information
    /// (0 = RAX ... 15 = R15; 4 = RSP is in the VMCS and handled by the caller).
    pub fn get(&self, index: u8) -> u64 {
        match index {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            15 => self.r15,
            _ => 0,
        }
    }

    pub fn set(&mut self, index: u8, value: u64) {
        let slot = match index {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            15 => &mut self.r15,
            _ => return,
        };
        *slot = value;
    }
}

// The assembly below addresses the fields by offset.
const _: () = {
    assert!(core::mem::offset_of!(GuestRegs, exit_tsc) == 120);
    assert!(core::mem::offset_of!(GuestRegs, launched) == 128);
    assert!(core::mem::offset_of!(GuestRegs, entry_tsc) == 136);
    assert!(core::mem::offset_of!(GuestRegs, hide) == 144);
    assert!(core::mem::offset_of!(GuestRegs, credit) == 152);
    assert!(core::mem::offset_of!(GuestRegs, tsc_offset) == 160);
    assert!(core::mem::offset_of!(GuestRegs, deadline) == 168);
    assert!(core::mem::offset_of!(GuestRegs, disarm_tsc) == 176);
};

/// What `vmx_run` came back with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunResult {
    /// A VM exit happened; the guest registers are saved.
    Exit,
    /// VMLAUNCH/VMRESUME failed with VMfailInvalid (no current VMCS).
    FailInvalid,
    /// VMLAUNCH/VMRESUME failed with VMfailValid: the VM-instruction error field says why.
    FailValid,
}

extern "C" {
    fn vmx_run(regs: *mut GuestRegs) -> u64;
    fn vmx_exit_stub();
}

/// Enters the guest and returns at its next VM exit (or on a failed entry).
///
/// # Safety
/// VMX root operation with the guest's VMCS current and its host state set up by
/// `host_rip()`; `regs` must stay valid until this returns.
pub unsafe fn run(regs: &mut GuestRegs) -> RunResult {
    // SAFETY: see the function contract.
    match unsafe { vmx_run(regs) } {
        0 => RunResult::Exit,
        1 => RunResult::FailInvalid,
        _ => RunResult::FailValid,
    }
}

/// The host RIP to put in the VMCS.
pub fn host_rip() -> u64 {
    vmx_exit_stub as *const () as u64
}

global_asm!(
    r#"
    .section .text
    .global vmx_run
vmx_run:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdi                        /* [rsp] = &GuestRegs, found again by the exit stub */
    mov rax, {host_rsp}
    vmwrite rax, rsp
    jbe vmx_run_failed_write

    mov rcx, rdi
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov [rcx + 136], rax            /* entry_tsc */
    cmp qword ptr [rcx + 144], 0
    je vmx_run_time_done
    sub rax, [rcx + 120]            /* handling time = now - exit_tsc */
    add rax, [rcx + 152]            /* + credit */
    mov rdx, [rcx + 160]
    sub rdx, rax
    mov [rcx + 160], rdx
    mov rax, {tsc_offset}
    vmwrite rax, rdx
    mov rax, [rcx + 168]            /* the guest's deadline, if armed */
    test rax, rax
    jz vmx_run_time_done
    sub rax, rdx                    /* in host time: deadline - offset */
    test rax, rax
    jg vmx_run_deadline_ahead
    mov eax, 1                      /* already due (below the offset), or 0, which would disarm: fire now */
vmx_run_deadline_ahead:
    mov rdx, rax
    shr rdx, 32
    mov ecx, {tsc_deadline}
    wrmsr
vmx_run_time_done:
    mov rax, rdi
    mov rbx, [rax + 8]
    mov rcx, [rax + 16]
    mov rdx, [rax + 24]
    mov rsi, [rax + 32]
    mov rbp, [rax + 48]
    mov r8,  [rax + 56]
    mov r9,  [rax + 64]
    mov r10, [rax + 72]
    mov r11, [rax + 80]
    mov r12, [rax + 88]
    mov r13, [rax + 96]
    mov r14, [rax + 104]
    mov r15, [rax + 112]
    cmp qword ptr [rax + 128], 0
    mov rdi, [rax + 40]
    mov rax, [rax]
    jne vmx_run_resume
    vmlaunch
    jmp vmx_run_failed
vmx_run_resume:
    vmresume
vmx_run_failed:
    /* Only reached when the entry failed: CF = VMfailInvalid, ZF = VMfailValid. */
    mov eax, 1
    jc vmx_run_out
    mov eax, 2
vmx_run_out:
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
vmx_run_failed_write:
    mov eax, 2
    jmp vmx_run_out

    .global vmx_exit_stub
vmx_exit_stub:
    push rax                        /* guest RAX; [rsp + 8] = &GuestRegs */
    mov rax, [rsp + 8]
    mov [rax + 8], rbx
    mov [rax + 16], rcx
    mov [rax + 24], rdx
    mov [rax + 32], rsi
    mov [rax + 40], rdi
    mov [rax + 48], rbp
    mov [rax + 56], r8
    mov [rax + 64], r9
    mov [rax + 72], r10
    mov [rax + 80], r11
    mov [rax + 88], r12
    mov [rax + 96], r13
    mov [rax + 104], r14
    mov [rax + 112], r15
    pop rbx
    mov [rax], rbx
    mov rbx, rax
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov [rbx + 120], rax
    mov qword ptr [rbx + 128], 1
    cmp qword ptr [rbx + 144], 0    /* hidden exit time: stop the guest's deadline timer */
    je vmx_exit_timer_done
    cmp qword ptr [rbx + 168], 0
    je vmx_exit_timer_done
    mov ecx, {tsc_deadline}
    xor eax, eax
    xor edx, edx
    wrmsr
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov [rbx + 176], rax
vmx_exit_timer_done:
    xor eax, eax
    jmp vmx_run_out
"#,
    host_rsp = const Field::HostRsp as u32,
    tsc_offset = const Field::TscOffset as u32,
    tsc_deadline = const 0x6E0u32,
);
