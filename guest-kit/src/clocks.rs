//! The platform's clocks besides the TSC, read without interrupts and without VM exits under a
//! hypervisor that leaves the devices to the guest: the ACPI PM timer (found through the
//! firmware's tables), PIT channel 2 counting freely, and the RTC's seconds.
//!
//! A detector compares the TSC with these over a second or two; so do the kit's long-run cases.

use crate::cpu::{inb, outb};

/// The ACPI PM timer's frequency (ACPI 6.5 4.8.3.3).
pub const PM_TIMER_HZ: u64 = 3_579_545;

/// Reads a little-endian u32 at physical `addr` (the kit identity-maps the first 4 GiB).
fn read_u32(addr: u64) -> u32 {
    // SAFETY: firmware tables and the BIOS area lie in the identity-mapped first 4 GiB.
    unsafe { core::ptr::read_unaligned(addr as *const u32) }
}

/// The physical address of a table with `signature` whose header claims a sane length.
fn table(addr: u64, signature: &[u8; 4]) -> Option<u64> {
    if addr == 0 || addr >= 1 << 32 {
        return None;
    }
    let len = read_u32(addr + 4);
    (read_u32(addr) == u32::from_le_bytes(*signature) && (36..1 << 20).contains(&len))
        .then_some(addr)
}

/// The RSDP: on a 16-byte boundary in the BIOS area 0xE0000-0xFFFFF (ACPI 6.5 5.2.5.1).
fn rsdt() -> Option<u64> {
    (0xE_0000u64..0x10_0000).step_by(16).find_map(|a| {
        let sig = (read_u32(a) as u64) | (read_u32(a + 4) as u64) << 32;
        (sig == u64::from_le_bytes(*b"RSD PTR ")).then(|| read_u32(a + 16) as u64)
    })
}

/// The ACPI PM timer's I/O port (the FADT's PM_TMR_BLK), if the firmware describes one.
pub fn pm_timer_port() -> Option<u16> {
    let rsdt = table(rsdt()?, b"RSDT")?;
    let entries = (read_u32(rsdt + 4) as u64 - 36) / 4;
    (0..entries).find_map(|i| {
        let fadt = table(read_u32(rsdt + 36 + 4 * i) as u64, b"FACP")?;
        let port = read_u32(fadt + 76);
        (port != 0 && port <= 0xFFFF).then_some(port as u16)
    })
}

/// The ACPI PM timer's count (24 bits are always there).
pub fn pm_timer(port: u16) -> u32 {
    let v: u32;
    // SAFETY: reading the PM timer has no side effects.
    unsafe { core::arch::asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack)) };
    v & 0xFF_FFFF
}

const PIT_CHANNEL2: u16 = 0x42;
const PIT_COMMAND: u16 = 0x43;
const PORT_B: u16 = 0x61;

/// PIT channel 2 counting down from 65536 in mode 2 (rate generator) with its gate on and the
/// speaker off, so it runs freely; read it with [`pit2_count`]. Returns port B as it was, for
/// [`pit2_stop`].
pub fn pit2_start() -> u8 {
    // SAFETY: channel 2 and port B belong to the kit's guest; nothing else uses them meanwhile.
    unsafe {
        let saved = inb(PORT_B);
        outb(PORT_B, (saved & !0x02) | 0x01);
        // Channel 2, lobyte/hibyte, mode 2, binary; a count of 0 means 65536.
        outb(PIT_COMMAND, 0xB4);
        outb(PIT_CHANNEL2, 0);
        outb(PIT_CHANNEL2, 0);
        saved
    }
}

/// Channel 2's current count (latched: 8254 data sheet, counter latch command).
pub fn pit2_count() -> u16 {
    // SAFETY: as above.
    unsafe {
        outb(PIT_COMMAND, 0x80);
        let lo = inb(PIT_CHANNEL2);
        let hi = inb(PIT_CHANNEL2);
        u16::from_le_bytes([lo, hi])
    }
}

/// Puts port B back (only bits 3:0 are writable).
pub fn pit2_stop(saved: u8) {
    // SAFETY: as above.
    unsafe { outb(PORT_B, saved & 0x0F) };
}

/// The RTC's seconds register (CMOS index 0; MC146818 data sheet), read with NMIs left
/// enabled.
pub fn rtc_seconds() -> u8 {
    // SAFETY: selecting and reading a CMOS register changes nothing else.
    unsafe {
        outb(0x70, 0x00);
        inb(0x71)
    }
}
