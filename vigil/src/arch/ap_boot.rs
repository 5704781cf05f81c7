//! The start-up code of the application processors: from the real mode a start-up IPI leaves a
//! processor in to Vigil's long mode, its page tables and an entry in Rust.
//!
//! A start-up IPI with vector V starts a processor in real mode at CS = V × 256, IP = 0 (SDM
//! Vol. 3A 9.4.4.1), so this code runs from a page below 1 MiB, copied there by the boot
//! processor ([`install`]), which also fills in the page's data: the GDT's address, Vigil's CR3,
//! the far pointer into the 64-bit part, the Rust entry, and a table of (APIC ID, vCPU number,
//! stack) for every processor it starts. All of them run the same copy at once: each finds its
//! own row by its APIC ID (CPUID leaf 0BH, else leaf 1).
//!
//! Real mode goes straight to IA-32e mode (PAE, CR3, EFER.LME and NXE, then CR0.PE and PG in one
//! write, and a far jump to a 64-bit code segment: SDM Vol. 3A 10.8.5), with Vigil's own page
//! tables, which identity-map the first 4 GiB (the page included) and map Vigil's window.
//! 16-bit code addresses the data by its offset in the page (DS = CS), so the copy runs
//! wherever it lands; the 64-bit part addresses it RIP-relative.

use core::arch::global_asm;

/// Offsets in the page.
const GDT: usize = 0x10;
const GDTR: usize = 0x28;
const CR3: usize = 0x30;
const FAR_JUMP: usize = 0x38;
const ENTRY: usize = 0x40;
const COUNT: usize = 0x48;
const TABLE: usize = 0x50;
const ROW: usize = 16;
pub const MAX_ROWS: usize = 8;
const REAL_MODE: usize = 0xD0;
const LONG_MODE: usize = 0x120;

global_asm!(
    r#"
    .section .rodata.vigil_ap_trampoline, "a"
    .global vigil_ap_trampoline
    .global vigil_ap_trampoline_end
    .code16
vigil_ap_trampoline:
    cli
    cld
    jmp ap_real_mode

    .org {gdt}
    .quad 0
    .quad 0x00AF9A000000FFFF              /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00CF92000000FFFF              /* 0x10: data */
    .org {gdtr}
    .word 0x17                            /* limit; the base (page + GDT) is filled in */
    .long 0
    .org {cr3}
    .long 0
    .org {far_jump}
    .long 0                               /* page + LONG_MODE, filled in */
    .word 0x08
    .org {entry}
ap_entry:
    .quad 0
    .org {count}
ap_count:
    .long 0
    .org {table}
ap_table:
    .skip {table_size}

    .org {real_mode}
ap_real_mode:
    movw %cs, %ax
    movw %ax, %ds
    lgdtl {gdtr}
    movl %cr4, %eax
    orl $(1 << 5), %eax                   /* CR4.PAE */
    movl %eax, %cr4
    movl {cr3}, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx                /* IA32_EFER: LME, NXE */
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80010021, %eax                 /* PG, WP, NE, PE */
    movl %eax, %cr0
    ljmpl *{far_jump}

    .org {long_mode}
    .code64
ap_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    /* This processor's APIC ID: the x2APIC ID (CPUID 0BH:EDX) where leaf 0BH exists, else the
     * initial APIC ID (CPUID 1:EBX[31:24]). */
    xorl %eax, %eax
    cpuid
    cmpl $0xB, %eax
    jb ap_id_leaf1
    movl $0xB, %eax
    xorl %ecx, %ecx
    cpuid
    testl %ebx, %ebx                      /* leaf 0BH not implemented: EBX = 0 */
    jz ap_id_leaf1
    movl %edx, %esi
    jmp ap_find_row
ap_id_leaf1:
    movl $1, %eax
    cpuid
    shrl $24, %ebx
    movl %ebx, %esi
ap_find_row:
    leaq ap_table(%rip), %rbx
    movl ap_count(%rip), %ecx
ap_next_row:
    testl %ecx, %ecx
    jz ap_no_row
    cmpl (%rbx), %esi
    je ap_found
    addq ${row}, %rbx
    decl %ecx
    jmp ap_next_row
ap_found:
    movq 8(%rbx), %rsp
    movl 4(%rbx), %edi                    /* the vCPU number: the entry's argument */
    xorl %ebp, %ebp
    movq ap_entry(%rip), %rax
    callq *%rax
ap_no_row:
    cli
    hlt
    jmp ap_no_row
vigil_ap_trampoline_end:
    .code64
"#,
    gdt = const GDT,
    gdtr = const GDTR,
    cr3 = const CR3,
    far_jump = const FAR_JUMP,
    entry = const ENTRY,
    count = const COUNT,
    table = const TABLE,
    table_size = const ROW * MAX_ROWS,
    row = const ROW,
    real_mode = const REAL_MODE,
    long_mode = const LONG_MODE,
    options(att_syntax)
);

extern "C" {
    static vigil_ap_trampoline: u8;
    static vigil_ap_trampoline_end: u8;
}

/// One processor to start: its APIC ID, the vCPU number it becomes, its stack's top.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub apic_id: u32,
    pub index: u32,
    pub stack_top: u64,
}

/// Copies the start-up code to the page at physical `page` (below 1 MiB, 4 KiB-aligned,
/// identity-mapped) and fills in its data: Vigil's `cr3`, the 64-bit `entry`, and `rows`.
///
/// # Safety
/// `page` is RAM nothing else uses until every processor started from it is in long mode.
pub unsafe fn install(page: u64, cr3: u64, entry: u64, rows: &[Row]) {
    assert!(page < 0x10_0000 && page.is_multiple_of(4096) && cr3 < 1 << 32);
    assert!(rows.len() <= MAX_ROWS);
    let (start, end) = (
        core::ptr::addr_of!(vigil_ap_trampoline) as usize,
        core::ptr::addr_of!(vigil_ap_trampoline_end) as usize,
    );
    let len = end - start;
    assert!(len <= 4096);
    let at = page as *mut u8;
    // SAFETY: the caller gives the page to this code; the source is Vigil's read-only data.
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, at, len);
        let put32 = |off: usize, v: u32| (at.add(off) as *mut u32).write_unaligned(v);
        let put64 = |off: usize, v: u64| (at.add(off) as *mut u64).write_unaligned(v);
        put32(GDTR + 2, (page + GDT as u64) as u32);
        put32(CR3, cr3 as u32);
        put32(FAR_JUMP, (page + LONG_MODE as u64) as u32);
        put64(ENTRY, entry);
        put32(COUNT, rows.len() as u32);
        for (i, r) in rows.iter().enumerate() {
            let row = TABLE + i * ROW;
            put32(row, r.apic_id);
            put32(row + 4, r.index);
            put64(row + 8, r.stack_top);
        }
    }
}
