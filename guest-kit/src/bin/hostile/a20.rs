//! A20: with the A20 gate closed, address bit 20 is forced to 0, so an access to X + 1 MiB
//! lands on X (the PC's 8086 wrap-around). Bochs masks it even in VMX operation, on the
//! host-physical address that EPT produced; real processors ignore A20M# in VMX operation.
//!
//! Each attack first checks the mechanism on a page pair it owns (C = 4 MiB, C + 1 MiB): with
//! A20 closed, C + 1 MiB must show C's pattern — bare, and under Vigil, which must emulate the
//! gate for the guest's own memory. Then, for every page X of Vigil's ranges with bit 20 clear
//! whose X + 1 MiB is the guest's RAM, it fills X + 1 MiB with its own pattern, closes A20 and
//! reads (or writes) X + 1 MiB. Anything but its own pattern or a fault is Vigil's memory.
//!
//! The write attack puts the value back within the same few instructions (no VM exit in
//! between, so Vigil never runs on the altered byte); what it proves is that a store reached
//! Vigil's memory. Every window then executes CPUID with the gate still closed: a VM exit while
//! the guest's A20 is masked, which a hypervisor that lets the real gate close does not
//! survive (its own code at an odd megabyte reads the even one).

use super::io::*;
use guest_kit::{fail, pass, Outcome};

const C: u64 = 4 * MIB;
const OWN: u64 = 0x0A20_0A20_0A20_0A20;
const OTHER: u64 = 0x0B20_0B20_0B20_0B20;
const MINE: u64 = 0x0C20_0C20_0C20_0C20;

#[derive(Clone, Copy)]
pub enum Gate {
    /// System control port A (0x92) bit 1.
    Port92,
    /// Keyboard controller command 0xD1: write the output port, bit 1 = A20.
    KbcOutputPort,
    /// Keyboard controller commands 0xDD (disable A20) and 0xDF (enable A20).
    KbcDdDf,
}

impl Gate {
    fn name(self) -> &'static str {
        match self {
            Gate::Port92 => "port-0x92",
            Gate::KbcOutputPort => "kbc-0xd1",
            Gate::KbcDdDf => "kbc-0xdd",
        }
    }
}

/// With A20 closed every fetch, stack access and page walk at an odd megabyte lands one megabyte
/// lower — and the kit's code, stack and page tables all live at 1 MiB. So the accesses run in
/// a window: a position-independent routine copied to 2 MiB, on a stack at 2 MiB + 64 KiB, with
/// page tables built at 6 MiB, interrupts off.
const WINDOW_CODE: u64 = 2 * MIB;
const WINDOW_ARGS: u64 = 2 * MIB + 0x8000;
const WINDOW_STACK: u64 = 2 * MIB + 0x10000;
const WINDOW_PML4: u64 = 6 * MIB;

/// The window's arguments and results, at [`WINDOW_ARGS`].
#[repr(C)]
struct Args {
    /// 1: port 0x92; 2: KBC 0xD1 with `closed`/`open` as the output-port bytes; 3: KBC 0xDD/0xDF.
    gate: u64,
    closed: u64,
    open: u64,
    /// Read (and, if `write`, flip, read back and restore) this address with A20 closed.
    target: u64,
    write: u64,
    /// Read this address too (the guest's own control page).
    control: u64,
    seen: u64,
    back: u64,
    control_seen: u64,
}

core::arch::global_asm!(
    ".section .text.hostile_a20_window, \"ax\"",
    ".global hostile_a20_window",
    ".global hostile_a20_window_end",
    // rdi = Args, rsi = page tables, rdx = stack top. Interrupts are off.
    "hostile_a20_window:",
    "    mov rax, rsp",
    "    mov rsp, rdx",
    "    push rax",
    "    mov rax, cr3",
    "    push rax",
    "    mov cr3, rsi",
    "    push rbx",
    // Close the gate.
    "    mov rbx, [rdi + 8]",
    "    call hostile_a20_gate",
    "    mov rcx, [rdi + 24]",
    "    mov rax, [rcx]",
    "    mov [rdi + 48], rax",
    "    cmp qword ptr [rdi + 32], 0",
    "    je hostile_a20_no_write",
    "    not rax",
    "    mov [rcx], rax",
    "    mov rax, [rcx]",
    "    mov [rdi + 56], rax",
    "    mov rax, [rdi + 48]",
    "    mov [rcx], rax",
    "hostile_a20_no_write:",
    "    mov rcx, [rdi + 40]",
    "    mov rax, [rcx]",
    "    mov [rdi + 64], rax",
    // An exit with the gate closed: the hypervisor runs while the guest's A20 is masked, and
    // must not be masked itself.
    "    push rdi",
    "    xor eax, eax",
    "    xor ecx, ecx",
    "    cpuid",
    "    pop rdi",
    // Open it again.
    "    mov rbx, [rdi + 16]",
    "    call hostile_a20_gate",
    "    pop rbx",
    "    pop rax",
    "    mov cr3, rax",
    "    pop rax",
    "    mov rsp, rax",
    "    ret",
    // rbx = the output-port byte (gate 2) or 0 = close / 1 = open (gates 1 and 3).
    "hostile_a20_gate:",
    "    mov rax, [rdi]",
    "    cmp rax, 1",
    "    je hostile_a20_p92",
    "    cmp rax, 2",
    "    je hostile_a20_d1",
    "    call hostile_a20_kbc_wait",
    "    mov al, 0xDD",
    "    test rbx, rbx",
    "    jz hostile_a20_dd",
    "    mov al, 0xDF",
    "hostile_a20_dd:",
    "    out 0x64, al",
    "    call hostile_a20_kbc_wait",
    "    ret",
    "hostile_a20_p92:",
    "    in al, 0x92",
    "    and al, 0xFC",
    "    test rbx, rbx",
    "    jz hostile_a20_p92_out",
    "    or al, 2",
    "hostile_a20_p92_out:",
    "    out 0x92, al",
    "    ret",
    "hostile_a20_d1:",
    "    call hostile_a20_kbc_wait",
    "    mov al, 0xD1",
    "    out 0x64, al",
    "    call hostile_a20_kbc_wait",
    "    mov al, bl",
    "    out 0x60, al",
    "    call hostile_a20_kbc_wait",
    "    ret",
    "hostile_a20_kbc_wait:",
    "    mov ecx, 100000",
    "hostile_a20_kbc_loop:",
    "    in al, 0x64",
    "    test al, 2",
    "    jz hostile_a20_kbc_done",
    "    dec ecx",
    "    jnz hostile_a20_kbc_loop",
    "hostile_a20_kbc_done:",
    "    ret",
    "hostile_a20_window_end:",
    ".section .text",
);

unsafe extern "C" {
    fn hostile_a20_window();
    fn hostile_a20_window_end();
}

/// Identity map of the first 4 GiB with 2 MiB pages at [`WINDOW_PML4`] (6 pages), and the
/// window's code at [`WINDOW_CODE`].
fn prepare_window() {
    let pdpt = WINDOW_PML4 + PAGE;
    let pd = WINDOW_PML4 + 2 * PAGE;
    unsafe {
        core::ptr::write_bytes(WINDOW_PML4 as *mut u8, 0, 6 * PAGE as usize);
        write64(WINDOW_PML4, pdpt | 3);
        for i in 0..4 {
            write64(pdpt + 8 * i, (pd + PAGE * i) | 3);
        }
        for i in 0..2048u64 {
            // Present | writable | 2 MiB page.
            write64(pd + 8 * i, (i << 21) | 0x83);
        }
        let start = hostile_a20_window as *const () as usize;
        let len = hostile_a20_window_end as *const () as usize - start;
        core::ptr::copy_nonoverlapping(start as *const u8, WINDOW_CODE as *mut u8, len);
    }
}

fn window(gate: Gate, target: u64, write: bool, control: u64) -> (u64, u64, u64) {
    let (code, closed, open) = match gate {
        Gate::Port92 => (1, 0, 1),
        Gate::KbcOutputPort => {
            let cur = kbc_read_output_port().unwrap_or(0x03);
            // Bit 0 low would reset the processor.
            (2, u64::from((cur | 1) & !2), u64::from(cur | 3))
        }
        Gate::KbcDdDf => (3, 0, 1),
    };
    let args = WINDOW_ARGS as *mut Args;
    unsafe {
        args.write_volatile(Args {
            gate: code,
            closed,
            open,
            target,
            write: u64::from(write),
            control,
            seen: 0,
            back: 0,
            control_seen: 0,
        });
        let f: extern "C" fn(u64, u64, u64) = core::mem::transmute(WINDOW_CODE as usize);
        core::arch::asm!("cli");
        f(WINDOW_ARGS, WINDOW_PML4, WINDOW_STACK);
        core::arch::asm!("sti");
        let a = args.read_volatile();
        (a.seen, a.back, a.control_seen)
    }
}

/// The first page of `range` with address bit 20 clear.
fn even_megabyte_page(range: (u64, u64)) -> Option<u64> {
    let x = if range.0 & MIB == 0 {
        range.0
    } else {
        (range.0 | (MIB - 1)) + 1
    };
    (x + PAGE <= range.1).then_some(x)
}

pub fn attack(gate: Gate, write: bool) -> Outcome {
    let t = find_targets();
    prepare_window();
    // The mechanism on the guest's own pages.
    write64(C, OWN);
    write64(C + MIB, OTHER);
    let (_, _, alias) = window(gate, C + MIB, false, C + MIB);
    let after = read64(C + MIB);
    if alias != OWN {
        return fail!(
            "own-page-not-aliased gate={} read={:#x} want={:#x}",
            gate.name(),
            alias,
            OWN
        );
    }
    if after != OTHER {
        return fail!("a20-did-not-reopen gate={} read={:#x}", gate.name(), after);
    }
    let mut tried = 0;
    for &range in t.ranges() {
        let Some(x) = even_megabyte_page(range) else {
            continue;
        };
        let y = x + MIB;
        if !t.is_ram(y, PAGE) {
            continue;
        }
        tried += 1;
        write64(y, MINE);
        let (seen, back, _) = window(gate, y, write, C + MIB);
        let own_after = read64(y);
        if seen != MINE {
            if write && back == !seen && own_after == MINE {
                return fail!(
                    "wrote-vigil-memory gate={} at={:#x} via={:#x} value={:#x}",
                    gate.name(),
                    x,
                    y,
                    seen
                );
            }
            return fail!(
                "read-vigil-memory gate={} at={:#x} via={:#x} value={:#x}",
                gate.name(),
                x,
                y,
                seen
            );
        }
        if own_after != MINE {
            return fail!(
                "own-page-changed gate={} at={:#x} read={:#x}",
                gate.name(),
                y,
                own_after
            );
        }
    }
    pass!("gate={} own-alias=ok targets={}", gate.name(), tried)
}
