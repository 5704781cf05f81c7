//! From GRUB's hand-over to Rust: the multiboot2 header and the 32-bit trampoline into long mode.
//!
//! GRUB enters `_start` in 32-bit protected mode with paging off, EAX = the multiboot2 magic and
//! EBX = the boot information (multiboot2 spec 3.3). The trampoline identity-maps the first 4 GiB
//! with 2 MiB pages, enables PAE, EFER.LME/NXE and paging (SDM Vol. 3A 10.8.5, "Initializing
//! IA-32e Mode"), loads a 64-bit code segment and calls `vigil_main(magic, info)`.
//! The boot stack and tables live in .bss, which GRUB zeroes when it loads the ELF image.

use core::arch::global_asm;

/// Size of the boot stack. Later, each CPU runs on its own stack from the per-CPU area.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
mb2_header_start:
    .long 0xE85250D6                      /* multiboot2 magic */
    .long 0                               /* architecture: i386 protected mode */
    .long mb2_header_end - mb2_header_start
    .long -(0xE85250D6 + 0 + (mb2_header_end - mb2_header_start))
    .balign 8
    .word 0, 0                            /* end tag */
    .long 8
mb2_header_end:

    .section .boot, "ax"
    .code32
    .global _start
_start:
    cli
    cld
    movl %eax, %edi                       /* keep magic and info for vigil_main */
    movl %ebx, %esi
    movl $boot_stack_top, %esp

    /* PML4[0] -> PDPT; PDPT[0..3] -> PD0..PD3; each PD maps 1 GiB with 2 MiB pages. */
    movl $boot_pdpt, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4
    xorl %ecx, %ecx
pdpt_loop:
    movl %ecx, %eax
    shll $12, %eax
    addl $boot_pd, %eax
    orl $0x3, %eax
    movl %eax, boot_pdpt(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jne pdpt_loop

    xorl %ecx, %ecx
pd_loop:
    movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax                       /* present, writable, 2 MiB page */
    movl %eax, boot_pd(,%ecx,8)
    movl %ecx, %eax
    shrl $11, %eax                        /* high dword: (index * 2 MiB) >> 32 */
    movl %eax, boot_pd+4(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne pd_loop

    movl %cr4, %eax
    orl $(1 << 5), %eax                   /* CR4.PAE */
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx                /* IA32_EFER */
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax     /* LME, NXE */
    wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 16) | (1 << 5) | 1), %eax   /* PG, WP, NE, PE */
    movl %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    /* edi = magic, esi = info (zero-extended by the 32-bit moves above) */
    call vigil_main
halt_forever:
    cli
    hlt
    jmp halt_forever

    .section .rodata
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF              /* 64-bit code */
    .quad 0x00CF92000000FFFF              /* data */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .bss
    .balign 4096
boot_pml4:
    .skip 4096
    .global boot_pdpt
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack_size}
    .global boot_stack_top
boot_stack_top:
"#,
    stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);

extern "C" {
    static mut boot_pdpt: [u64; 512];
}

/// Extends Vigil's identity map (the trampoline maps 4 GiB) up to `end`, so that guest RAM above
/// 4 GiB can be reached when Vigil works on the guest's behalf. Uses 1 GiB pages where the
/// processor has them (CPUID.80000001H:EDX[26]), else 2 MiB pages in tables from `alloc_frame`.
/// Covers the first 512 GiB (one PML4 entry); returns the end actually mapped.
pub fn extend_identity_map(end: u64, mut alloc_frame: impl FnMut() -> Option<u64>) -> u64 {
    const GIB: u64 = 1 << 30;
    let huge = super::regs::cpuid(0x8000_0001, 0)[3] & (1 << 26) != 0;
    let end = end.min(512 * GIB);
    let mut at = 4 * GIB;
    while at < end {
        let index = (at / GIB) as usize;
        let entry = if huge {
            at | 0x83 // present, writable, 1 GiB page
        } else {
            let Some(pd) = alloc_frame() else { break };
            // SAFETY: a fresh zeroed frame from Vigil's pool, identity-mapped.
            let table = unsafe { &mut *(pd as *mut [u64; 512]) };
            for (i, e) in table.iter_mut().enumerate() {
                *e = (at + ((i as u64) << 21)) | 0x83;
            }
            pd | 0x3
        };
        // SAFETY: only the boot CPU runs; the entry was not present (the trampoline fills
        // entries 0-3), so no live translation changes.
        unsafe { (*core::ptr::addr_of_mut!(boot_pdpt))[index] = entry };
        at += GIB;
    }
    at.min(end).max(4 * GIB)
}
