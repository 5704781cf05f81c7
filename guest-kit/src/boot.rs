//! Multiboot1 header and the 32-bit entry that takes the guest from the loader's protected mode to
//! 64-bit long mode.
//!
//! The loader (GRUB, or Vigil mirroring GRUB) enters `_start` in 32-bit protected mode with paging
//! off, flat CS/DS/ES/SS, interrupts disabled, EAX = 0x2BADB002 and EBX = the physical address of
//! the multiboot information structure (multiboot spec 0.6.96, section 3.2 "Machine state").
//!
//! The entry then follows the SDM's recipe for entering IA-32e mode (Vol. 3A,
//! "Initializing IA-32e Mode"): build 4-level page tables, set CR4.PAE, load CR3, set
//! IA32_EFER.LME, set CR0.PG, and far-transfer to a code segment with L = 1.
//!
//! Paging identity-maps the first 4 GiB with 2 MiB pages (SDM Vol. 3A, "Linear-Address
//! Translation with 4-Level Paging" and its table for a PDE that maps a 2-MByte page), so physical addresses —
//! the multiboot info, device MMIO, the image itself — are usable as pointers in 64-bit code.

use core::arch::global_asm;

/// Multiboot1 header magic (multiboot spec 0.6.96, 3.1.2).
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// Header flags: bit 0 = align modules on 4 KiB pages, bit 1 = provide memory information
/// (mem_lower/mem_upper and the memory map). Bit 16 is clear: the loader uses our ELF headers.
pub const HEADER_FLAGS: u32 = 0x0000_0003;
/// The value the loader puts in EAX (multiboot spec 0.6.96, 3.2).
pub const LOADER_MAGIC: u32 = 0x2BAD_B002;

// The checksum makes magic + flags + checksum == 0 (mod 2^32).
const _: () = assert!(
    HEADER_MAGIC
        .wrapping_add(HEADER_FLAGS)
        .wrapping_add(0xE452_4FFB)
        == 0
);

global_asm!(
    r#"
    .section .multiboot, "a"
    .p2align 2
guest_kit_multiboot_header:
    .long 0x1BADB002
    .long 0x00000003
    .long 0xE4524FFB

    .section .text.guest_kit_boot32, "ax"
    .code32
    .global _start
_start:
    cli
    cld
    cmp eax, 0x2BADB002
    jne boot32_not_multiboot

    # EBX is the only thing the loader gives us; keep it in ESI while REP STOSD zeroes .bss.
    mov esi, ebx
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    shr ecx, 2
    xor eax, eax
    rep stosd
    mov dword ptr [boot_multiboot_info], esi
    # The loader's ESP is undefined (multiboot spec 3.2: "the OS image must create its own
    # stack"); the far return below needs one.
    mov esp, offset boot_stack_top

    # Long mode needs CPUID.80000001H:EDX.LM[bit 29] (SDM Vol. 2A, CPUID); EFER.NXE may only be
    # set when EDX.NX[bit 20] is reported, or WRMSR faults with #GP.
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb boot32_no_long_mode
    mov eax, 0x80000001
    cpuid
    test edx, 0x20000000
    jz boot32_no_long_mode
    mov ebp, edx

    # PML4[0] -> PDPT; PDPT[0..4] -> four page directories; each PDE maps 2 MiB (PS = bit 7).
    # Present | writable = 0x3. The upper halves stay zero from the .bss clear.
    mov eax, offset boot_pdpt
    or eax, 0x3
    mov dword ptr [boot_pml4], eax

    mov eax, offset boot_pd
    or eax, 0x3
    xor ecx, ecx
boot32_pdpt_loop:
    mov dword ptr [boot_pdpt + ecx*8], eax
    add eax, 0x1000
    inc ecx
    cmp ecx, 4
    jb boot32_pdpt_loop

    xor ecx, ecx
boot32_pd_loop:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov dword ptr [boot_pd + ecx*8], eax
    inc ecx
    cmp ecx, 2048
    jb boot32_pd_loop

    # CR4.PAE (bit 5), then CR3.
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax

    # IA32_EFER (0xC0000080): LME = bit 8, NXE = bit 11 when NX exists.
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    test ebp, 0x100000
    jz boot32_no_nx
    or eax, 0x800
boot32_no_nx:
    wrmsr

    # CR0: PG (31) activates IA-32e mode; PE (0) is already set by the loader; NE (5) selects
    # native x87 error reporting; WP (16) makes supervisor writes honour read-only pages.
    mov eax, cr0
    or eax, 0x80010021
    mov cr0, eax

    # Now in compatibility mode: load our GDT and far-return into the 64-bit code segment.
    lgdt [boot_gdt_pointer]
    # (LLVM's Intel syntax assembles `push offset sym` as a 16-bit push: go through EAX.)
    mov eax, offset boot64_entry
    push 0x08
    push eax
    retf

# Without a usable entry state we still say what went wrong, on COM1, in the same format as the
# harness, then end the machine through the Bochs shutdown port.
boot32_not_multiboot:
    mov esi, offset boot32_message_not_multiboot
    jmp boot32_fail_init_uart
boot32_no_long_mode:
    mov esi, offset boot32_message_no_long_mode
boot32_fail_init_uart:
    # 115200 8N1 as in serial.rs: nothing guarantees the firmware left COM1 in 8-bit mode.
    mov dx, 0x3F9
    mov al, 0x00
    out dx, al
    mov dx, 0x3FB
    mov al, 0x80
    out dx, al
    mov dx, 0x3F8
    mov al, 0x01
    out dx, al
    mov dx, 0x3F9
    mov al, 0x00
    out dx, al
    mov dx, 0x3FB
    mov al, 0x03
    out dx, al
boot32_fail:
    mov dx, 0x3FD
boot32_fail_wait:
    in al, dx
    test al, 0x20
    jz boot32_fail_wait
    mov al, byte ptr [esi]
    test al, al
    jz boot32_fail_shutdown
    mov dx, 0x3F8
    out dx, al
    inc esi
    jmp boot32_fail
boot32_fail_shutdown:
    # Wait for the transmitter to drain (LSR bit 6) so the last bytes are not lost.
    mov dx, 0x3FD
    in al, dx
    test al, 0x40
    jz boot32_fail_shutdown
    mov esi, offset boot32_shutdown_bytes
    mov dx, 0x8900
boot32_fail_shutdown_loop:
    mov al, byte ptr [esi]
    test al, al
    jz boot32_fail_halt
    out dx, al
    inc esi
    jmp boot32_fail_shutdown_loop
boot32_fail_halt:
    cli
    hlt
    jmp boot32_fail_halt

    .code64
boot64_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lea rsp, [rip + boot_stack_top]
    xor ebp, ebp
    mov edi, dword ptr [rip + boot_multiboot_info]
    call guest_kit_start
boot64_hang:
    cli
    hlt
    jmp boot64_hang

    .section .rodata.guest_kit_boot32, "a"
boot32_message_not_multiboot:
    .asciz "FAIL boot not-multiboot1-entry\nguest-kit: 0 passed, 1 failed, 0 skipped\n"
boot32_message_no_long_mode:
    .asciz "FAIL boot no-long-mode\nguest-kit: 0 passed, 1 failed, 0 skipped\n"
boot32_shutdown_bytes:
    .asciz "Shutdown"

    .section .data.guest_kit_boot, "aw"
    .p2align 3
# Flat GDT (SDM Vol. 3A, "Segment Descriptors"; the L bit, "Code-Segment
# Descriptor in 64-bit Mode"). The accessed bits are
# preset so loading a selector never writes to the table.
boot_gdt:
    .quad 0
    .quad 0x00AF9B000000FFFF
    .quad 0x00CF93000000FFFF
    # 0x18: flat 32-bit code, for cases that run in compatibility mode.
    .quad 0x00CF9B000000FFFF
boot_gdt_end:
    .p2align 2
    .word 0
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .long 0
boot_multiboot_info:
    .long 0

    .section .bss.guest_kit_paging, "aw", @nobits
    .p2align 12
boot_pml4:
    .skip 4096
    .global boot_pdpt
boot_pdpt:
    .skip 4096
    .global boot_pd
boot_pd:
    .skip 4 * 4096
    .global boot_top_pt
boot_top_pt:
    .skip 4096

    .section .bss.guest_kit_stack, "aw", @nobits
    .p2align 12
boot_stack_bottom:
    .skip 64 * 1024
boot_stack_top:
"#
);

unsafe extern "C" {
    /// The PDPT of the first 512 GiB: entries 0-3 map the first 4 GiB, the rest are free.
    static mut boot_pdpt: [u64; 512];
}

/// Maps the 1 GiB at physical `gib_base` (1 GiB-aligned, in [4 GiB, 512 GiB)) uncacheable at
/// the same linear address with a 1 GiB page (needs CPUID.80000001H:EDX[26]), or removes that
/// mapping again; returns false for an address outside that range.
///
/// # Safety
/// Nothing else may use that linear range meanwhile; the kit runs on one CPU.
pub unsafe fn map_gib(gib_base: u64, on: bool) -> bool {
    const GIB: u64 = 1 << 30;
    if !gib_base.is_multiple_of(GIB) || !(4 * GIB..512 * GIB).contains(&gib_base) {
        return false;
    }
    let index = (gib_base / GIB) as usize;
    // Present, writable, PCD (uncacheable: device memory), PS (SDM Vol. 3A, the table for a
    // PDPTE that maps a 1-GByte page).
    let entry = if on { gib_base | 0x93 } else { 0 };
    unsafe {
        (*core::ptr::addr_of_mut!(boot_pdpt))[index] = entry;
        core::arch::asm!("invlpg [{}]", in(reg) gib_base, options(nostack, preserves_flags));
    }
    true
}

/// Selector of the 64-bit code segment in the boot GDT; interrupt gates use it.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of a flat 32-bit code segment in the boot GDT (compatibility mode).
pub const CODE32_SELECTOR: u16 = 0x18;

unsafe extern "C" {
    /// The four page directories of the first 4 GiB (2 MiB pages).
    static mut boot_pd: [u64; 2048];
    /// A page table for the last 2 MiB below 4 GiB, used by [`map_top_page`].
    static mut boot_top_pt: [u64; 512];
}

/// Maps the last 4 KiB page below 4 GiB (linear 0xFFFFF000) to the RAM page at physical `page`
/// (4 KiB-aligned, below 4 GiB), splitting the last 2 MiB mapping into 4 KiB pages that keep the
/// rest identity-mapped; `None` puts the 2 MiB mapping back.
///
/// # Safety
/// Nothing may run from or use that linear range meanwhile; the kit runs on one CPU.
pub unsafe fn map_top_page(page: Option<u64>) {
    const TOP: u64 = 0xFFE0_0000;
    unsafe {
        let pd = &mut *core::ptr::addr_of_mut!(boot_pd);
        let pt = &mut *core::ptr::addr_of_mut!(boot_top_pt);
        match page {
            Some(page) => {
                for (i, e) in pt.iter_mut().enumerate() {
                    *e = (TOP + 4096 * i as u64) | 0x3;
                }
                pt[511] = (page & !0xFFF) | 0x3;
                pd[2047] = core::ptr::addr_of!(boot_top_pt) as u64 | 0x3;
            }
            None => pd[2047] = TOP | 0x83,
        }
        // The whole 2 MiB changes: a CR3 reload drops every cached translation of it.
        core::arch::asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack));
    }
}
