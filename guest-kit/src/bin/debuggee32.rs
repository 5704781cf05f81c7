//! A 32-bit guest for gdb's i386 register layout (`gdb-arch=i386`): it stays in the 32-bit
//! protected mode the multiboot loader enters it in (paging off, flat segments), so everything
//! is assembly; the kit's Rust code is 64-bit and is not linked in. The image is the kit's usual
//! ELF64 container (`link.ld`) holding 32-bit code, which GRUB's and Vigil's multiboot1 loaders
//! take as they take the other guests; gdb reads its symbols with `set architecture i386`.
//!
//! It prints the kit's line format on COM1 and ends with `Shutdown` on port 0x8900, so it runs
//! bare and under Vigil like the other guests. The command line is ignored: every case runs.
//!
//! | case | what the guest does | what gdb does there (tests) |
//! |---|---|---|
//! | `registers` | loads EAX-EDI and EBP with known values at `debuggee32_regs_here`, then checks they are intact | `info registers` |
//! | `variable` | writes 0xcafe0001, 0xcafe0002 to `DEBUGGEE32_VARS` (`debuggee32_after_store` follows the first store), reaches `debuggee32_vars_written`, reads both back (`vars1=` is what gdb wrote, if it did) | `watch` on the first word, `x/2wx`, `set var` on the second |
//! | `stepi` | `debuggee32_step_here`: `mov eax, 1` (5 bytes), `add eax, 2`: EAX must be 3 | `stepi` from its first instruction |

#![no_std]
#![no_main]

use core::arch::global_asm;

global_asm!(
    r#"
    # Multiboot1 header (multiboot spec 0.6.96, 3.1.1): magic, flags (page-align, memory
    # information, as the kit's other guests), checksum. link.ld puts it first in the image.
    .section .multiboot, "a"
    .p2align 2
    .long 0x1BADB002
    .long 0x00000003
    .long 0xE4524FFB

    .section .text.debuggee32, "ax"
    .code32
    .global _start
_start:
    cli
    cld
    # The loader's ESP is undefined (multiboot spec 3.2): the calls below need a stack.
    mov esp, offset debuggee32_stack_top
    mov ebp, eax

    # COM1 at 115200 8N1, FIFOs on, interrupts off (as guest-kit/src/serial.rs).
    mov dx, 0x3F9
    xor al, al
    out dx, al
    mov dx, 0x3FB
    mov al, 0x80
    out dx, al
    mov dx, 0x3F8
    mov al, 0x01
    out dx, al
    mov dx, 0x3F9
    xor al, al
    out dx, al
    mov dx, 0x3FB
    mov al, 0x03
    out dx, al
    mov dx, 0x3FA
    mov al, 0xC7
    out dx, al
    mov dx, 0x3FC
    mov al, 0x03
    out dx, al
    cmp ebp, 0x2BADB002
    jne d32_not_multiboot

    # --- registers: known values in every general-purpose register but ESP.
    mov eax, 0xA0A00001
    mov ebx, 0xB0B00002
    mov ecx, 0xC0C00003
    mov edx, 0xD0D00004
    mov esi, 0x51510005
    mov edi, 0xD1D10006
    mov ebp, 0xBBBB0007
    .global debuggee32_regs_here
debuggee32_regs_here:
    nop
    cmp eax, 0xA0A00001
    jne d32_regs_changed
    cmp ebx, 0xB0B00002
    jne d32_regs_changed
    cmp ecx, 0xC0C00003
    jne d32_regs_changed
    cmp edx, 0xD0D00004
    jne d32_regs_changed
    cmp esi, 0x51510005
    jne d32_regs_changed
    cmp edi, 0xD1D10006
    jne d32_regs_changed
    cmp ebp, 0xBBBB0007
    jne d32_regs_changed
    cmp esp, offset debuggee32_stack_top
    jne d32_regs_changed
    mov esi, offset d32_pass_registers
    call d32_puts
    inc dword ptr [d32_passed]
    jmp d32_variable
d32_regs_changed:
    mov esi, offset d32_fail_registers
    call d32_puts
    inc dword ptr [d32_failed]

    # --- variable: the guest writes both words; gdb reads them at the label and may change one.
d32_variable:
    mov dword ptr [DEBUGGEE32_VARS], 0xCAFE0001
    .global debuggee32_after_store
debuggee32_after_store:
    mov dword ptr [DEBUGGEE32_VARS + 4], 0xCAFE0002
    .global debuggee32_vars_written
debuggee32_vars_written:
    nop
    mov esi, offset d32_pass_variable
    call d32_puts
    mov eax, dword ptr [DEBUGGEE32_VARS]
    call d32_puthex
    mov esi, offset d32_vars1
    call d32_puts
    mov eax, dword ptr [DEBUGGEE32_VARS + 4]
    call d32_puthex
    mov al, 10
    call d32_putc
    inc dword ptr [d32_passed]

    # --- stepi: a 5-byte instruction to step over, then a result to check.
    call debuggee32_step_here
    cmp eax, 3
    jne d32_step_wrong
    mov esi, offset d32_pass_stepi
    call d32_puts
    inc dword ptr [d32_passed]
    jmp d32_summary
d32_step_wrong:
    mov esi, offset d32_fail_stepi
    call d32_puts
    inc dword ptr [d32_failed]

d32_summary:
    mov esi, offset d32_summary_head
    call d32_puts
    mov eax, dword ptr [d32_passed]
    call d32_putdigit
    mov esi, offset d32_summary_mid
    call d32_puts
    mov eax, dword ptr [d32_failed]
    call d32_putdigit
    mov esi, offset d32_summary_tail
    call d32_puts
    jmp d32_shutdown

d32_not_multiboot:
    mov esi, offset d32_fail_boot
    call d32_puts
    mov esi, offset d32_summary_boot
    call d32_puts

    # Wait until the UART has sent everything (LSR bit 6: transmitter empty; Bochs models the
    # baud rate), then write `Shutdown` to the Bochs shutdown port one byte at a time: bare,
    # Bochs ends; under Vigil the write is trapped and Vigil ends the run.
d32_shutdown:
    mov dx, 0x3FD
1:
    in al, dx
    test al, 0x40
    jz 1b
    mov esi, offset d32_shutdown_word
    mov dx, 0x8900
2:
    lodsb
    test al, al
    jz 3f
    out dx, al
    jmp 2b
3:
    cli
    hlt
    jmp 3b

    .global debuggee32_step_here
debuggee32_step_here:
    mov eax, 1
    add eax, 2
    ret

    # AL to COM1, once the transmit holding register is empty (LSR bit 5).
d32_putc:
    push edx
    push eax
    mov dx, 0x3FD
1:
    in al, dx
    test al, 0x20
    jz 1b
    pop eax
    mov dx, 0x3F8
    out dx, al
    pop edx
    ret

    # The NUL-terminated string at ESI.
d32_puts:
    push eax
    push esi
1:
    lodsb
    test al, al
    jz 2f
    call d32_putc
    jmp 1b
2:
    pop esi
    pop eax
    ret

    # EAX as 0x and eight hex digits.
d32_puthex:
    push eax
    push ebx
    push ecx
    mov ebx, eax
    mov al, '0'
    call d32_putc
    mov al, 'x'
    call d32_putc
    mov ecx, 8
1:
    rol ebx, 4
    mov al, bl
    and al, 0x0F
    add al, '0'
    cmp al, '9'
    jbe 2f
    add al, 'a' - '0' - 10
2:
    call d32_putc
    dec ecx
    jnz 1b
    pop ecx
    pop ebx
    pop eax
    ret

    # EAX (0-9) as one decimal digit: the guest has three cases.
d32_putdigit:
    add al, '0'
    jmp d32_putc

    .section .rodata.debuggee32, "a"
d32_pass_registers:
    .asciz "PASS registers eax=0xa0a00001 ebx=0xb0b00002 ecx=0xc0c00003 edx=0xd0d00004 esi=0x51510005 edi=0xd1d10006 ebp=0xbbbb0007\n"
d32_fail_registers:
    .asciz "FAIL registers changed\n"
d32_pass_variable:
    .asciz "PASS variable vars0="
d32_vars1:
    .asciz " vars1="
d32_pass_stepi:
    .asciz "PASS stepi eax=3\n"
d32_fail_stepi:
    .asciz "FAIL stepi wrong-result\n"
d32_fail_boot:
    .asciz "FAIL boot not-multiboot1-entry\n"
d32_summary_boot:
    .asciz "guest-kit: 0 passed, 1 failed, 0 skipped\n"
d32_summary_head:
    .asciz "guest-kit: "
d32_summary_mid:
    .asciz " passed, "
d32_summary_tail:
    .asciz " failed, 0 skipped\n"
d32_shutdown_word:
    .asciz "Shutdown"

    .section .data.debuggee32, "aw"
    .p2align 3
    # What gdb reads with x/2wx and changes with set var; the guest overwrites the initial
    # values first, so gdb sees the guest's own stores.
    .global DEBUGGEE32_VARS
DEBUGGEE32_VARS:
    .long 0x11110000
    .long 0x22220000
d32_passed:
    .long 0
d32_failed:
    .long 0

    .section .bss.debuggee32, "aw", @nobits
    .p2align 4
    .global debuggee32_stack
debuggee32_stack:
    .space 4096
    .global debuggee32_stack_top
debuggee32_stack_top:

    .code64
    .text
"#
);

/// Nothing here calls into Rust, so nothing can panic; the language still asks for a handler.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
