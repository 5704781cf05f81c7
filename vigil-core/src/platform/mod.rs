//! The platform Vigil owns beyond EPT: every mechanism of a PC by which the guest could reach
//! physical memory, leave VMX non-root or end the machine behind Vigil's back (docs/security.md
//! lists them with their tests).
//!
//! - PCI configuration (`config_port.rs`, policy in `pci.rs`): BARs, bridge windows, chipset
//!   decoders, SMRAM, DRAM decoding, the GART, BIOS write enable, bus mastering.
//! - DMA (`dma.rs`, `busmaster.rs`): only mediated engines may master the bus; the IDE bus
//!   master runs on PRD tables Vigil copied and checked.
//! - A20 (`legacy.rs`): the real gate never closes (Bochs would mask host-physical addresses,
//!   Vigil's included); the guest's gate is emulated in its nested page tables.
//! - SMM (`smm.rs`, `acpi.rs`): SMRAM locked before the guest runs; the SMI command port is
//!   Vigil's, which enables and disables ACPI itself and never raises the SMI.
//! - Resets and sleep (`legacy.rs`, `acpi.rs`, `config_port.rs`): 0xCF9, port 0x92, the keyboard
//!   controller, the ACPI reset register, PM1a/PM1b control wherever the guest moved them: each
//!   ends the run with the reason.
//!
//! The state all vCPUs share (the configuration address latch, the guest's A20 gate, the
//! keyboard controller's pending command, the IDE engines' shadows) sits behind one lock: the
//! hardware it stands for is one per machine.

pub mod acpi;
pub mod apic;
mod busmaster;
mod config_port;
pub mod dma;
mod legacy;
pub mod memory;
pub mod mtrr;
pub mod pci;
pub mod smm;

#[cfg(test)]
mod tests;

use crate::cpu::Cpu;
use crate::exit::Stop;
use crate::owners::{Owner, PortHandler, PortRule};
use crate::vcpu::{Host, Vcpu};
use alloc::vec::Vec;
use spin::Mutex;

pub use acpi::{Acpi, ResetRegister};
pub use dma::{DmaProtection, PrdPage};
pub use memory::GuestMemory;

/// The platform devices whose ports Vigil owns; an I/O exit on one of their ports comes here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// 0xCF8-0xCFB: the configuration address (dword) and the reset control register (0xCF9).
    PciAddress,
    /// 0xCFC-0xCFF: configuration data.
    PciData,
    /// Port 0x92, system control port A: fast reset (bit 0) and the A20 gate (bit 1).
    SystemControlA,
    /// The 8042 keyboard controller's data port (0x60): its output port's reset and A20 lines.
    KbcData,
    /// The 8042's command port (0x64): reset pulses, A20 commands.
    KbcCommand,
    /// The ACPI SMI command port (FADT SMI_CMD; APM control 0xB2 on Intel chipsets).
    SmiCommand,
    /// ACPI PM1a (`false`) or PM1b (`true`) control, wherever its decoder is.
    Pm1Control(bool),
    /// The ACPI reset register in I/O space (FADT RESET_REG).
    ResetRegister,
    /// The IDE bus-master block, wherever BAR4 put it.
    BusMaster,
    /// A UHCI host controller's command register (USBCMD), wherever BAR4 put it, while its
    /// DMA may not run.
    UsbCommand,
}

/// What Vigil learned about the machine before the guest ran.
pub struct Facts {
    pub memory: GuestMemory,
    pub acpi: Acpi,
    pub dma: DmaProtection,
    /// One page of Vigil's memory per IDE channel for PRD copies.
    pub prd_pages: [Option<PrdPage>; 2],
}

/// Machine-wide state the guest's platform accesses change.
#[derive(Debug)]
pub struct State {
    /// The functions the boot scan found.
    pub functions: Vec<pci::Function>,
    /// The guest's CONFIG_ADDRESS (0xCF8).
    pub config_address: u32,
    /// The guest's A20 gate.
    pub a20_open: bool,
    /// Whether the backend emulates a closed gate (else a closed gate is open for the guest).
    pub a20_emulated: bool,
    pub kbc: legacy::Kbc,
    /// The last byte the guest wrote to the SMI command port (APMC).
    pub apmc: u8,
    /// The PM block: its base and where PM1a_CNT sits in it (PIIX4 PMBA), if the FADT's
    /// PM1a_CNT is in it.
    pub pm_block: Option<(u16, u16)>,
    pub bus_master: dma::BusMaster,
    /// The guest's MTRRs.
    pub mtrrs: mtrr::Mtrrs,
}

pub struct Platform {
    pub memory: GuestMemory,
    pub acpi: Acpi,
    pub dma: DmaProtection,
    pub state: Mutex<State>,
}

impl core::fmt::Debug for Platform {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Platform")
            .field("memory", &self.memory)
            .field("acpi", &self.acpi)
            .field("dma", &self.dma)
            .finish()
    }
}

impl Platform {
    /// Takes the platform before the guest runs (on `host`, the boot CPU): scans PCI, locks
    /// SMRAM, turns off bus mastering wherever DMA is not mediated, and finds the decoders Vigil
    /// follows.
    pub fn take<H: Host>(host: &mut H, facts: Facts) -> Platform {
        let mut functions = pci::scan(host);
        for f in &functions {
            log::debug!(
                "pci {}: {:04x}:{:04x} class {:06x} {:?}, BARs {:x?}",
                f.bdf,
                f.vendor,
                f.device,
                f.class,
                f.chip,
                f.bars
            );
        }
        smm::lock_smram(host, &functions);
        for f in functions.iter_mut() {
            if !facts.dma.may_master(f) {
                config_port::stop_bus_master(host, f);
            }
        }
        busmaster::stop_usb(host, &functions, facts.dma);
        let pm_block = acpi::pm_block(host, &functions, &facts.acpi);
        let mtrrs = mtrr::Mtrrs::from_host(&mut |msr| host.rdmsr(msr));
        Platform {
            memory: facts.memory,
            acpi: facts.acpi,
            dma: facts.dma,
            state: Mutex::new(State {
                functions,
                config_address: 0,
                a20_open: true,
                a20_emulated: true,
                kbc: legacy::Kbc::default(),
                apmc: 0,
                pm_block,
                bus_master: dma::BusMaster {
                    pages: facts.prd_pages,
                    ..dma::BusMaster::default()
                },
                mtrrs,
            }),
        }
    }

    /// The ports Vigil owns on this platform, for the ownership table: fixed ones first, then
    /// the decoders it follows where they are now.
    pub fn port_rules<H: Host>(&self, host: &mut H) -> Vec<PortRule> {
        let st = self.state.lock();
        let rule = |first: u16, last: u16, device: Device, why: &'static str| PortRule {
            ports: first..=last,
            owner: Owner::Vigil,
            handler: PortHandler::Platform(device),
            why,
        };
        let mut rules = alloc::vec![
            rule(
                pci::CONFIG_ADDRESS,
                pci::CONFIG_ADDRESS + 3,
                Device::PciAddress,
                "PCI configuration address and the reset control register (0xCF9): every \
                 configuration access is judged, every reset seen"
            ),
            rule(
                pci::CONFIG_DATA,
                pci::CONFIG_DATA + 3,
                Device::PciData,
                "PCI configuration data: BARs, decoders, SMRAM and bus mastering are Vigil's to \
                 allow"
            ),
            rule(
                legacy::PORT_92,
                legacy::PORT_92,
                Device::SystemControlA,
                "system control port A: fast reset ends the run; the A20 gate is emulated"
            ),
            rule(
                legacy::KBC_DATA,
                legacy::KBC_DATA,
                Device::KbcData,
                "keyboard controller data: its output port's reset and A20 lines"
            ),
            rule(
                legacy::KBC_COMMAND,
                legacy::KBC_COMMAND,
                Device::KbcCommand,
                "keyboard controller commands: reset pulses end the run; A20 is emulated"
            ),
        ];
        let smi = self.acpi.smi_command.unwrap_or(acpi::APM_CONTROL);
        rules.push(rule(
            smi,
            smi,
            Device::SmiCommand,
            "the SMI command port: Vigil enables ACPI itself and never raises the SMI",
        ));
        if let Some(ResetRegister::Io { port, .. }) = self.acpi.reset {
            if !rules.iter().any(|r| r.ports.contains(&port)) {
                rules.push(rule(
                    port,
                    port,
                    Device::ResetRegister,
                    "the ACPI reset register: a reset ends the run",
                ));
            }
        }
        for (b, port) in [
            (false, self.pm1_control(&st, false)),
            (true, self.pm1_control(&st, true)),
        ] {
            if let Some(p) = port {
                rules.push(rule(
                    p,
                    p.saturating_add(1),
                    Device::Pm1Control(b),
                    "ACPI PM1 control: the guest's sleep or power-off request ends the run",
                ));
            }
        }
        if let Some(base) = busmaster::base(host, &st.functions) {
            rules.push(rule(
                base,
                base + pci::BM_BLOCK_SIZE - 1,
                Device::BusMaster,
                "the IDE bus master: every transfer runs on a PRD table Vigil copied and checked",
            ));
        }
        if let Some(base) = busmaster::usb_base(host, &st.functions, self.dma) {
            rules.push(rule(
                base,
                base + 1,
                Device::UsbCommand,
                "a UHCI host controller's run bit: its DMA is not mediated, and Bochs' model \
                 ignores bus-master enable",
            ));
        }
        rules
    }

    /// PM1a (or PM1b) control's port now: in the PM block wherever the guest moved it, else
    /// where the FADT says.
    fn pm1_control(&self, st: &State, b: bool) -> Option<u16> {
        if b {
            return self.acpi.pm1b_control;
        }
        match st.pm_block {
            Some((base, offset)) => Some(base + offset),
            None => self.acpi.pm1a_control,
        }
    }
}

/// One port access on a platform device's port (`port` is the access's first port, all of
/// whose bytes belong to `device`): `Ok(Some(value))` for a read, `Ok(None)` for a write, `Err`
/// when the access ends the run.
pub fn port_access<V: Vcpu>(
    cpu: &mut Cpu<V>,
    device: Device,
    port: u16,
    size: u8,
    write: Option<u32>,
) -> Result<Option<u32>, Stop> {
    let vm = cpu.vm;
    let platform = &vm.platform;
    let mut st = platform.state.lock();
    let st = &mut *st;
    match device {
        Device::PciAddress => config_port::address(cpu, st, port, size, write),
        Device::PciData => config_port::data(cpu, st, port, size, write),
        Device::SystemControlA => legacy::port92(cpu, st, size, write),
        Device::KbcData => legacy::kbc_data(cpu, st, size, write),
        Device::KbcCommand => legacy::kbc_command(cpu, st, size, write),
        Device::SmiCommand => acpi::smi_command(cpu, st, size, write),
        Device::Pm1Control(b) => acpi::pm1_control(cpu, b, port, size, write),
        Device::ResetRegister => acpi::reset_register(cpu, port, size, write),
        Device::BusMaster => busmaster::access(cpu, st, port, size, write),
        Device::UsbCommand => busmaster::usb_command(cpu, port, size, write),
    }
}

/// Moves the trap of a followed decoder: the ownership table's rule for `device` now covers
/// `to` (or nothing), and the backend's bitmaps follow.
fn move_trap<V: Vcpu>(cpu: &mut Cpu<V>, device: Device, to: Option<(u16, u16)>) {
    let table = &cpu.vm.owners.ports;
    let Some(rule) = table.find(PortHandler::Platform(device)) else {
        return;
    };
    let to = to.map(|(a, b)| a..=b);
    for changed in table.relocate(rule, to).into_iter().flatten() {
        cpu.vcpu.refresh_io_traps(table, changed);
    }
}
