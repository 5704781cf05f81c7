//! Resets and sleep. Before each, the guest plants a warm-boot path back into its own code: the
//! CMOS shutdown status byte 0x0F = 0x0A ("jump through 40:67 without EOI", which the BIOS
//! honours at every reset) and the far pointer at 0x40:0x67 pointing at a real-mode stub. If the
//! processor leaves VMX and the BIOS jumps there, the stub prints
//! `hostile: guest code runs after the reset, outside VMX`, stops in the emulator's debugger
//! (magic breakpoint `xchg bx, bx`, for the oracle) and ends the machine.
//!
//! Bare, that line is the reference: the reset happened and the guest got control back. Under
//! Vigil it must never appear: Vigil must see the request and end the run with the reason.

use super::io::*;
use guest_kit::{fail, println, Outcome};

/// The stub runs at 0x8C00:0000 with its stack below 0x8B000.
const STUB: u64 = 0x8C000;
/// A second boot finds this, so a BIOS that ignored 0x0F and booted again ends the run.
const MARKER: u64 = 0x8F000;
const MARKER_VALUE: u64 = 0x5245_5345_5448_4F53; // "SOHTESER"

core::arch::global_asm!(
    ".section .text.hostile_stub, \"ax\"",
    ".global hostile_stub",
    ".global hostile_stub_end",
    ".code16",
    "hostile_stub:",
    "    cli",
    "    mov ax, 0x8000",
    "    mov ss, ax",
    "    mov sp, 0xB000",
    "    mov al, 104",
    "    call hostile_stub_putc",
    "    mov al, 111",
    "    call hostile_stub_putc",
    "    mov al, 115",
    "    call hostile_stub_putc",
    "    mov al, 116",
    "    call hostile_stub_putc",
    "    mov al, 105",
    "    call hostile_stub_putc",
    "    mov al, 108",
    "    call hostile_stub_putc",
    "    mov al, 101",
    "    call hostile_stub_putc",
    "    mov al, 58",
    "    call hostile_stub_putc",
    "    mov al, 32",
    "    call hostile_stub_putc",
    "    mov al, 103",
    "    call hostile_stub_putc",
    "    mov al, 117",
    "    call hostile_stub_putc",
    "    mov al, 101",
    "    call hostile_stub_putc",
    "    mov al, 115",
    "    call hostile_stub_putc",
    "    mov al, 116",
    "    call hostile_stub_putc",
    "    mov al, 32",
    "    call hostile_stub_putc",
    "    mov al, 99",
    "    call hostile_stub_putc",
    "    mov al, 111",
    "    call hostile_stub_putc",
    "    mov al, 100",
    "    call hostile_stub_putc",
    "    mov al, 101",
    "    call hostile_stub_putc",
    "    mov al, 32",
    "    call hostile_stub_putc",
    "    mov al, 114",
    "    call hostile_stub_putc",
    "    mov al, 117",
    "    call hostile_stub_putc",
    "    mov al, 110",
    "    call hostile_stub_putc",
    "    mov al, 115",
    "    call hostile_stub_putc",
    "    mov al, 32",
    "    call hostile_stub_putc",
    "    mov al, 97",
    "    call hostile_stub_putc",
    "    mov al, 102",
    "    call hostile_stub_putc",
    "    mov al, 116",
    "    call hostile_stub_putc",
    "    mov al, 101",
    "    call hostile_stub_putc",
    "    mov al, 114",
    "    call hostile_stub_putc",
    "    mov al, 32",
    "    call hostile_stub_putc",
    "    mov al, 116",
    "    call hostile_stub_putc",
    "    mov al, 104",
    "    call hostile_stub_putc",
    "    mov al, 101",
    "    call hostile_stub_putc",
    "    mov al, 32",
    "    call hostile_stub_putc",
    "    mov al, 114",
    "    call hostile_stub_putc",
    "    mov al, 101",
    "    call hostile_stub_putc",
    "    mov al, 115",
    "    call hostile_stub_putc",
    "    mov al, 101",
    "    call hostile_stub_putc",
    "    mov al, 116",
    "    call hostile_stub_putc",
    "    mov al, 44",
    "    call hostile_stub_putc",
    "    mov al, 32",
    "    call hostile_stub_putc",
    "    mov al, 111",
    "    call hostile_stub_putc",
    "    mov al, 117",
    "    call hostile_stub_putc",
    "    mov al, 116",
    "    call hostile_stub_putc",
    "    mov al, 115",
    "    call hostile_stub_putc",
    "    mov al, 105",
    "    call hostile_stub_putc",
    "    mov al, 100",
    "    call hostile_stub_putc",
    "    mov al, 101",
    "    call hostile_stub_putc",
    "    mov al, 32",
    "    call hostile_stub_putc",
    "    mov al, 86",
    "    call hostile_stub_putc",
    "    mov al, 77",
    "    call hostile_stub_putc",
    "    mov al, 88",
    "    call hostile_stub_putc",
    "    mov al, 13",
    "    call hostile_stub_putc",
    "    mov al, 10",
    "    call hostile_stub_putc",
    // The oracle's stop: Bochs' magic breakpoint.
    "    xchg bx, bx",
    "    mov dx, 0x8900",
    "    mov al, 83",
    "    out dx, al",
    "    mov al, 104",
    "    out dx, al",
    "    mov al, 117",
    "    out dx, al",
    "    mov al, 116",
    "    out dx, al",
    "    mov al, 100",
    "    out dx, al",
    "    mov al, 111",
    "    out dx, al",
    "    mov al, 119",
    "    out dx, al",
    "    mov al, 110",
    "    out dx, al",
    "hostile_stub_halt:",
    "    hlt",
    "    jmp hostile_stub_halt",
    "hostile_stub_putc:",
    "    push ax",
    "    mov dx, 0x3FD",
    "hostile_stub_wait:",
    "    in al, dx",
    "    test al, 0x20",
    "    jz hostile_stub_wait",
    "    pop ax",
    "    mov dx, 0x3F8",
    "    out dx, al",
    "    ret",
    "hostile_stub_end:",
    ".code64",
    ".section .text",
);

unsafe extern "C" {
    fn hostile_stub();
    fn hostile_stub_end();
}

#[derive(Clone, Copy)]
pub enum Method {
    /// Reset control register 0xCF9: 0x04 soft (CPU only), 0x06 hard (system).
    Cf9Soft,
    Cf9Hard,
    /// System control port A (0x92) bit 0: fast reset.
    Port92,
    /// Keyboard controller command 0xFE: pulse the reset line.
    KbcPulse,
    /// Keyboard controller command 0xD1: output port with bit 0 (reset) low.
    KbcOutputPort,
    /// ACPI S3 through PM1a_CNT (SLP_TYP 1 in Bochs' PIIX4), with the FACS waking vector at the stub.
    SleepS3,
    /// Move the PIIX4 power-management I/O block (PCI 00:01.3 register 0x40) to 0x6000, then S5
    /// (SLP_TYP 0, SLP_EN) through the moved PM1a_CNT: power off behind a trap on the old port.
    MovedPmS5,
}

fn plant() {
    unsafe {
        let start = hostile_stub as *const () as usize;
        let len = hostile_stub_end as *const () as usize - start;
        core::ptr::copy_nonoverlapping(start as *const u8, STUB as *mut u8, len);
        // 40:67 = offset, 40:69 = segment.
        (0x467 as *mut u16).write_volatile(0);
        (0x469 as *mut u16).write_volatile((STUB >> 4) as u16);
    }
    cmos_write(0x0F, 0x0A);
    write64(MARKER, MARKER_VALUE);
}

/// A boot that finds the marker: the machine came back through a full boot after the reset.
pub fn booted_again() -> bool {
    if read64(MARKER) == MARKER_VALUE {
        write64(MARKER, 0);
        println!("hostile: booted again after the reset, with the guest's memory left in place");
        true
    } else {
        false
    }
}

fn pm_base() -> u16 {
    (pci_read32(PM, 0x40) & 0xFFC0) as u16
}

pub fn reset(method: Method) -> Outcome {
    plant();
    guest_kit::serial::flush();
    unsafe {
        match method {
            Method::Cf9Soft => outb(0xCF9, 0x04),
            Method::Cf9Hard => outb(0xCF9, 0x06),
            Method::Port92 => {
                let v = inb(0x92) & !1;
                outb(0x92, v);
                outb(0x92, v | 1);
            }
            Method::KbcPulse => kbc_command(0xFE),
            Method::KbcOutputPort => {
                let cur = kbc_read_output_port().unwrap_or(0x03);
                kbc_command(0xD1);
                kbc_data(cur & !1);
            }
            Method::SleepS3 => {
                if let Some(fadt) = acpi_table(b"FACP") {
                    let facs = u64::from(read32(fadt + 36));
                    if facs != 0 {
                        // Firmware waking vector (ACPI 6.4, 5.2.10): real mode, segment = vector >> 4.
                        write32(facs + 12, STUB as u32);
                    }
                }
                cmos_write(0x0F, 0x00);
                outw(pm_base() + 4, (1 << 10) | (1 << 13));
            }
            Method::MovedPmS5 => {
                pci_write32(PM, 0x40, 0x6001);
                // PMREGMISC (0x80) bit 0: the PM I/O space is enabled.
                pci_write8(PM, 0x80, pci_read8(PM, 0x80) | 1);
                outw(0x6004, 1 << 13);
            }
        }
    }
    for _ in 0..1_000_000 {
        core::hint::spin_loop();
    }
    fail!("machine-still-running")
}
