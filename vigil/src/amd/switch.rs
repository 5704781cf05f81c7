//! The SVM world switch: VMLOAD the guest's hidden state, load its general-purpose registers,
//! VMRUN; on #VMEXIT store the registers, read the TSC, VMSAVE the guest's hidden state and
//! VMLOAD Vigil's, and return to the caller of `svm_run` as if the call had returned.
//!
//! VMRUN switches RAX, RSP, RIP, RFLAGS, the segment registers ES/CS/SS/DS, the descriptor
//! tables, CR0/CR3/CR4, EFER, DR6/DR7 and (with nested paging) the PAT; the host's are saved
//! in the host save area and restored by #VMEXIT (APM Vol. 2 15.5.1, 15.6). Everything else is
//! the hypervisor's to switch: the other general-purpose registers (this stub), and FS, GS,
//! TR, LDTR, KernelGsBase, STAR/LSTAR/CSTAR/SFMASK and the SYSENTER MSRs, which VMLOAD and
//! VMSAVE move between the processor and a VMCB (15.5.2). Vigil's own copy of those lives in a
//! second, host-only VMCB saved once at set-up: it holds the GS base that finds the per-CPU
//! block and the TR of Vigil's TSS. Between the guest's VMLOAD and the VMRUN, and between the
//! #VMEXIT and Vigil's VMLOAD, the stub touches neither GS nor the stack beyond its own frame,
//! and GIF is clear (no NMI, SMI or interrupt can arrive in that window, 15.17).
//!
//! The time bookkeeping is the VMX switch's (`intel/switch.rs`), with the VMCB's TSC_OFFSET
//! written as memory instead of with VMWRITE.

use core::arch::global_asm;
use svm::vmcb::Field;

/// The guest's general-purpose registers except RAX and RSP, which live in the VMCB, plus what
/// the stub needs and records. The layout matches the VMX switch's `GuestRegs` so both stubs
/// read the same way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SvmRegs {
    /// Unused: the guest's RAX is in the VMCB (VMRUN loads it, #VMEXIT saves it).
    pub unused_rax: u64,
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
    /// Host TSC read by the stub right after the #VMEXIT.
    pub exit_tsc: u64,
    /// The guest VMCB's physical (= virtual) address: VMRUN's operand.
    pub vmcb: u64,
    /// Host TSC read just before the entry (after the time bookkeeping).
    pub entry_tsc: u64,
    /// Non-zero: hide this exit's host time: `tsc_offset -= min((now - exit_tsc) + credit,
    /// limit)`, written to the VMCB's TSC_OFFSET as the last step before VMRUN
    /// (`vigil_core::time::EntryTime::apply` is the same arithmetic).
    pub hide: u64,
    pub credit: u64,
    pub tsc_offset: u64,
    /// With `hide`: the guest's TSC deadline (0: none), disarmed by the exit stub first thing
    /// and re-armed for the new offset by `svm_run` last.
    pub deadline: u64,
    /// Host TSC just after the exit stub disarmed the deadline timer.
    pub disarm_tsc: u64,
    /// The host-only VMCB holding Vigil's FS/GS/TR/LDTR and system-call MSRs.
    pub host_vmcb: u64,
    /// The most one entry takes off (signed): the bound on the guest's lag.
    pub limit: u64,
    /// The guest's TSC multiplier when it is not 1 (0 for 1): the handling time is taken off at
    /// the rate the guest's TSC runs, and the deadline is divided by it. SVM's TSC is scaled in
    /// software (every read an exit, `vcpu.rs`), so only the bookkeeping uses it.
    pub multiplier: u64,
}

impl SvmRegs {
    /// Register by architectural number; 0 (RAX) and 4 (RSP) are in the VMCB, the caller's.
    pub fn get(&self, index: u8) -> u64 {
        match index {
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
    assert!(core::mem::offset_of!(SvmRegs, rbx) == 8);
    assert!(core::mem::offset_of!(SvmRegs, r15) == 112);
    assert!(core::mem::offset_of!(SvmRegs, exit_tsc) == 120);
    assert!(core::mem::offset_of!(SvmRegs, vmcb) == 128);
    assert!(core::mem::offset_of!(SvmRegs, entry_tsc) == 136);
    assert!(core::mem::offset_of!(SvmRegs, hide) == 144);
    assert!(core::mem::offset_of!(SvmRegs, credit) == 152);
    assert!(core::mem::offset_of!(SvmRegs, tsc_offset) == 160);
    assert!(core::mem::offset_of!(SvmRegs, deadline) == 168);
    assert!(core::mem::offset_of!(SvmRegs, disarm_tsc) == 176);
    assert!(core::mem::offset_of!(SvmRegs, host_vmcb) == 184);
    assert!(core::mem::offset_of!(SvmRegs, limit) == 192);
    assert!(core::mem::offset_of!(SvmRegs, multiplier) == 200);
    assert!(Field::TscOffset.offset() == 0x50);
};

extern "C" {
    fn svm_run(regs: *mut SvmRegs);
    fn svm_vmexit();
}

/// The address the host resumes at after every #VMEXIT (the instruction after VMRUN).
pub fn vmexit_rip() -> u64 {
    svm_vmexit as *const () as u64
}

/// Enters the guest and returns at its next #VMEXIT (a VMRUN that fails its consistency checks
/// returns at once, with EXITCODE VMEXIT_INVALID in the VMCB).
///
/// # Safety
/// EFER.SVME set, VM_HSAVE_PA set, GIF clear; `regs.vmcb` a valid guest VMCB and
/// `regs.host_vmcb` a VMCB that VMSAVE filled with Vigil's own state on this CPU.
pub unsafe fn run(regs: &mut SvmRegs) {
    // SAFETY: see the function contract.
    unsafe { svm_run(regs) }
}

global_asm!(
    r#"
    .section .text
    .global svm_run
svm_run:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdi                        /* [rsp] = &SvmRegs, found again after the #VMEXIT */

    mov rcx, rdi
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov [rcx + 136], rax            /* entry_tsc */
    cmp qword ptr [rcx + 144], 0
    je svm_run_time_done
    sub rax, [rcx + 120]            /* handling time = now - exit_tsc */
    mov r8, [rcx + 200]             /* the guest's TSC multiplier (0: 1) */
    test r8, r8
    jz svm_run_unscaled
    mul r8                          /* at the guest's rate: time * multiplier >> 48 */
    shrd rax, rdx, 48
svm_run_unscaled:
    add rax, [rcx + 152]            /* + credit */
    cmp rax, [rcx + 192]            /* at most the limit (signed) */
    cmovg rax, [rcx + 192]
    mov rdx, [rcx + 160]
    sub rdx, rax
    mov [rcx + 160], rdx
    mov rax, [rcx + 128]
    mov [rax + {tsc_offset}], rdx   /* the VMCB's TSC_OFFSET */
    mov rax, [rcx + 168]            /* the guest's deadline, if armed */
    test rax, rax
    jz svm_run_time_done
    sub rax, rdx                    /* deadline - offset: host time at the guest's rate */
    test rax, rax
    jle svm_run_deadline_due        /* already due (below the offset), or 0, which would disarm */
    test r8, r8
    jz svm_run_deadline_ahead
    xor edx, edx                    /* divided by the multiplier (>= 1 << 48), rounded up: >= 1 */
    shld rdx, rax, 48
    shl rax, 48
    div r8
    cmp rdx, 1
    sbb rax, -1
    jmp svm_run_deadline_ahead
svm_run_deadline_due:
    mov eax, 1                      /* fire now */
svm_run_deadline_ahead:
    mov rdx, rax
    shr rdx, 32
    mov ecx, {tsc_deadline}
    wrmsr
svm_run_time_done:
    mov rax, [rdi + 128]
    vmload rax                      /* the guest's FS, GS, TR, LDTR and system-call MSRs */
    mov rbx, [rdi + 8]
    mov rcx, [rdi + 16]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov r8,  [rdi + 56]
    mov r9,  [rdi + 64]
    mov r10, [rdi + 72]
    mov r11, [rdi + 80]
    mov r12, [rdi + 88]
    mov r13, [rdi + 96]
    mov r14, [rdi + 104]
    mov r15, [rdi + 112]
    mov rdi, [rdi + 40]
    vmrun rax
    .global svm_vmexit
svm_vmexit:
    /* #VMEXIT: RAX, RSP, RIP and RFLAGS are the host's again; the rest are the guest's. */
    mov rax, [rsp]
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
    mov rbx, rax
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov [rbx + 120], rax            /* exit_tsc */
    mov rax, [rbx + 128]
    vmsave rax                      /* the guest's hidden state into its VMCB */
    mov rax, [rbx + 184]
    vmload rax                      /* Vigil's GS base, TR, LDTR... */
    cmp qword ptr [rbx + 144], 0    /* hidden exit time: stop the guest's deadline timer */
    je svm_exit_timer_done
    cmp qword ptr [rbx + 168], 0
    je svm_exit_timer_done
    mov ecx, {tsc_deadline}
    xor eax, eax
    xor edx, edx
    wrmsr
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov [rbx + 176], rax
svm_exit_timer_done:
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
"#,
    tsc_offset = const 0x50,
    tsc_deadline = const 0x6E0u32,
);
