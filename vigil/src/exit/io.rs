//! I/O instructions (exit reason 30) on ports whose bit is set in the I/O bitmaps
//! (SDM Vol. 3C 26.1.3). Three owners:
//! - Vigil's console, COM2: to the guest it is no device at all (reads float high, writes are
//!   lost), exactly like an empty ISA decode.
//! - Power-off: the emulator's shutdown port (the bytes of "Shutdown") and the ACPI PM1a control
//!   register (a write with SLP_EN, ACPI 6.5 4.8.3.2.1) end the guest; Vigil then prints its
//!   statistics and turns the machine off itself.
//! - Ports the user asked to trap: executed on the guest's behalf (and logged on request), so
//!   the device behaves as if the guest had touched it directly.
//!
//! IN/OUT are completed here; INS/OUTS go through the same port logic one element at a time
//! (`io_string.rs`).

use super::{Action, Stop};
use crate::arch::port::{inb, inl, inw, outb, outl, outw};
use crate::serial::COM2_PORTS;
use crate::vmm::Vcpu;
use vmx::exit::IoQualification;

pub const SHUTDOWN_PORT: u16 = 0x8900;
const SHUTDOWN_MAGIC: &[u8] = b"Shutdown";
const SLP_EN: u32 = 1 << 13;

/// Bits of an access of `size` bytes.
pub fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

/// One port access on the guest's behalf: `Ok(Some(value))` for a read, `Ok(None)` for a write,
/// `Err` when the write ends the guest.
pub fn port_access(
    vcpu: &mut Vcpu,
    port: u16,
    size: u8,
    write: Option<u64>,
) -> Result<Option<u64>, Stop> {
    let mask = size_mask(size);
    if vcpu.config.log_exits {
        match write {
            None => log::info!("in{} port {port:#x} (rip {:#x})", size * 8, vcpu.rip()),
            Some(v) => log::info!(
                "out{} port {port:#x} <- {v:#x} (rip {:#x})",
                size * 8,
                vcpu.rip()
            ),
        }
    }
    if COM2_PORTS.contains(&port) {
        return Ok(write.is_none().then_some(mask));
    }
    let Some(value) = write else {
        let v = match size {
            1 => inb(port) as u64,
            2 => inw(port) as u64,
            _ => inl(port) as u64,
        };
        return Ok(Some(v));
    };
    let value = value & mask;
    if port == SHUTDOWN_PORT && size == 1 {
        return shutdown_byte(vcpu, value as u8).map(|()| None);
    }
    if Some(port) == vcpu.pm1a_control && (value as u32) & SLP_EN != 0 {
        log::info!("guest requested ACPI sleep (PM1a_CNT <- {value:#x}): powering off");
        return Err(Stop::PowerOff);
    }
    match size {
        1 => outb(port, value as u8),
        2 => outw(port, value as u16),
        _ => outl(port, value as u32),
    }
    Ok(None)
}

pub fn handle(vcpu: &mut Vcpu, q: IoQualification) -> Action {
    if q.string {
        return super::io_string::handle(vcpu, q);
    }
    let write = (!q.input).then_some(vcpu.regs.rax);
    match port_access(vcpu, q.port, q.size, write) {
        Ok(Some(v)) => {
            complete_in(vcpu, q.size, v);
            Action::Advance
        }
        Ok(None) => Action::Advance,
        Err(stop) => Action::Stop(stop),
    }
}

/// IN writes AL/AX and keeps the rest of RAX, while a 32-bit IN zero-extends into RAX
/// (SDM Vol. 1 3.4.1.1).
fn complete_in(vcpu: &mut Vcpu, size: u8, value: u64) {
    let rax = vcpu.regs.rax;
    vcpu.regs.rax = match size {
        1 => (rax & !0xFF) | (value & 0xFF),
        2 => (rax & !0xFFFF) | (value & 0xFFFF),
        _ => value & 0xFFFF_FFFF,
    };
}

fn shutdown_byte(vcpu: &mut Vcpu, byte: u8) -> Result<(), Stop> {
    if SHUTDOWN_MAGIC.get(vcpu.shutdown_progress) == Some(&byte) {
        vcpu.shutdown_progress += 1;
    } else {
        vcpu.shutdown_progress = usize::from(byte == SHUTDOWN_MAGIC[0]);
    }
    if vcpu.shutdown_progress == SHUTDOWN_MAGIC.len() {
        log::info!("guest wrote the shutdown sequence to port {SHUTDOWN_PORT:#x}: powering off");
        return Err(Stop::PowerOff);
    }
    Ok(())
}
