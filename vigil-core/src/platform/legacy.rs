//! The PC's legacy controls of A20 and reset: system control port A (0x92) and the 8042
//! keyboard controller (0x60/0x64).
//!
//! **A20.** Closing the gate forces address bit 20 to 0. Real processors ignore A20M# in VMX
//! operation; Bochs masks even there, on host-physical addresses — Vigil's own accesses
//! included. So the real gate never closes: every write that would close it is changed to keep
//! it open, and the guest's gate is emulated instead (`Vcpu::set_a20`: the backend switches
//! to nested page tables in which the odd megabytes the emulation covers map onto the even
//! ones). The guest reads back its own gate from port 0x92 bit 1 and the controller's output
//! port (command 0xD0).
//!
//! **Reset.** Port 0x92 bit 0 (fast reset), controller command 0xFE and every pulse command
//! with bit 0 clear (0xF0-0xFE: bit 0 of the low nibble pulses the reset line), and an output
//! port written with bit 0 clear (command 0xD1): each would reset the processor, which leaves
//! VMX with Vigil's memory intact. Each ends the run instead, saying which.
//!
//! Sources: IBM PC AT Technical Reference (8042 commands), Intel 290562 (PIIX4 port 92h).

use super::State;
use crate::cpu::Cpu;
use crate::exit::Stop;
use crate::vcpu::{Host, Vcpu};

pub const PORT_92: u16 = 0x92;
pub const KBC_DATA: u16 = 0x60;
pub const KBC_COMMAND: u16 = 0x64;
const FAST_RESET: u32 = 1 << 0;
const A20: u32 = 1 << 1;
/// Output port bits: 0 = reset line (low resets), 1 = A20.
const OUT_RESET: u32 = 1 << 0;
const OUT_A20: u32 = 1 << 1;
const CMD_READ_OUTPUT: u8 = 0xD0;
const CMD_WRITE_OUTPUT: u8 = 0xD1;
const CMD_A20_OFF: u8 = 0xDD;
const CMD_A20_ON: u8 = 0xDF;

/// What the controller is in the middle of, as far as Vigil cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kbc {
    /// Command 0xD1 was written: the next data byte is the output port.
    pub output_write_pending: bool,
    /// Command 0xD0 was written: the next data byte read is the output port.
    pub output_read_pending: bool,
}

/// Opens or closes the guest's gate.
pub(super) fn set_a20<V: Vcpu>(cpu: &mut Cpu<V>, st: &mut State, open: bool) {
    if st.a20_open == open {
        return;
    }
    st.a20_open = open;
    if !cpu.vcpu.set_a20(open) && st.a20_emulated {
        st.a20_emulated = false;
        log::warn!(
            "this backend cannot emulate a closed A20 gate: the guest's addresses stay unmasked"
        );
    }
    log::debug!("guest A20 gate {}", if open { "open" } else { "closed" });
}

pub(super) fn port92<V: Vcpu>(
    cpu: &mut Cpu<V>,
    st: &mut State,
    size: u8,
    write: Option<u32>,
) -> Result<Option<u32>, Stop> {
    let _ = size;
    match write {
        None => {
            let real = cpu.vcpu.host().port_in(PORT_92, 1);
            Ok(Some((real & !A20) | if st.a20_open { A20 } else { 0 }))
        }
        Some(v) => {
            if v & FAST_RESET != 0 {
                log::info!(
                    "guest requested a reset through port 0x92 ({:#x}: fast reset, bit 0)",
                    v & 0xFF
                );
                return Err(Stop::Reset);
            }
            set_a20(cpu, st, v & A20 != 0);
            cpu.vcpu
                .host()
                .port_out(PORT_92, 1, (v & 0xFF & !FAST_RESET) | A20);
            Ok(None)
        }
    }
}

pub(super) fn kbc_command<V: Vcpu>(
    cpu: &mut Cpu<V>,
    st: &mut State,
    size: u8,
    write: Option<u32>,
) -> Result<Option<u32>, Stop> {
    let host = cpu.vcpu.host();
    let Some(v) = write else {
        return Ok(Some(host.port_in(KBC_COMMAND, size)));
    };
    let cmd = v as u8;
    // A new command abandons one that waited for its data byte.
    st.kbc.output_write_pending = false;
    match cmd {
        0xF0..=0xFF if cmd & 1 == 0 => {
            log::info!(
                "guest requested a reset through the keyboard controller (command {cmd:#x}: \
                 pulses the reset line)"
            );
            return Err(Stop::Reset);
        }
        CMD_A20_OFF | CMD_A20_ON => {
            // Kept from the controller: the real gate stays open.
            set_a20(cpu, st, cmd == CMD_A20_ON);
            return Ok(None);
        }
        CMD_WRITE_OUTPUT => st.kbc.output_write_pending = true,
        CMD_READ_OUTPUT => st.kbc.output_read_pending = true,
        _ => {}
    }
    cpu.vcpu.host().port_out(KBC_COMMAND, 1, u32::from(cmd));
    Ok(None)
}

pub(super) fn kbc_data<V: Vcpu>(
    cpu: &mut Cpu<V>,
    st: &mut State,
    size: u8,
    write: Option<u32>,
) -> Result<Option<u32>, Stop> {
    match write {
        None => {
            let v = cpu.vcpu.host().port_in(KBC_DATA, size);
            if core::mem::take(&mut st.kbc.output_read_pending) {
                return Ok(Some((v & !OUT_A20) | if st.a20_open { OUT_A20 } else { 0 }));
            }
            Ok(Some(v))
        }
        Some(v) if core::mem::take(&mut st.kbc.output_write_pending) => {
            if v & OUT_RESET == 0 {
                log::info!(
                    "guest requested a reset through the keyboard controller's output port \
                     ({:#x}: reset line low)",
                    v & 0xFF
                );
                return Err(Stop::Reset);
            }
            set_a20(cpu, st, v & OUT_A20 != 0);
            cpu.vcpu
                .host()
                .port_out(KBC_DATA, 1, (v & 0xFF) | OUT_RESET | OUT_A20);
            Ok(None)
        }
        Some(v) => {
            cpu.vcpu.host().port_out(KBC_DATA, size, v);
            Ok(None)
        }
    }
}
