//! COM1 (0x3F8) output at 115200 8N1, polled.
//!
//! There is no lock: the guests run on one CPU, and the only output from interrupt context is
//! the fatal-exception report, after which nothing else prints.

use crate::cpu::{inb, outb};
use core::fmt;

/// COM1 base port; docs/architecture.md gives COM1 to the guest.
pub const COM1: u16 = 0x3F8;

// 16550 register offsets (National Semiconductor PC16550D data sheet).
const DATA: u16 = 0; // DLAB = 0: transmit holding; DLAB = 1: divisor latch low
const IER: u16 = 1; // DLAB = 0: interrupt enable; DLAB = 1: divisor latch high
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
/// Scratch register: plain storage with no effect on the UART, which makes it a harmless I/O
/// round-trip probe.
pub const SCRATCH: u16 = 7;

const LSR_THR_EMPTY: u8 = 1 << 5;
const LSR_TRANSMITTER_EMPTY: u8 = 1 << 6;

/// Program COM1 for 115200 baud, 8 data bits, no parity, 1 stop bit, FIFOs on, interrupts off.
/// Bochs models the baud rate, so a slow setting would make output cost emulated time.
pub fn init() {
    unsafe {
        outb(COM1 + IER, 0x00);
        outb(COM1 + LCR, 0x80); // DLAB: expose the divisor latch
        outb(COM1 + DATA, 0x01); // 115200 = 1.8432 MHz / 16 / 1
        outb(COM1 + IER, 0x00);
        outb(COM1 + LCR, 0x03); // 8N1, DLAB off
        outb(COM1 + FCR, 0xC7); // enable and clear FIFOs
        outb(COM1 + MCR, 0x03); // DTR | RTS; OUT2 clear keeps the IRQ line quiet
    }
}

/// Send one byte, waiting for the transmit holding register to drain.
pub fn write_byte(byte: u8) {
    unsafe {
        while inb(COM1 + LSR) & LSR_THR_EMPTY == 0 {}
        outb(COM1 + DATA, byte);
    }
}

/// Wait until the last byte has left the shift register. Bochs models the baud rate, so bytes
/// still in the FIFO when the machine is shut down would be lost.
pub fn flush() {
    unsafe { while inb(COM1 + LSR) & LSR_TRANSMITTER_EMPTY == 0 {} }
}

/// `core::fmt` sink for COM1.
pub struct Com1;

impl fmt::Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            write_byte(b);
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let _ = fmt::Write::write_fmt(&mut Com1, args);
}

/// Print to COM1.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::_print(format_args!($($arg)*)) };
}

/// Print a line to COM1. Lines end in a bare `\n`.
#[macro_export]
macro_rules! println {
    () => { $crate::serial::_print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
