//! I/O instructions (exit reason 30) on ports whose bit is set in the I/O bitmaps
//! (SDM Vol. 3C 26.1.3). Three owners:
//! - Vigil's console, COM2: to the guest it is no device at all (reads float high, writes are
//!   lost), exactly like an empty ISA decode.
//! - Power-off: the emulator's shutdown port (the bytes of "Shutdown") and the ACPI PM1a control
//!   register (a write with SLP_EN, ACPI 6.5 4.8.3.2.1) end the guest; Vigil then prints its
//!   statistics and turns the machine off itself.
//! - Ports the user asked to trap: executed on the guest's behalf (and logged on request), so
//!   the device behaves as if the guest had touched it directly.

use super::{Action, Stop};
use crate::arch::port::{inb, inl, inw, outb, outl, outw};
use crate::serial::COM2_PORTS;
use crate::vmm::Vcpu;
use vmx::exit::IoQualification;

pub const SHUTDOWN_PORT: u16 = 0x8900;
const SHUTDOWN_MAGIC: &[u8] = b"Shutdown";
const SLP_EN: u32 = 1 << 13;

pub fn handle(vcpu: &mut Vcpu, q: IoQualification) -> Action {
    if q.string {
        crate::report::exit_report(vcpu, "string I/O to a port Vigil traps is not emulated");
        return Action::Stop(Stop::Failed("string I/O to a trapped port"));
    }
    let mask: u64 = match q.size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    };
    let value = vcpu.regs.rax & mask;
    if vcpu.config.log_exits {
        if q.input {
            log::info!(
                "in{} port {:#x} (rip {:#x})",
                q.size * 8,
                q.port,
                vcpu.rip()
            );
        } else {
            log::info!(
                "out{} port {:#x} <- {value:#x} (rip {:#x})",
                q.size * 8,
                q.port,
                vcpu.rip()
            );
        }
    }
    if COM2_PORTS.contains(&q.port) {
        if q.input {
            complete_in(vcpu, q.size, mask);
        }
        return Action::Advance;
    }
    if !q.input && q.port == SHUTDOWN_PORT && q.size == 1 {
        return shutdown_byte(vcpu, value as u8);
    }
    if !q.input && Some(q.port) == vcpu.pm1a_control && (value as u32) & SLP_EN != 0 {
        log::info!("guest requested ACPI sleep (PM1a_CNT <- {value:#x}): powering off");
        return Action::Stop(Stop::PowerOff);
    }
    // Pass-through on the guest's behalf.
    if q.input {
        let v = match q.size {
            1 => inb(q.port) as u64,
            2 => inw(q.port) as u64,
            _ => inl(q.port) as u64,
        };
        complete_in(vcpu, q.size, v);
    } else {
        match q.size {
            1 => outb(q.port, value as u8),
            2 => outw(q.port, value as u16),
            _ => outl(q.port, value as u32),
        }
    }
    Action::Advance
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

fn shutdown_byte(vcpu: &mut Vcpu, byte: u8) -> Action {
    if SHUTDOWN_MAGIC.get(vcpu.shutdown_progress) == Some(&byte) {
        vcpu.shutdown_progress += 1;
    } else {
        vcpu.shutdown_progress = usize::from(byte == SHUTDOWN_MAGIC[0]);
    }
    if vcpu.shutdown_progress == SHUTDOWN_MAGIC.len() {
        log::info!("guest wrote the shutdown sequence to port {SHUTDOWN_PORT:#x}: powering off");
        return Action::Stop(Stop::PowerOff);
    }
    Action::Advance
}
