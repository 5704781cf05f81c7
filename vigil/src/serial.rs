//! Vigil's console: a 16550 UART on COM2 (0x2F8). COM1 belongs to the guest.
//!
//! The UART runs at 115200 baud: Bochs models the baud rate, so a slower console would cost the
//! guest measurable emulated time whenever Vigil prints.

use crate::arch::port::{inb, outb};
use core::fmt;
use spin::Mutex;

/// Vigil's console port; the ownership table (`vigil_core::owners`) keeps the guest off it.
pub const COM2: u16 = 0x2F8;

pub struct Uart {
    base: u16,
}

impl Uart {
    pub const fn new(base: u16) -> Self {
        Self { base }
    }

    pub fn init(&self) {
        let b = self.base;
        outb(b + 1, 0x00); // no interrupts: Vigil polls
        outb(b + 3, 0x80); // DLAB on
        outb(b, 0x01); // divisor 1 = 115200 baud
        outb(b + 1, 0x00);
        outb(b + 3, 0x03); // 8N1, DLAB off
        outb(b + 2, 0xC7); // FIFO on, cleared, 14-byte threshold
        outb(b + 4, 0x03); // DTR, RTS
    }

    pub fn write_byte(&self, byte: u8) {
        // Line status register bit 5: transmitter holding register empty.
        while inb(self.base + 5) & 0x20 == 0 {
            core::hint::spin_loop();
        }
        outb(self.base, byte);
    }
}

impl fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
        Ok(())
    }
}

pub static CONSOLE: Mutex<Uart> = Mutex::new(Uart::new(COM2));

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    use fmt::Write;
    // While gdb is attached COM2 carries its protocol: log text goes as console-output packets
    // when gdb may take them, and is kept until then otherwise (debugger.rs).
    match crate::debugger::route() {
        vigil_core::debugger::exits::Route::Plain => {
            let _ = CONSOLE.lock().write_fmt(args);
        }
        vigil_core::debugger::exits::Route::Packet => {
            let text = alloc::format!("{args}");
            let console = CONSOLE.lock();
            vigil_core::debugger::console::o_packets(text.as_bytes(), &mut |b| {
                console.write_byte(b)
            });
        }
        vigil_core::debugger::exits::Route::Held => {
            crate::debugger::hold_log(&alloc::format!("{args}"))
        }
    }
}

/// Writes to the console even if the lock is held (used by the panic and fault paths, which may
/// interrupt a holder of the lock on this very CPU).
pub fn emergency_print(args: fmt::Arguments) {
    use fmt::Write;
    let _ = Uart::new(COM2).write_fmt(args);
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::serial::_print(format_args!($($arg)*)));
}

#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))));
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // The gdbstub crate logs every packet it does not know at info level: only its
        // warnings and errors are worth Vigil's console.
        let quiet = metadata.target().starts_with("gdbstub") && metadata.level() > log::Level::Warn;
        metadata.level() <= log::max_level() && !quiet
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match record.level() {
            log::Level::Info => println!("{}", record.args()),
            level => {
                let tag = match level {
                    log::Level::Error => "error",
                    log::Level::Warn => "warn",
                    log::Level::Debug => "debug",
                    _ => "trace",
                };
                println!("{tag}: {}", record.args())
            }
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

pub fn init() {
    CONSOLE.lock().init();
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}
