//! From GRUB's hand-over to Rust, and Vigil's move to the top of RAM.
//!
//! GRUB enters `_start` in 32-bit protected mode with paging off, EAX = the multiboot2 magic and
//! EBX = the boot information (multiboot2 spec 3.3), with the image at its load address, low in
//! memory (link.ld). The trampoline builds temporary page tables — the first 4 GiB identity-mapped
//! with 2 MiB pages, and Vigil's virtual window (`VIGIL_VMA`, 2 MiB of 4 KiB pages) mapped onto
//! the load address —, enables PAE, EFER.LME/NXE and paging (SDM Vol. 3A 10.8.5, "Initializing
//! IA-32e Mode"), loads a 64-bit code segment and calls `vigil_main(magic, info, load)` at its
//! virtual address. Vigil then decides where it belongs and [`move_image`] copies it there and
//! switches to its own tables, which map the same window onto the new copy: every pointer stays
//! valid, and the load address becomes guest RAM.
//! Numeric local labels are avoided: in Intel syntax they can read as binary numbers.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

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
    movl %eax, %ebp                       /* keep magic and info for vigil_main */
    movl %ebx, %esi

    /* --- The processor check (begin): long mode, and NX for EFER.NXE below, or the steps
     * below fault with nothing said. CPUID.80000001H:EDX: LM = bit 29, NX = bit 20 (SDM
     * Vol. 2A, CPUID). On COM2, Vigil's port, in the format of its closing line. */
    movl $0x80000000, %eax
    cpuid
    movl $boot_no_long_mode, %edi
    cmpl $0x80000001, %eax
    jb boot_refuse
    movl $0x80000001, %eax
    cpuid
    testl $(1 << 29), %edx
    jz boot_refuse
    movl $boot_no_nx, %edi
    testl $(1 << 20), %edx
    jz boot_refuse
    jmp boot_cpu_ok
boot_refuse:
    movw $0x2F9, %dx                      /* COM2 at 115200 8N1, as serial.rs sets it up */
    movb $0x00, %al
    outb %al, %dx
    movw $0x2FB, %dx
    movb $0x80, %al
    outb %al, %dx
    movw $0x2F8, %dx
    movb $0x01, %al
    outb %al, %dx
    movw $0x2F9, %dx
    movb $0x00, %al
    outb %al, %dx
    movw $0x2FB, %dx
    movb $0x03, %al
    outb %al, %dx
    movw $0x2FA, %dx
    movb $0xC7, %al
    outb %al, %dx
boot_refuse_char:
    movw $0x2FD, %dx
boot_refuse_wait:
    inb %dx, %al
    testb $0x20, %al
    jz boot_refuse_wait
    movb (%edi), %al
    testb %al, %al
    jz boot_refuse_drain
    movw $0x2F8, %dx
    outb %al, %dx
    incl %edi
    jmp boot_refuse_char
boot_refuse_drain:
    inb %dx, %al                          /* LSR bit 6: everything sent */
    testb $0x40, %al
    jz boot_refuse_drain
    movl $boot_shutdown, %edi             /* the emulator's shutdown port, as power.rs */
    movw $0x8900, %dx
boot_refuse_shutdown:
    movb (%edi), %al
    testb %al, %al
    jz boot_refuse_halt
    outb %al, %dx
    incl %edi
    jmp boot_refuse_shutdown
boot_refuse_halt:
    cli
    hlt
    jmp boot_refuse_halt
boot_no_long_mode:
    .ascii "error: this processor has no long mode (CPUID.80000001H:EDX.LM = 0): Vigil runs in 64-bit mode\r\n"
    .asciz "run ended: failed: the processor has no long mode\r\n"
boot_no_nx:
    .ascii "error: this processor has no execute-disable bit (CPUID.80000001H:EDX.NX = 0), which Vigil needs\r\n"
    .asciz "run ended: failed: the processor has no execute-disable bit\r\n"
boot_shutdown:
    .asciz "Shutdown"
boot_cpu_ok:
    /* --- The processor check (end). */

    movl $tmp_tables, %edi                /* the loader may not zero NOBITS: do it here */
    movl $((tmp_tables_end - tmp_tables) >> 2), %ecx
    xorl %eax, %eax
    rep stosl

    /* PML4[0] -> PDPT; PDPT[0..3] -> PD0..PD3; each PD maps 1 GiB with 2 MiB pages. */
    movl $tmp_pdpt, %eax
    orl $0x3, %eax
    movl %eax, tmp_pml4
    xorl %ecx, %ecx
tmp_pdpt_loop:
    movl %ecx, %eax
    shll $12, %eax
    addl $tmp_pd, %eax
    orl $0x3, %eax
    movl %eax, tmp_pdpt(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jne tmp_pdpt_loop

    xorl %ecx, %ecx
tmp_pd_loop:
    movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax                       /* present, writable, 2 MiB page */
    movl %eax, tmp_pd(,%ecx,8)
    movl %ecx, %eax
    shrl $11, %eax                        /* high dword: (index * 2 MiB) >> 32 */
    movl %eax, tmp_pd+4(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne tmp_pd_loop

    /* The window: PML4[511] -> PDPT_HI[510] -> PD_HI[0] -> PT_HI, 512 pages from the load
     * address (VIGIL_VMA = 0xFFFFFFFF80000000 selects exactly these indices). */
    movl $tmp_pdpt_hi, %eax
    orl $0x3, %eax
    movl %eax, tmp_pml4 + 511 * 8
    movl $tmp_pd_hi, %eax
    orl $0x3, %eax
    movl %eax, tmp_pdpt_hi + 510 * 8
    movl $tmp_pt_hi, %eax
    orl $0x3, %eax
    movl %eax, tmp_pd_hi
    xorl %ecx, %ecx
tmp_pt_loop:
    movl %ecx, %eax
    shll $12, %eax
    addl $__vigil_load, %eax
    orl $0x3, %eax
    movl %eax, tmp_pt_hi(,%ecx,8)
    incl %ecx
    cmpl $512, %ecx
    jne tmp_pt_loop

    movl %cr4, %eax
    orl $(1 << 5), %eax                   /* CR4.PAE */
    movl %eax, %cr4
    movl $tmp_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx                /* IA32_EFER */
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax     /* LME, NXE */
    wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 16) | (1 << 5) | 1), %eax   /* PG, WP, NE, PE */
    movl %eax, %cr0

    movl %ebp, %edi                       /* magic; esi = info */
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
    /* edi = magic, esi = info (zero-extended by the 32-bit moves above), rdx = load address */
    movabsq $__vigil_load, %rdx
    movabsq $vigil_main, %rax
    call *%rax
halt_forever:
    cli
    hlt
    jmp halt_forever

    .balign 8
    /* The accessed bits are set already (type 0xB and 0x3): the processor sets them when it
     * loads a segment register from a descriptor without it (SDM Vol. 3A 3.4.5.1), which would
     * write into Vigil's image. */
boot_gdt:
    .quad 0
    .quad 0x00AF9B000000FFFF              /* 64-bit code, accessed */
    .quad 0x00CF93000000FFFF              /* data, accessed */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .boot_tables, "aw", @nobits
    .balign 4096
tmp_tables:
tmp_pml4:
    .skip 4096
tmp_pdpt:
    .skip 4096
tmp_pd:
    .skip 4096 * 4
tmp_pdpt_hi:
    .skip 4096
tmp_pd_hi:
    .skip 4096
tmp_pt_hi:
    .skip 4096
tmp_tables_end:

    .section .bss
    .balign 4096
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack_size}
    .global boot_stack_top
boot_stack_top:
"#,
    stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);

/// Vigil's fixed virtual address (link.ld): the kernel code model's top 2 GiB.
pub const VIGIL_VMA: u64 = 0xFFFF_FFFF_8000_0000;
/// The window's size: one page table of 4 KiB pages (link.ld checks the image fits).
const WINDOW: u64 = 2 << 20;

#[repr(C, align(4096))]
struct Table([u64; 512]);

impl Table {
    const fn new() -> Table {
        Table([0; 512])
    }
}

/// Vigil's page tables for its whole life, inside its image: the identity map (first 4 GiB with
/// 2 MiB pages; [`extend_identity_map`] adds more) and the window onto the image.
static mut PML4: Table = Table::new();
static mut PDPT: Table = Table::new();
static mut PD: [Table; 4] = [const { Table::new() }; 4];
static mut PDPT_HI: Table = Table::new();
static mut PD_HI: Table = Table::new();
static mut PT_HI: Table = Table::new();

/// Where the image is in physical memory now (the load address until [`move_image`]).
static IMAGE_PHYS: AtomicU64 = AtomicU64::new(0);

extern "C" {
    static __vigil_start: u8;
    static __vigil_end: u8;
}

/// Records the load address the trampoline passed; call once, first thing.
pub fn set_load_address(phys: u64) {
    IMAGE_PHYS.store(phys, Ordering::Relaxed);
}

/// The image's virtual range, [start, end).
pub fn image_virt() -> (u64, u64) {
    (
        core::ptr::addr_of!(__vigil_start) as u64,
        core::ptr::addr_of!(__vigil_end) as u64,
    )
}

/// The image's physical range now, [start, end).
pub fn image_phys() -> (u64, u64) {
    let (s, e) = image_virt();
    let base = IMAGE_PHYS.load(Ordering::Relaxed);
    (base, base + (e - s))
}

/// The physical address of something in the image.
fn phys_of<T>(p: *const T) -> u64 {
    p as u64 - VIGIL_VMA + IMAGE_PHYS.load(Ordering::Relaxed)
}

/// Copies the image to physical `new_base` (4 KiB-aligned, below 4 GiB, not overlapping the
/// image where it is now) and continues there: same virtual addresses, Vigil's own tables.
///
/// # Safety
/// Only the boot CPU runs, before anything outside the image holds a physical address of it
/// (no VMX, no DMA); `new_base` is RAM Vigil owns from now on.
pub unsafe fn move_image(new_base: u64) {
    let (vs, ve) = image_virt();
    let size = ve - vs;
    assert!(size <= WINDOW && new_base.is_multiple_of(4096) && new_base + size <= 1 << 32);
    let old = IMAGE_PHYS.load(Ordering::Relaxed);
    // The tables are written here, in the old copy, already describing the new one: the copy
    // carries them over. Entries hold physical addresses in the new copy.
    IMAGE_PHYS.store(new_base, Ordering::Relaxed);
    // SAFETY: only the boot CPU runs; these tables are not in use yet (CR3 points at the
    // trampoline's).
    unsafe {
        let pml4 = &mut *core::ptr::addr_of_mut!(PML4);
        let pdpt = &mut *core::ptr::addr_of_mut!(PDPT);
        let pd = &mut *core::ptr::addr_of_mut!(PD);
        let pdpt_hi = &mut *core::ptr::addr_of_mut!(PDPT_HI);
        let pd_hi = &mut *core::ptr::addr_of_mut!(PD_HI);
        let pt_hi = &mut *core::ptr::addr_of_mut!(PT_HI);
        for (i, table) in pd.iter_mut().enumerate() {
            for (j, e) in table.0.iter_mut().enumerate() {
                *e = (((i * 512 + j) as u64) << 21) | 0x83; // present, writable, 2 MiB page
            }
            pdpt.0[i] = phys_of(table) | 0x3;
        }
        pml4.0[0] = phys_of(pdpt) | 0x3;
        pml4.0[511] = phys_of(pdpt_hi) | 0x3;
        pdpt_hi.0[510] = phys_of(pd_hi) | 0x3;
        pd_hi.0[0] = phys_of(pt_hi) | 0x3;
        for (i, e) in pt_hi.0.iter_mut().enumerate() {
            *e = (new_base + i as u64 * 4096) | 0x3;
        }
        let cr3 = phys_of(pml4);
        // One block, so nothing is written to the image (the stack included) between the copy
        // and the switch: after it the same virtual addresses reach identical bytes.
        core::arch::asm!(
            "rep movsb",
            "mov cr3, {cr3}",
            cr3 = in(reg) cr3,
            inout("rsi") old => _,
            inout("rdi") new_base => _,
            inout("rcx") size => _,
            options(nostack),
        );
    }
}

/// Extends Vigil's identity map (4 GiB from the start) up to `end`, so that guest RAM above
/// 4 GiB can be reached when Vigil works on the guest's behalf. Uses 1 GiB pages where the
/// processor has them (CPUID.80000001H:EDX[26]), else 2 MiB pages in tables from `alloc_frame`.
/// Covers the first 512 GiB (one PML4 entry); returns the end actually mapped. Call after
/// [`move_image`].
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
        // SAFETY: only the boot CPU runs; the entry was not present (entries 0-3 map the first
        // 4 GiB), so no live translation changes.
        unsafe { (*core::ptr::addr_of_mut!(PDPT)).0[index] = entry };
        at += GIB;
    }
    at.min(end).max(4 * GIB)
}
