//! Ports over their whole width. An I/O instruction touches every port from its first to its
//! last byte (SDM Vol. 1, "I/O Address Space"), and VMX checks every one of them in the I/O
//! bitmap (SDM Vol. 3C, "I/O-Instruction Exiting"). Bochs dispatches an access by its first
//! port only, so bare these reach nothing beyond 0x2F7/0x2F5/0x88FF/0x8FFF; the bytes written
//! spell a line that must never appear in Vigil's log (COM2), and the shutdown port must not end
//! the machine. Both hold bare; under Vigil they must hold too.

use super::io::*;
use guest_kit::{pass, Outcome};

/// The line written through the wide accesses; xtask looks for it on COM2.
pub const MARK: &[u8] = b"\nHOSTILE-PORT-WIDTH\n";

pub fn word_2f7() -> Outcome {
    for &b in MARK {
        unsafe { outw(0x2F7, u16::from(b) << 8) };
    }
    let r = unsafe { inw(0x2F7) };
    pass!("read={:#x}", r)
}

pub fn dword_2f5() -> Outcome {
    for &b in MARK {
        unsafe { outl(0x2F5, u32::from(b) << 24) };
    }
    let r = unsafe { inl(0x2F5) };
    pass!("read={:#x}", r)
}

/// A word at `port` whose high byte would be the next port: the bytes of `Shutdown`.
pub fn shutdown_word(port: u16) -> Outcome {
    for &b in b"Shutdown" {
        unsafe { outw(port, u16::from(b) << 8 | u16::from(b)) };
    }
    pass!("port={:#x} survived=1", port)
}
