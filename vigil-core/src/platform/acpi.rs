//! ACPI's fixed hardware as far as it can end the machine or raise an SMI: PM1a/PM1b control
//! (sleep states, power-off), the reset register, and the SMI command port (ACPI 6.5 4.8.3,
//! 4.8.4.6, 5.2.9 FADT).
//!
//! - A write with SLP_EN to PM1a or PM1b control would put the machine to sleep or power it
//!   off; from sleep the firmware resumes the guest's waking vector outside VMX. Vigil ends the
//!   run instead, naming the sleep type. PM1a follows the PIIX4's PM block wherever the guest
//!   moves it (PMBA), so a moved block cannot hide the request.
//! - A write of RESET_VALUE to the reset register resets the machine: the run ends.
//! - The SMI command port is Vigil's: a write never reaches the chipset, so it never raises an
//!   SMI. The two commands a guest needs from it, ACPI enable and disable, Vigil carries out
//!   itself — set or clear SCI_EN in PM1 control, which is what the firmware's SMI handler
//!   would do — and reads return the last byte written, as the APMC register does.

use super::pci::{Bdf, Chip, ConfigSpace, Function, PMBA, PM_BLOCK_SIZE};
use super::State;
use crate::cpu::Cpu;
use crate::exit::Stop;
use crate::vcpu::{Host, Vcpu};

/// The APM control port of Intel chipsets, the SMI command port when the FADT names none.
pub const APM_CONTROL: u16 = 0xB2;
/// PM1 control: SCI_EN (bit 0), SLP_TYP (bits 12:10), SLP_EN (bit 13).
const SCI_EN: u32 = 1 << 0;
const SLP_EN: u32 = 1 << 13;

/// Where the FADT's reset register is (ACPI 6.5 5.2.3.2, Generic Address Structure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetRegister {
    Io {
        port: u16,
        value: u8,
    },
    Pci {
        bdf: Bdf,
        reg: u8,
        value: u8,
    },
    /// In memory: Vigil cannot see writes there (it is not guest RAM, and stays mapped).
    Memory {
        address: u64,
        value: u8,
    },
}

/// What the firmware's ACPI tables say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Acpi {
    pub pm1a_control: Option<u16>,
    pub pm1b_control: Option<u16>,
    pub smi_command: Option<u16>,
    pub acpi_enable: u8,
    pub acpi_disable: u8,
    pub reset: Option<ResetRegister>,
}

/// The PIIX4 PM block (PMBA) and PM1a control's offset in it, if PM1a is there.
pub(super) fn pm_block<H: Host>(
    host: &mut H,
    functions: &[Function],
    acpi: &Acpi,
) -> Option<(u16, u16)> {
    let pm = functions.iter().find(|f| f.chip == Chip::Piix4Pm)?;
    let base = (host.config_read(pm.bdf, PMBA, 4) as u16) & !(PM_BLOCK_SIZE - 1);
    let port = acpi.pm1a_control?;
    (base != 0 && port >= base && port < base + PM_BLOCK_SIZE).then(|| (base, port - base))
}

pub(super) fn smi_command<V: Vcpu>(
    cpu: &mut Cpu<V>,
    st: &mut State,
    size: u8,
    write: Option<u32>,
) -> Result<Option<u32>, Stop> {
    let Some(v) = write else {
        // The APMC byte, repeated over the access as a wider read of one register would not
        // be: the other bytes are the next ports', which no one decodes with it.
        let _ = size;
        return Ok(Some(u32::from(st.apmc) | 0xFFFF_FF00));
    };
    let cmd = v as u8;
    st.apmc = cmd;
    let acpi = cpu.vm.platform.acpi;
    let enable = acpi.acpi_enable != 0 && cmd == acpi.acpi_enable;
    let disable = acpi.acpi_disable != 0 && cmd == acpi.acpi_disable;
    if enable || disable {
        let ports = [
            match st.pm_block {
                Some((base, offset)) => Some(base + offset),
                None => acpi.pm1a_control,
            },
            acpi.pm1b_control,
        ];
        let host = cpu.vcpu.host();
        for port in ports.into_iter().flatten() {
            let old = host.port_in(port, 2);
            let new = if enable { old | SCI_EN } else { old & !SCI_EN };
            host.port_out(port, 2, new & !SLP_EN);
        }
        log::debug!(
            "SMI command {cmd:#x}: ACPI {} by Vigil (no SMI)",
            if enable { "enabled" } else { "disabled" }
        );
    } else {
        log::debug!("SMI command {cmd:#x}: kept (no SMI)");
    }
    Ok(None)
}

/// PM1 control at `base` (two ports): SLP_EN ends the run.
pub(super) fn pm1_control<V: Vcpu>(
    cpu: &mut Cpu<V>,
    b: bool,
    port: u16,
    size: u8,
    write: Option<u32>,
) -> Result<Option<u32>, Stop> {
    let table = &cpu.vm.owners.ports;
    let base = table
        .find(crate::owners::PortHandler::Platform(
            super::Device::Pm1Control(b),
        ))
        .and_then(|r| table.current(r))
        .map_or(port, |r| *r.start());
    let host = cpu.vcpu.host();
    let Some(v) = write else {
        return Ok(Some(host.port_in(port, size)));
    };
    // The register's 16 bits as this access writes them, wherever it starts.
    let shift = 8 * u32::from(port.wrapping_sub(base));
    let reg = (v << shift) & 0xFFFF;
    if shift < 16 && reg & SLP_EN != 0 {
        log::info!(
            "guest requested ACPI sleep (PM1{}_CNT at port {base:#x} <- {reg:#x}: SLP_TYP {}): \
             powering off",
            if b { 'b' } else { 'a' },
            (reg >> 10) & 7
        );
        return Err(Stop::PowerOff);
    }
    host.port_out(port, size, v);
    Ok(None)
}

pub(super) fn reset_register<V: Vcpu>(
    cpu: &mut Cpu<V>,
    port: u16,
    size: u8,
    write: Option<u32>,
) -> Result<Option<u32>, Stop> {
    let host = cpu.vcpu.host();
    let Some(v) = write else {
        return Ok(Some(host.port_in(port, size)));
    };
    if let Some(ResetRegister::Io { value, .. }) = cpu.vm.platform.acpi.reset {
        if v as u8 == value {
            log::info!(
                "guest requested a reset through the ACPI reset register (port {port:#x} <- \
                 {value:#x})"
            );
            return Err(Stop::Reset);
        }
    }
    cpu.vcpu.host().port_out(port, size, v);
    Ok(None)
}
