//! The IDE bus-master block's ports (see `dma.rs` for the registers and the design). The PRD
//! pointers are shadowed: the guest's value is kept by Vigil and read back from there, while the
//! engine's own pointer only ever holds the address of a table Vigil copied and checked. A start
//! (command bit 0 from 0 to 1) copies and checks the guest's table; a table that is not guest
//! RAM, or that names a region that is not, does not start: the engine stays stopped and Vigil
//! logs why.

use super::dma::DmaProtection;
use super::dma::{copy_prd_table, PrdRefusal};
use super::pci::{Chip, ConfigSpace, Function, BMIBA, USBBA};
use super::{Device, State};
use crate::cpu::Cpu;
use crate::exit::Stop;
use crate::owners::PortHandler;
use crate::vcpu::{Host, Vcpu};

const START: u32 = 1 << 0;
/// UHCI USBCMD bit 0: run/stop (UHCI 1.1, 2.1.1).
const USB_RUN: u32 = 1 << 0;

/// Where the UHCI host controller's registers are, if its DMA may not run.
pub(super) fn usb_base<H: Host>(
    host: &mut H,
    functions: &[Function],
    dma: DmaProtection,
) -> Option<u16> {
    let usb = functions
        .iter()
        .find(|f| f.chip == Chip::PiixUhci && !dma.may_master(f))?;
    let bar = host.config_read(usb.bdf, USBBA, 4);
    (bar & 1 == 1 && bar & 0xFFE0 != 0).then_some((bar & 0xFFE0) as u16)
}

/// Stops a UHCI host controller the firmware left running, when its DMA may not run.
pub(super) fn stop_usb<H: Host>(host: &mut H, functions: &[Function], dma: DmaProtection) {
    if let Some(base) = usb_base(host, functions, dma) {
        let cmd = host.port_in(base, 2);
        if cmd & USB_RUN != 0 {
            host.port_out(base, 2, cmd & !USB_RUN);
            log::info!("USB host controller at {base:#x} stopped: its DMA is not mediated");
        }
    }
}

/// USBCMD of a UHCI host controller whose DMA may not run: Bochs' model walks its schedule
/// (frame list and transfer descriptors, reading and writing them in memory) whenever the run
/// bit is set, bus-master enable or not — so the run bit never reaches it. Everything else of
/// the command register does.
pub(super) fn usb_command<V: Vcpu>(
    cpu: &mut Cpu<V>,
    port: u16,
    size: u8,
    write: Option<u32>,
) -> Result<Option<u32>, Stop> {
    let host = cpu.vcpu.host();
    let Some(v) = write else {
        return Ok(Some(host.port_in(port, size)));
    };
    let table = &cpu.vm.owners.ports;
    let base = table
        .find(PortHandler::Platform(Device::UsbCommand))
        .and_then(|r| table.current(r))
        .map_or(port, |r| *r.start());
    let mut v = v;
    if port == base && v & USB_RUN != 0 {
        log::info!(
            "USB host controller at {base:#x}: the run bit is refused (its DMA is not mediated)"
        );
        v &= !USB_RUN;
    }
    cpu.vcpu.host().port_out(port, size, v);
    Ok(None)
}

/// Where the IDE bus-master block is now (BAR4 of the PIIX IDE function, I/O space).
pub(super) fn base<H: Host>(host: &mut H, functions: &[Function]) -> Option<u16> {
    let ide = functions.iter().find(|f| f.chip == Chip::PiixIde)?;
    let bar = host.config_read(ide.bdf, BMIBA, 4);
    (bar & 1 == 1 && bar & 0xFFF0 != 0).then_some((bar & 0xFFF0) as u16)
}

pub(super) fn access<V: Vcpu>(
    cpu: &mut Cpu<V>,
    st: &mut State,
    port: u16,
    size: u8,
    write: Option<u32>,
) -> Result<Option<u32>, Stop> {
    let table = &cpu.vm.owners.ports;
    let Some(base) = table
        .find(PortHandler::Platform(Device::BusMaster))
        .and_then(|r| table.current(r))
        .map(|r| *r.start())
    else {
        return Ok(write.is_none().then_some(0xFFFF_FFFF));
    };
    let mut value = 0u32;
    for i in 0..size {
        let p = port.wrapping_add(u16::from(i));
        let offset = p.wrapping_sub(base) & 0xF;
        let channel = usize::from(offset >> 3);
        let reg = offset & 7;
        let byte = write.map(|v| (v >> (8 * i)) & 0xFF);
        match (reg, byte) {
            (4..=7, None) => {
                value |= ((st.bus_master.prd_pointer[channel] >> (8 * (reg - 4))) & 0xFF) << (8 * i)
            }
            (4..=7, Some(b)) => {
                let shift = 8 * u32::from(reg - 4);
                let p = &mut st.bus_master.prd_pointer[channel];
                // The low two bits are not implemented (the table is dword-aligned).
                *p = ((*p & !(0xFF << shift)) | (b << shift)) & !3;
            }
            (0, Some(b)) if b & START != 0 => start(cpu, st, base, channel, b),
            (_, None) => value |= (cpu.vcpu.host().port_in(p, 1) & 0xFF) << (8 * i),
            (_, Some(b)) => cpu.vcpu.host().port_out(p, 1, b),
        }
    }
    Ok(write.is_none().then_some(value))
}

/// A command write with the start bit: start on a checked copy, or not at all.
fn start<V: Vcpu>(cpu: &mut Cpu<V>, st: &mut State, base: u16, channel: usize, command: u32) {
    let channel_base = base + 8 * channel as u16;
    let host = cpu.vcpu.host();
    if host.port_in(channel_base, 1) & START != 0 {
        // Already running: the engine ignores a second start, and so does its table.
        host.port_out(channel_base, 1, command);
        return;
    }
    let table = u64::from(st.bus_master.prd_pointer[channel]);
    let memory = &cpu.vm.platform.memory;
    let result = match st.bus_master.pages[channel].as_mut() {
        None => Err(PrdRefusal::NoPage),
        Some(page) => {
            let vcpu = &cpu.vcpu;
            copy_prd_table(
                table,
                &mut |gpa, buf| vcpu.read_phys(gpa, buf),
                memory,
                page.bytes,
            )
            .map(|n| (n, page.phys))
        }
    };
    let host = cpu.vcpu.host();
    match result {
        Ok((entries, copy)) => {
            st.bus_master.started += 1;
            host.port_out(channel_base + 4, 4, copy);
            host.port_out(channel_base, 1, command);
            log::debug!(
                "IDE DMA channel {channel}: {entries} PRD entries from {table:#x} checked, \
                 started on Vigil's copy at {copy:#x}"
            );
        }
        Err(why) => {
            st.bus_master.refused += 1;
            // The direction bit still takes effect; the engine does not start.
            host.port_out(channel_base, 1, command & !START);
            log::info!(
                "IDE DMA channel {channel} refused (PRD table at {table:#x}): {}",
                match why {
                    PrdRefusal::TableNotRam { index, at } =>
                        alloc::format!("entry {index} at {at:#x} is not guest RAM"),
                    PrdRefusal::RegionNotRam { index, start, end } => alloc::format!(
                        "entry {index} names [{start:#x}-{end:#x}), which is not guest RAM"
                    ),
                    PrdRefusal::CrossesBoundary { index, start, end } => alloc::format!(
                        "entry {index} [{start:#x}-{end:#x}) crosses a 64 KiB boundary"
                    ),
                    PrdRefusal::TooLong =>
                        alloc::format!("more than {} entries", super::dma::MAX_PRD_ENTRIES),
                    PrdRefusal::NoPage => "Vigil has no page for the copy".into(),
                }
            );
        }
    }
}
