//! The debugger's hardware: COM2 as the link to gdb, and where Vigil's log lines go while gdb is
//! attached (`vigil_core::debugger` holds everything else).

use crate::arch::port::inb;
use crate::serial::{Uart, COM2};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};
use spin::Mutex;
use vigil_core::debugger::exits::{Link, Route};
use vigil_core::debugger::session::Port;

/// COM2 as the byte pipe to gdb.
#[derive(Clone)]
pub struct Com2;

impl Port for Com2 {
    fn put(&mut self, byte: u8) {
        Uart::new(COM2).write_byte(byte);
    }
}

impl Link for Com2 {
    fn read(&mut self) -> Option<u8> {
        self.ready().then(|| inb(COM2))
    }

    /// Line status register bit 0: data ready. Reading the LSR changes nothing the receiver
    /// holds, so any processor may ask.
    fn ready(&self) -> bool {
        inb(COM2 + 5) & 1 != 0
    }

    fn set_route(&mut self, route: Route) {
        ROUTE.store(route as u8, Ordering::Relaxed);
        if route == Route::Held {
            return;
        }
        let text = core::mem::take(&mut *HELD_LOG.lock());
        if !text.is_empty() {
            if route == Route::Packet {
                vigil_core::debugger::console::o_packets(&text, &mut |b| self.put(b));
            } else {
                text.iter().for_each(|&b| self.put(b));
            }
        }
    }
}

static ROUTE: AtomicU8 = AtomicU8::new(Route::Plain as u8);
static HELD_LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
const HELD_LOG_MAX: usize = 16 << 10;

pub fn route() -> Route {
    match ROUTE.load(Ordering::Relaxed) {
        1 => Route::Packet,
        2 => Route::Held,
        _ => Route::Plain,
    }
}

/// Keeps log text while the guest is stopped under gdb (dropped beyond 16 KiB).
pub fn hold_log(text: &str) {
    let mut buf = HELD_LOG.lock();
    let room = HELD_LOG_MAX.saturating_sub(buf.len());
    buf.extend_from_slice(&text.as_bytes()[..text.len().min(room)]);
}

/// The ELF class (EI_CLASS) of the first ELF boot module, read before any module is loaded
/// (loading may overwrite a module that overlaps its load range).
pub fn elf_class(ranges: impl Iterator<Item = (u64, u64)>) -> Option<u8> {
    ranges
        .filter(|(s, e)| e > s && e - s >= 5)
        .find_map(|(start, _)| {
            // SAFETY: modules lie in RAM GRUB reported; five bytes are read before anything
            // overwrites them.
            let ident = unsafe { core::slice::from_raw_parts(start as *const u8, 5) };
            (ident[..4] == *b"\x7fELF").then(|| ident[4])
        })
}
