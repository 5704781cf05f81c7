//! A round trip through real mode, as a kernel makes to call the BIOS or to start the
//! processor it is on again (SDM Vol. 3A, "Switching Back to Real-Address Mode"): from 64-bit
//! mode to compatibility mode, paging off (out of IA-32e mode), a 16-bit protected-mode code
//! segment, CR0.PE cleared, a real-mode far jump; there a load and a store through DS, then back
//! the same way. The real-mode code runs from conventional memory (below 1 MiB, where a real-mode
//! CS can reach it): a copy at [`LOW`].
//!
//! Bare and under Vigil with unrestricted guest it must come back with what real mode saw. A
//! processor without unrestricted guest cannot run real mode in VMX non-root operation at all
//! (SDM Vol. 3C 27.3.1.1): there Vigil stops the run with a report, which a scenario checks.
//! The case only runs when named (`case=real-mode`).

use core::arch::global_asm;
use core::ptr::{addr_of, read_volatile};
use guest_kit::{fail, pass, Outcome};

/// Where the real-mode code is copied: conventional memory no loader data uses once the kit runs.
const LOW: u64 = 0x6000;
/// Its real-mode segment (CS = LOW / 16, IP = 0).
const LOW_SEGMENT: u64 = LOW >> 4;
/// Where real mode leaves what it saw: the BIOS data area's equipment word, and a marker.
const RESULT: u64 = LOW + 0xF00;
const MARKER: u16 = 0x55AA;

global_asm!(
    r#"
    .section .text.guest_kit_realmode, "ax"
    .code64
    .global guest_kit_real_mode
guest_kit_real_mode:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    pushfq
    cli
    mov [rip + rm_saved_rsp], rsp
    sgdt [rip + rm_saved_gdtr]
    sidt [rip + rm_saved_idtr]
    lgdt [rip + rm_gdtr]
    lea rax, [rip + rm_compat]
    push 0x08
    push rax
    retfq

    .code32
rm_compat:
    mov eax, cr0
    and eax, 0x7FFFFFFF
    mov cr0, eax
    mov ecx, 0xC0000080
    rdmsr
    and eax, 0xFFFFFEFF
    wrmsr
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, {low} + 0xE00
    # The real-mode interrupt table: what a BIOS call would use (and any exception in there).
    lidt [rm_real_idtr]
    # A 16-bit protected-mode code segment based at 0, then into the copy.
    .byte 0xEA
    .long {low}
    .word 0x18

    .code16
    .global guest_kit_rm16_start
guest_kit_rm16_start:
    mov ax, 0x20
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, cr0
    and eax, 0xFFFFFFFE
    mov cr0, eax
    # Real mode: CS = LOW / 16.
    .byte 0xEA
    .word rm16_real - guest_kit_rm16_start
    .word {low_segment}
rm16_real:
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, {low} + 0xE00
    mov ax, word ptr ds:[0x410]
    mov word ptr ds:[{result}], ax
    mov word ptr ds:[{result} + 2], {marker}
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    .byte 0x66, 0xEA
    .long rm_back32
    .word 0x08
    .global guest_kit_rm16_end
guest_kit_rm16_end:

    .code32
rm_back32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    .byte 0xEA
    .long rm_back64
    .word 0x28

    .code64
rm_back64:
    lgdt [rip + rm_saved_gdtr]
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, [rip + rm_saved_rsp]
    lea rax, [rip + rm_back64_cs]
    push 0x08
    push rax
    retfq
rm_back64_cs:
    lidt [rip + rm_saved_idtr]
    popfq
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

    .section .data.guest_kit_realmode, "aw"
    .p2align 3
# 0x08 32-bit code, 0x10 data, 0x18 16-bit code and 0x20 16-bit data (64 KiB, base 0),
# 0x28 64-bit code.
rm_gdt:
    .quad 0
    .quad 0x00CF9B000000FFFF
    .quad 0x00CF93000000FFFF
    .quad 0x00009B000000FFFF
    .quad 0x000093000000FFFF
    .quad 0x00AF9B000000FFFF
rm_gdt_end:
    .p2align 3
rm_gdtr:
    .word rm_gdt_end - rm_gdt - 1
    .quad rm_gdt
    .p2align 3
rm_real_idtr:
    .word 0x3FF
    .quad 0
    .p2align 3
rm_saved_gdtr:
    .skip 16
rm_saved_idtr:
    .skip 16
rm_saved_rsp:
    .quad 0
"#,
    low = const LOW,
    low_segment = const LOW_SEGMENT,
    result = const RESULT,
    marker = const MARKER,
);

unsafe extern "C" {
    fn guest_kit_real_mode();
    static guest_kit_rm16_start: u8;
    static guest_kit_rm16_end: u8;
}

pub fn real_mode() -> Outcome {
    let start = addr_of!(guest_kit_rm16_start);
    let len = addr_of!(guest_kit_rm16_end) as usize - start as usize;
    // SAFETY: [LOW, LOW + 4 KiB) is conventional memory the kit does not otherwise use; the
    // copy is the 16-bit code the assembly jumps to, and RESULT lies after it.
    unsafe {
        core::ptr::copy_nonoverlapping(start, LOW as *mut u8, len);
        core::ptr::write_volatile(RESULT as *mut u32, 0);
        guest_kit_real_mode();
    }
    let (equipment, marker) = unsafe {
        (
            read_volatile(RESULT as *const u16),
            read_volatile((RESULT + 2) as *const u16),
        )
    };
    let bda = unsafe { read_volatile(0x410 as *const u16) };
    if marker != MARKER || equipment != bda {
        return fail!(
            "real-mode-lost marker={:#x} equipment={:#x} bda={:#x}",
            marker,
            equipment,
            bda
        );
    }
    pass!("equipment={:#x} stub_bytes={}", equipment, len)
}
