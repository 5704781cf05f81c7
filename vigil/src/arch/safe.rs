//! Instructions that may fault on operands the guest chose (an MSR number, an XCR0 value),
//! executed with a fix-up: if the instruction raises #GP or #UD, the exception handler resumes
//! at the fix-up, which reports failure instead of treating the fault as Vigil's own bug.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text
    .global vigil_rdmsr_safe
vigil_rdmsr_safe:                 /* edi = MSR, rsi = &mut u64; eax = 0 ok, 1 faulted */
    mov ecx, edi
vigil_rdmsr_insn:
    rdmsr
    shl rdx, 32
    or rax, rdx
    mov [rsi], rax
    xor eax, eax
    ret

    .global vigil_wrmsr_safe
vigil_wrmsr_safe:                 /* edi = MSR, rsi = value */
    mov ecx, edi
    mov eax, esi
    mov rdx, rsi
    shr rdx, 32
vigil_wrmsr_insn:
    wrmsr
    xor eax, eax
    ret

    .global vigil_xsetbv_safe
vigil_xsetbv_safe:                /* edi = XCR, rsi = value */
    mov ecx, edi
    mov eax, esi
    mov rdx, rsi
    shr rdx, 32
vigil_xsetbv_insn:
    xsetbv
    xor eax, eax
    ret

    .global vigil_rdpmc_safe
vigil_rdpmc_safe:                 /* edi = counter, rsi = &mut u64 */
    mov ecx, edi
vigil_rdpmc_insn:
    rdpmc
    shl rdx, 32
    or rax, rdx
    mov [rsi], rax
    xor eax, eax
    ret

vigil_safe_fixup:
    mov eax, 1
    ret

    .section .rodata
    .balign 8
    .global vigil_fixup_table
vigil_fixup_table:
    .quad vigil_rdmsr_insn, vigil_safe_fixup
    .quad vigil_wrmsr_insn, vigil_safe_fixup
    .quad vigil_xsetbv_insn, vigil_safe_fixup
    .quad vigil_rdpmc_insn, vigil_safe_fixup
    .global vigil_fixup_table_end
vigil_fixup_table_end:
"#
);

extern "C" {
    fn vigil_rdmsr_safe(msr: u32, out: *mut u64) -> u32;
    fn vigil_wrmsr_safe(msr: u32, value: u64) -> u32;
    fn vigil_xsetbv_safe(xcr: u32, value: u64) -> u32;
    fn vigil_rdpmc_safe(counter: u32, out: *mut u64) -> u32;
    static vigil_fixup_table: [u64; 8];
}

/// The fix-up address for a #GP or #UD at `rip`, if `rip` is one of the guarded instructions.
pub fn fixup_for(vector: u64, rip: u64) -> Option<u64> {
    if vector != 13 && vector != 6 {
        return None;
    }
    // SAFETY: the table is immutable data emitted above.
    let table = unsafe { &*core::ptr::addr_of!(vigil_fixup_table) };
    table.chunks_exact(2).find(|e| e[0] == rip).map(|e| e[1])
}

/// RDMSR that returns None instead of faulting.
pub fn rdmsr_safe(msr: u32) -> Option<u64> {
    let mut value = 0;
    // SAFETY: the routine writes only `value` and recovers from #GP through the fix-up table.
    (unsafe { vigil_rdmsr_safe(msr, &mut value) } == 0).then_some(value)
}

/// RDPMC that returns None instead of faulting (an absent counter raises #GP).
pub fn rdpmc_safe(counter: u32) -> Option<u64> {
    let mut value = 0;
    // SAFETY: the routine writes only `value` and recovers from #GP through the fix-up table.
    (unsafe { vigil_rdpmc_safe(counter, &mut value) } == 0).then_some(value)
}

/// WRMSR that returns false instead of faulting. The caller decides whether the MSR may be
/// written on the guest's behalf.
pub fn wrmsr_safe(msr: u32, value: u64) -> bool {
    // SAFETY: recovers from #GP through the fix-up table; which MSRs are safe to write for the
    // guest is the caller's policy.
    unsafe { vigil_wrmsr_safe(msr, value) == 0 }
}

/// XSETBV that returns false instead of faulting.
pub fn xsetbv_safe(xcr: u32, value: u64) -> bool {
    // SAFETY: recovers from #GP through the fix-up table. XCR0 is shared with the guest, and
    // Vigil itself uses no extended state (it is built without SSE).
    unsafe { vigil_xsetbv_safe(xcr, value) == 0 }
}
