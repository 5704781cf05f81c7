//! I/O instructions on ports that exit. Who serves a port is the ownership table's decision
//! (`crate::owners`): Vigil's console (COM2) is no device at all to the guest; the emulator's
//! shutdown port ends the run when the guest powers off; the platform devices Vigil owns (PCI
//! configuration, resets, A20, ACPI sleep, the SMI command port, the IDE bus master) are served
//! by `crate::platform`; ports the user traps are executed on the guest's behalf, so the device
//! behaves as if the guest had touched it directly.
//!
//! An access is checked over its whole width: a word at 0x2F7 touches the guest's 0x2F7 and
//! Vigil's 0x2F8 (the processor exits for it because of 0x2F8, SDM Vol. 3C 26.1.3). When the
//! bytes of one access belong to different rules, each byte goes to its own rule, so no byte of
//! an owned port ever reaches the device.
//!
//! IN/OUT are completed here; INS/OUTS go through the same port logic one element at a time
//! (`io_string.rs`).

use super::{Action, IoAccess, Stop};
use crate::cpu::Cpu;
use crate::owners::{PortHandler, PortRule};
use crate::vcpu::{Host, Vcpu};

const SHUTDOWN_MAGIC: &[u8] = b"Shutdown";
/// A byte no device answers.
static ABSENT: PortRule = PortRule {
    ports: 0..=0,
    owner: crate::owners::Owner::Vigil,
    handler: PortHandler::Absent,
    why: "a byte of an access that starts below the shutdown port",
};

/// Bits of an access of `size` bytes.
pub fn size_mask(size: u8) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

/// One port access on the guest's behalf: `Ok(Some(value))` for a read, `Ok(None)` for a write,
/// `Err` when the write ends the guest.
#[inline]
pub fn port_access<V: Vcpu>(
    cpu: &mut Cpu<V>,
    port: u16,
    size: u8,
    write: Option<u32>,
) -> Result<Option<u32>, Stop> {
    if cpu.config().log_exits {
        match write {
            None => log::info!("in{} port {port:#x} (rip {:#x})", size * 8, cpu.vcpu.rip()),
            Some(v) => log::info!(
                "out{} port {port:#x} <- {v:#x} (rip {:#x})",
                size * 8,
                cpu.vcpu.rip()
            ),
        }
    }
    let table = &cpu.vm.owners.ports;
    let first = table.rule_number(port);
    let uniform = size == 1
        || ((1..size).all(|i| table.rule_number(port.wrapping_add(i as u16)) == first)
            // An access that wraps past port 0xFFFF is split too.
            && port.checked_add(size as u16 - 1).is_some());
    if uniform {
        return one_rule(cpu, table.rule(port), port, size, write);
    }
    // Byte by byte, each byte by its own rule.
    let mut value = 0u32;
    for i in 0..size {
        let p = port.wrapping_add(i as u16);
        let mut rule = table.rule(p);
        // The emulator's shutdown port decodes only accesses that start at it (Bochs
        // dispatches an access by its first port): a byte of a wider access that starts below
        // it reaches no device.
        if i > 0 && rule.is_some_and(|r| r.handler == PortHandler::Shutdown) {
            rule = Some(&ABSENT);
        }
        let byte = write.map(|v| (v >> (8 * i)) & 0xFF);
        if let Some(read) = one_rule(cpu, rule, p, 1, byte)? {
            value |= (read & 0xFF) << (8 * i);
        }
    }
    Ok(write.is_none().then_some(value))
}

/// An access whose every byte has `rule` (`None`: the guest's port, which exits only because a
/// neighbouring byte of the access is trapped).
#[inline]
fn one_rule<V: Vcpu>(
    cpu: &mut Cpu<V>,
    rule: Option<&PortRule>,
    port: u16,
    size: u8,
    write: Option<u32>,
) -> Result<Option<u32>, Stop> {
    let mask = size_mask(size);
    let handler = rule.map_or(PortHandler::Forward, |r| r.handler);
    match (handler, write) {
        (PortHandler::Absent, None) => return Ok(Some(mask)),
        (PortHandler::Absent, Some(_)) => return Ok(None),
        (PortHandler::Shutdown, Some(v)) if size == 1 => {
            return shutdown_byte(cpu, v as u8).map(|()| None)
        }
        (PortHandler::Platform(device), _) => {
            return crate::platform::port_access(cpu, device, port, size, write.map(|v| v & mask))
                .map(|r| r.map(|v| v & mask));
        }
        _ => {}
    }
    let host = cpu.vcpu.host();
    Ok(match write {
        None => Some(host.port_in(port, size) & mask),
        Some(v) => {
            host.port_out(port, size, v & mask);
            None
        }
    })
}

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, io: &IoAccess) -> Action {
    if io.string {
        return super::io_string::handle(cpu, io);
    }
    let write = (!io.input).then(|| cpu.vcpu.gpr(0) as u32);
    match port_access(cpu, io.port, io.size, write) {
        Ok(Some(v)) => {
            complete_in(&mut cpu.vcpu, io.size, v);
            Action::Advance
        }
        Ok(None) => Action::Advance,
        Err(stop) => Action::Stop(stop),
    }
}

/// IN writes AL/AX and keeps the rest of RAX, while a 32-bit IN zero-extends into RAX
/// (SDM Vol. 1 3.4.1.1).
fn complete_in<V: Vcpu>(vcpu: &mut V, size: u8, value: u32) {
    let rax = vcpu.gpr(0);
    let value = value as u64;
    vcpu.set_gpr(
        0,
        match size {
            1 => (rax & !0xFF) | (value & 0xFF),
            2 => (rax & !0xFFFF) | (value & 0xFFFF),
            _ => value & 0xFFFF_FFFF,
        },
    );
}

fn shutdown_byte<V: Vcpu>(cpu: &mut Cpu<V>, byte: u8) -> Result<(), Stop> {
    if SHUTDOWN_MAGIC.get(cpu.shutdown_progress) == Some(&byte) {
        cpu.shutdown_progress += 1;
    } else {
        cpu.shutdown_progress = usize::from(byte == SHUTDOWN_MAGIC[0]);
    }
    if cpu.shutdown_progress == SHUTDOWN_MAGIC.len() {
        log::info!(
            "guest wrote the shutdown sequence to port {:#x}: powering off",
            crate::owners::SHUTDOWN_PORT
        );
        return Err(Stop::PowerOff);
    }
    Ok(())
}
