//! The guest's configuration accesses (0xCF8-0xCFF), carried out by Vigil under the policy of
//! `pci.rs`, and the reset control register that shares CONFIG_ADDRESS's dword (0xCF9).
//!
//! Vigil keeps the guest's CONFIG_ADDRESS itself and performs every data access on the guest's
//! behalf, selecting the register itself: the real CONFIG_ADDRESS is only ever written by Vigil,
//! under the platform lock, so no other access can slip between its address and its data.

use super::pci::{
    self, judge_write, Bdf, ConfigSpace, Followed, Function, Judge, Refusal, COMMAND_BUS_MASTER,
    CONFIG_ADDRESS, CONFIG_DATA, RESET_CONTROL,
};
use super::{acpi::ResetRegister, Device, State};
use crate::cpu::{Cpu, Vm};
use crate::exit::Stop;
use crate::owners::{Owner, PortHandler};
use crate::vcpu::{Host, Vcpu};

/// RST_CPU: a write with it set resets (bit 1 chooses a hard reset).
const RC_RESET: u32 = 1 << 2;
const RC_HARD: u32 = 1 << 1;

/// Turns bus mastering off on a function whose DMA is neither mediated nor confined.
pub(super) fn stop_bus_master<H: Host>(host: &mut H, f: &Function) {
    let command = host.config_read(f.bdf, 0x04, 2);
    if command & COMMAND_BUS_MASTER == 0 {
        return;
    }
    host.config_write(f.bdf, 0x04, 2, command & !COMMAND_BUS_MASTER);
    let now = host.config_read(f.bdf, 0x04, 2);
    if now & COMMAND_BUS_MASTER == 0 {
        log::info!("pci {}: bus mastering off (its DMA is not mediated)", f.bdf);
    } else {
        log::debug!("pci {}: bus-master enable is hardwired", f.bdf);
    }
}

pub(super) fn address<V: Vcpu>(
    cpu: &mut Cpu<V>,
    st: &mut State,
    port: u16,
    size: u8,
    write: Option<u32>,
) -> Result<Option<u32>, Stop> {
    if port == CONFIG_ADDRESS && size == 4 {
        return Ok(match write {
            None => Some(st.config_address),
            Some(v) => {
                st.config_address = v;
                None
            }
        });
    }
    // Anything else is byte-wide I/O to the ports of this dword: the reset control register at
    // 0xCF9 answers it (PIIX3/PIIX4 RC, ICH RST_CNT).
    let host = cpu.vcpu.host();
    let mut value = 0u32;
    for i in 0..size {
        let p = port.wrapping_add(u16::from(i));
        match write {
            None => value |= (host.port_in(p, 1) & 0xFF) << (8 * i),
            Some(v) => {
                let b = (v >> (8 * i)) & 0xFF;
                if p == RESET_CONTROL && b & RC_RESET != 0 {
                    log::info!(
                        "guest requested a reset through port 0xcf9 ({b:#x}: {} reset)",
                        if b & RC_HARD != 0 { "hard" } else { "soft" }
                    );
                    return Err(Stop::Reset);
                }
                host.port_out(p, 1, b);
            }
        }
    }
    Ok(write.is_none().then_some(value))
}

/// What the policy asks of the rest of the machine.
struct Machine<'a> {
    vm: &'a Vm,
}

impl Judge for Machine<'_> {
    fn memory_is_vigils(&self, start: u64, end: u64) -> bool {
        self.vm.platform.memory.touches_vigil(start, end)
    }

    fn port_is_vigils(&self, first: u16, last: u16, except: Option<Followed>) -> Option<u16> {
        let table = &self.vm.owners.ports;
        let own = except.and_then(|e| table.find(PortHandler::Platform(followed_device(e))));
        (first..=last).find(|&p| {
            let n = table.rule_number(p);
            n != 0
                && Some(n as usize - 1) != own
                && table.rule(p).is_some_and(|r| r.owner == Owner::Vigil)
        })
    }

    fn may_master(&self, f: &Function) -> bool {
        self.vm.platform.dma.may_master(f)
    }
}

fn followed_device(f: Followed) -> Device {
    match f {
        Followed::BusMaster => Device::BusMaster,
        Followed::PmBlock => Device::Pm1Control(false),
        Followed::UsbHost => Device::UsbCommand,
    }
}

pub(super) fn data<V: Vcpu>(
    cpu: &mut Cpu<V>,
    st: &mut State,
    port: u16,
    size: u8,
    write: Option<u32>,
) -> Result<Option<u32>, Stop> {
    let offset = (port - CONFIG_DATA) as u8;
    let Some((bdf, dword)) = Bdf::from_address(st.config_address) else {
        // Configuration disabled: plain I/O to these ports, which the host bridge passes on.
        let host = cpu.vcpu.host();
        host.port_out(CONFIG_ADDRESS, 4, st.config_address);
        return Ok(match write {
            None => Some(host.port_in(port, size)),
            Some(v) => {
                host.port_out(port, size, v);
                None
            }
        });
    };
    let reg = dword + offset;
    let Some(v) = write else {
        return Ok(Some(cpu.vcpu.host().config_read(bdf, reg, size)));
    };
    if let Some(ResetRegister::Pci {
        bdf: rb,
        reg: rr,
        value,
    }) = cpu.vm.platform.acpi.reset
    {
        let bytes = reg..reg + size;
        if rb == bdf && bytes.contains(&rr) && (v >> (8 * (rr - reg))) as u8 == value {
            log::info!(
                "guest requested a reset through the ACPI reset register (pci {bdf} register \
                 {rr:#x} <- {value:#x})"
            );
            return Err(Stop::Reset);
        }
    }
    let Some(f) = st.functions.iter().find(|f| f.bdf == bdf) else {
        // No function was there at boot: nothing to configure.
        log::debug!("pci {bdf}: write to an absent function dropped");
        return Ok(None);
    };
    let host = cpu.vcpu.host();
    let old = host.config_read(bdf, dword, 4);
    let other = match f.bar(dword) {
        Some(b) if b.kind == pci::BarKind::Mem64 => {
            let pair = if b.reg == dword { dword + 4 } else { b.reg };
            host.config_read(bdf, pair, 4)
        }
        _ => 0,
    };
    let verdict = judge_write(f, reg, size, v, old, other, &Machine { vm: cpu.vm });
    if let Some(why) = verdict.refused {
        log::info!("pci {bdf} register {reg:#x} <- {v:#x}: {}", describe(why));
    }
    cpu.vcpu.host().config_write(bdf, reg, size, verdict.value);
    if let Some((which, from, to)) = verdict.moved {
        let (device, span, offset) = match which {
            Followed::BusMaster => (Device::BusMaster, pci::BM_BLOCK_SIZE, 0),
            Followed::UsbHost => (Device::UsbCommand, 2, 0),
            Followed::PmBlock => match st.pm_block {
                // PM1a_CNT moves with its block; a block without it moves no trap.
                Some((_, off)) => (Device::Pm1Control(false), 2, off),
                None => return Ok(None),
            },
        };
        // Debug: OSes move decoders routinely (BAR sizing writes all ones), and a line on the
        // console costs the guest emulated time.
        log::debug!(
            "pci {bdf}: the guest moved {} from {} to {}: its trap follows",
            match which {
                Followed::BusMaster => "the IDE bus-master block",
                Followed::PmBlock => "the power-management block",
                Followed::UsbHost => "the USB host controller's registers",
            },
            from.map_or("nowhere".into(), |b| alloc::format!("{b:#x}")),
            to.map_or("nowhere".into(), |b| alloc::format!("{b:#x}"))
        );
        if which == Followed::PmBlock {
            if let (Some(b), Some((_, off))) = (to, st.pm_block) {
                st.pm_block = Some((b, off));
            }
        }
        super::move_trap(cpu, device, to.map(|b| (b + offset, b + offset + span - 1)));
    }
    Ok(None)
}

fn describe(r: Refusal) -> alloc::string::String {
    match r {
        Refusal::BusMaster => "bus mastering refused (its DMA is not mediated)".into(),
        Refusal::MemoryOverVigil { start, end } => {
            alloc::format!("refused: it would decode [{start:#x}-{end:#x}), Vigil's memory")
        }
        Refusal::PortOverVigil { port } => {
            alloc::format!("refused: it would decode port {port:#x}, which is Vigil's")
        }
        Refusal::Smram => "refused: SMRAM is locked and stays as Vigil set it".into(),
        Refusal::Locked => {
            "refused: DRAM decoding and the GART stay as the firmware set them".into()
        }
        Refusal::BiosWrite => "refused: BIOS write enable".into(),
    }
}
