//! The platform through the exit layer, against the fake vCPU and its fake PC: every decision
//! a guest's port or MSR access meets.

use super::pci::Bdf;
use crate::exit::{Action, Exit, IoAccess, Stop};
use crate::platform::ResetRegister;
use crate::testing::{
    cpu, cpu_on, exit, facts, FakeVcpu, FAKE_BM_BASE, FAKE_NIC_MEM, FAKE_PM_BASE, FAKE_USB_BASE,
    PM1A, PRD_PAGES,
};
use crate::vcpu::Seg;
use x86_arch::event::Event;

fn io(port: u16, size: u8, input: bool) -> Exit {
    Exit::Io(IoAccess {
        port,
        size,
        input,
        string: false,
        rep: false,
        addr_size: 8,
        segment: Seg::Ds,
    })
}

type C = crate::cpu::Cpu<FakeVcpu>;

fn out(c: &mut C, port: u16, size: u8, v: u32) -> Action {
    c.vcpu.gprs[0] = u64::from(v);
    exit(c, io(port, size, false))
}

fn inp(c: &mut C, port: u16, size: u8) -> u32 {
    assert_eq!(exit(c, io(port, size, true)), Action::Advance);
    c.vcpu.gprs[0] as u32 & crate::exit::io::size_mask(size)
}

fn config_write(c: &mut C, bdf: Bdf, reg: u8, size: u8, v: u32) {
    out(c, 0xCF8, 4, bdf.address(reg));
    assert_eq!(out(c, 0xCFC + u16::from(reg & 3), size, v), Action::Advance);
}

fn config_read(c: &mut C, bdf: Bdf, reg: u8, size: u8) -> u32 {
    out(c, 0xCF8, 4, bdf.address(reg));
    inp(c, 0xCFC + u16::from(reg & 3), size)
}

fn wrmsr(c: &mut C, msr: u32, v: u64) -> Action {
    c.vcpu.gprs[1] = u64::from(msr);
    c.vcpu.gprs[0] = v & 0xFFFF_FFFF;
    c.vcpu.gprs[2] = v >> 32;
    exit(c, Exit::Wrmsr)
}

fn rdmsr(c: &mut C, msr: u32) -> Result<u64, Action> {
    c.vcpu.gprs[1] = u64::from(msr);
    match exit(c, Exit::Rdmsr) {
        Action::Advance => Ok((c.vcpu.gprs[2] << 32) | (c.vcpu.gprs[0] & 0xFFFF_FFFF)),
        a => Err(a),
    }
}

const HOST: Bdf = Bdf::new(0, 0, 0);
const IDE: Bdf = Bdf::new(0, 1, 1);
const PM: Bdf = Bdf::new(0, 1, 3);
const NIC: Bdf = Bdf::new(0, 2, 0);
const USB: Bdf = Bdf::new(0, 1, 2);
const GP: Action = Action::Inject(Event::GP0);

fn device(c: &C, bdf: Bdf) -> &crate::testing::FakeFunction {
    &c.vcpu.host.pci.functions[&(bdf.bus, bdf.dev, bdf.func)]
}

#[test]
fn before_the_guest_runs_smram_is_locked_and_unmediated_dma_is_off() {
    let c = cpu("");
    assert_eq!(
        device(&c, HOST).config[0x72],
        0x1A,
        "D_LCK | G_SMRAME | base"
    );
    assert_eq!(
        device(&c, NIC).config[4] & 4,
        0,
        "the NIC no longer masters the bus"
    );
    assert_eq!(device(&c, IDE).config[4], 0x05, "the IDE's DMA is mediated");
}

#[test]
fn configuration_reads_pass_and_the_address_reads_back() {
    let mut c = cpu("");
    assert_eq!(config_read(&mut c, IDE, 0, 4), 0x7010_8086);
    assert_eq!(
        config_read(&mut c, PM, 0x40, 2),
        u32::from(FAKE_PM_BASE) | 1
    );
    assert_eq!(inp(&mut c, 0xCF8, 4), PM.address(0x40));
}

#[test]
fn smram_cannot_be_opened_at_any_width() {
    let mut c = cpu("");
    config_write(&mut c, HOST, 0x72, 1, 0x4A);
    config_write(&mut c, HOST, 0x72, 2, 0x004A);
    config_write(&mut c, HOST, 0x70, 4, 0x004A_0000);
    // Clearing G_SMRAME would send the SMM range to VGA memory: refused too.
    config_write(&mut c, HOST, 0x72, 1, 0x12);
    assert_eq!(config_read(&mut c, HOST, 0x72, 1), 0x1A);
}

#[test]
fn no_bar_decodes_over_vigils_memory_or_ports() {
    let mut c = cpu("");
    config_write(&mut c, NIC, 0x10, 4, 0x0400_0000);
    assert_eq!(
        device(&c, NIC).get32(0x10),
        FAKE_NIC_MEM,
        "over Vigil's image: refused"
    );
    config_write(&mut c, NIC, 0x10, 4, 0x0EE0_0000);
    assert_eq!(
        device(&c, NIC).get32(0x10),
        FAKE_NIC_MEM,
        "over its pool: refused"
    );
    config_write(&mut c, NIC, 0x10, 4, 0xFEA0_0000);
    assert_eq!(device(&c, NIC).get32(0x10), 0xFEA0_0000, "elsewhere: moved");
    config_write(&mut c, NIC, 0x14, 4, 0x2F1);
    assert_eq!(device(&c, NIC).get32(0x14), 0xC041, "over COM2: refused");
    config_write(&mut c, NIC, 0x14, 4, 0x8901);
    assert_eq!(
        device(&c, NIC).get32(0x14),
        0xC041,
        "over the shutdown port: refused"
    );
    config_write(&mut c, NIC, 0x14, 4, 0xCF1);
    assert_eq!(
        device(&c, NIC).get32(0x14),
        0xC041,
        "over the PCI ports: refused"
    );
}

#[test]
fn bus_mastering_only_where_dma_is_mediated() {
    let mut c = cpu("");
    config_write(&mut c, NIC, 0x04, 2, 0x0007);
    assert_eq!(config_read(&mut c, NIC, 0x04, 2), 0x0003);
    config_write(&mut c, PM, 0x04, 2, 0x0005);
    assert_eq!(config_read(&mut c, PM, 0x04, 2), 0x0001);
    config_write(&mut c, IDE, 0x04, 2, 0x0005);
    assert_eq!(config_read(&mut c, IDE, 0x04, 2), 0x0005);
}

#[test]
fn the_pm_block_moves_and_its_sleep_trap_follows() {
    let mut c = cpu("");
    let table = &c.vm.owners.ports;
    assert!(table.exits(PM1A) && !table.exits(0x6004));
    config_write(&mut c, PM, 0x40, 4, 0x6001);
    assert_eq!(device(&c, PM).get32(0x40), 0x6001);
    let table = &c.vm.owners.ports;
    assert!(!table.exits(PM1A) && table.exits(0x6004) && table.exits(0x6005));
    assert_eq!(c.vcpu.io_refreshed, [PM1A..=PM1A + 1, 0x6004..=0x6005]);
    // Sleep through the moved PM1a control ends the run; the device never sees it.
    assert_eq!(
        out(&mut c, 0x6004, 2, 1 << 13),
        Action::Stop(Stop::PowerOff)
    );
    assert!(c.vcpu.host.port_log.iter().all(|&(p, ..)| p != 0x6004));
    // A byte write of the high half (SLP_EN is bit 5 of it) too.
    let mut c = cpu("");
    config_write(&mut c, PM, 0x40, 4, 0x6001);
    assert_eq!(out(&mut c, 0x6005, 1, 0x34), Action::Stop(Stop::PowerOff));
    // Over COM2 it does not move.
    let mut c = cpu("");
    config_write(&mut c, PM, 0x40, 4, 0x2C1);
    assert_eq!(device(&c, PM).get32(0x40), u32::from(FAKE_PM_BASE) | 1);
    assert!(c.vm.owners.ports.exits(PM1A));
}

#[test]
fn pm1_control_without_slp_en_reaches_the_device() {
    let mut c = cpu("");
    assert_eq!(out(&mut c, PM1A, 2, 1), Action::Advance);
    assert_eq!(c.vcpu.host.port_log, [(PM1A, 2, Some(1))]);
}

/// A port write: port, width, value.
type Write = (u16, u8, u32);

#[test]
fn every_reset_path_ends_the_run() {
    let cases: &[(&str, &[Write])] = &[
        ("0xcf9 hard", &[(0xCF9, 1, 0x06)]),
        ("0xcf9 soft", &[(0xCF9, 1, 0x04)]),
        ("0xcf9 in a word", &[(0xCF8, 2, 0x0600)]),
        ("port 0x92", &[(0x92, 1, 0x01)]),
        ("kbc pulse", &[(0x64, 1, 0xFE)]),
        ("kbc pulse 0xf0", &[(0x64, 1, 0xF0)]),
        ("kbc output port", &[(0x64, 1, 0xD1), (0x60, 1, 0x02)]),
    ];
    for (what, accesses) in cases {
        let mut c = cpu("");
        let (last, rest) = accesses.split_last().unwrap();
        for &(p, s, v) in rest {
            assert_eq!(out(&mut c, p, s, v), Action::Advance, "{what}");
        }
        assert_eq!(
            out(&mut c, last.0, last.1, last.2),
            Action::Stop(Stop::Reset),
            "{what}"
        );
        assert!(
            !c.vcpu.host.port_log.contains(&(last.0, 1, Some(last.2))),
            "{what}: the reset never reaches the device"
        );
    }
}

#[test]
fn the_acpi_reset_register_ends_the_run_in_io_and_configuration_space() {
    let mut c = cpu_on(
        "",
        FakeVcpu::new(),
        facts(Some(ResetRegister::Io {
            port: 0x4D8,
            value: 0x0E,
        })),
    );
    assert_eq!(out(&mut c, 0x4D8, 1, 0x01), Action::Advance);
    assert_eq!(out(&mut c, 0x4D8, 1, 0x0E), Action::Stop(Stop::Reset));
    let mut c = cpu_on(
        "",
        FakeVcpu::new(),
        facts(Some(ResetRegister::Pci {
            bdf: Bdf::new(0, 1, 0),
            reg: 0x4D,
            value: 0x0E,
        })),
    );
    out(&mut c, 0xCF8, 4, Bdf::new(0, 1, 0).address(0x4C));
    assert_eq!(
        out(&mut c, 0xCFC, 4, 0x0000_0E00),
        Action::Stop(Stop::Reset)
    );
}

#[test]
fn non_reset_writes_to_the_reset_ports_reach_the_devices() {
    let mut c = cpu("");
    assert_eq!(out(&mut c, 0xCF9, 1, 0x02), Action::Advance);
    assert_eq!(c.vcpu.host.port_log, [(0xCF9, 1, Some(0x02))]);
    assert_eq!(
        out(&mut c, 0x64, 1, 0xF1),
        Action::Advance,
        "pulse without the reset line"
    );
}

#[test]
fn the_a20_gate_is_emulated_and_the_real_one_stays_open() {
    let mut c = cpu("");
    c.vcpu.host.ports.insert(0x92, 0x02);
    out(&mut c, 0x92, 1, 0x00);
    assert!(!c.vcpu.a20_open);
    assert_eq!(c.vcpu.host.ports[&0x92], 0x02, "the real gate stays open");
    assert_eq!(inp(&mut c, 0x92, 1) & 2, 0, "the guest reads its own gate");
    out(&mut c, 0x92, 1, 0x02);
    assert!(c.vcpu.a20_open);
    // The keyboard controller: 0xDD/0xDF never reach it.
    out(&mut c, 0x64, 1, 0xDD);
    assert!(!c.vcpu.a20_open);
    out(&mut c, 0x64, 1, 0xDF);
    assert!(c.vcpu.a20_open);
    assert!(c
        .vcpu
        .host
        .port_log
        .iter()
        .all(|&(p, _, v)| p != 0x64 || v.is_none()));
    // Its output port: A20 low is kept from the device, and read back as written.
    out(&mut c, 0x64, 1, 0xD1);
    out(&mut c, 0x60, 1, 0xDD);
    assert!(!c.vcpu.a20_open);
    assert_eq!(c.vcpu.host.port_log.last(), Some(&(0x60, 1, Some(0xDF))));
    c.vcpu.host.ports.insert(0x60, 0xDF);
    out(&mut c, 0x64, 1, 0xD0);
    assert_eq!(inp(&mut c, 0x60, 1), 0xDD);
    assert_eq!(
        inp(&mut c, 0x60, 1),
        0xDF,
        "only the byte after 0xD0 is the output port"
    );
}

#[test]
fn the_smi_command_port_enables_acpi_without_an_smi() {
    let mut c = cpu("");
    c.vcpu.host.ports.insert(PM1A, 0x00);
    out(&mut c, 0xB2, 1, 0xF1);
    assert_eq!(c.vcpu.host.ports[&PM1A] & 1, 1, "SCI_EN set by Vigil");
    assert_eq!(inp(&mut c, 0xB2, 1), 0xF1);
    out(&mut c, 0xB2, 1, 0xF0);
    assert_eq!(c.vcpu.host.ports[&PM1A] & 1, 0);
    out(&mut c, 0xB2, 1, 0x00);
    assert!(
        c.vcpu.host.port_log.iter().all(|&(p, ..)| p != 0xB2),
        "the chipset never sees the SMI command"
    );
}

/// A PRD table in the fake guest's RAM at `table`: `(address, count, last)` entries.
fn prd_table(c: &mut C, table: u64, entries: &[(u32, u32)]) {
    for (i, &(addr, count)) in entries.iter().enumerate() {
        let eot = if i + 1 == entries.len() { 1 << 31 } else { 0 };
        c.vcpu.poke64(
            table + 8 * i as u64,
            u64::from(addr) | (u64::from(count | eot) << 32),
        );
    }
}

#[test]
fn dma_runs_on_vigils_checked_copy_of_the_prd_table() {
    let mut c = cpu("");
    prd_table(&mut c, 0x1_0000, &[(0x2_0000, 0x800), (0x3_0000, 0x200)]);
    out(&mut c, FAKE_BM_BASE + 4, 4, 0x1_0000);
    assert_eq!(
        inp(&mut c, FAKE_BM_BASE + 4, 4),
        0x1_0000,
        "the guest reads its pointer"
    );
    out(&mut c, FAKE_BM_BASE, 1, 0x09);
    assert_eq!(
        c.vcpu.host.port_log,
        [
            (FAKE_BM_BASE, 1, None),
            (FAKE_BM_BASE + 4, 4, Some(PRD_PAGES[0])),
            (FAKE_BM_BASE, 1, Some(0x09)),
        ],
        "the engine gets Vigil's copy, then the start"
    );
    // Changing the table after the start changes nothing the engine reads.
    prd_table(&mut c, 0x1_0000, &[(0x400_0000, 0x800)]);
    let st = c.vm.platform.state.lock();
    let copy = &st.bus_master.pages[0].as_ref().unwrap().bytes;
    assert_eq!(
        copy[..16],
        [0, 0, 2, 0, 0, 8, 0, 0, 0, 0, 3, 0, 0, 2, 0, 0x80],
        "the checked copy"
    );
    assert_eq!(st.bus_master.started, 1);
}

#[test]
fn dma_into_vigil_or_outside_guest_ram_does_not_start() {
    let refused = |c: &mut C| {
        assert!(c
            .vcpu
            .host
            .port_log
            .iter()
            .all(|&(p, _, v)| p != FAKE_BM_BASE + 4 && v != Some(0x09)));
        assert_eq!(
            c.vcpu.host.port_log.last(),
            Some(&(FAKE_BM_BASE, 1, Some(0x08)))
        );
    };
    // An entry over Vigil's image.
    let mut c = cpu("");
    prd_table(&mut c, 0x1_0000, &[(0x2_0000, 0x200), (0x400_0000, 0x800)]);
    out(&mut c, FAKE_BM_BASE + 4, 4, 0x1_0000);
    out(&mut c, FAKE_BM_BASE, 1, 0x09);
    refused(&mut c);
    // The table itself in Vigil's memory (the secondary channel).
    let mut c = cpu("");
    out(&mut c, FAKE_BM_BASE + 0xC, 4, 0x400_0000);
    out(&mut c, FAKE_BM_BASE + 8, 1, 0x09);
    assert!(c
        .vcpu
        .host
        .port_log
        .iter()
        .all(|&(_, _, v)| v != Some(0x09)));
    // Beyond guest RAM, and across a 64 KiB boundary.
    for entry in [(0x30_0000, 0x200), (0x2_FF00, 0x200)] {
        let mut c = cpu("");
        prd_table(&mut c, 0x1_0000, &[entry]);
        out(&mut c, FAKE_BM_BASE + 4, 4, 0x1_0000);
        out(&mut c, FAKE_BM_BASE, 1, 0x09);
        refused(&mut c);
        assert_eq!(c.vm.platform.state.lock().bus_master.refused, 1);
    }
}

#[test]
fn a_running_engine_keeps_its_table() {
    let mut c = cpu("");
    c.vcpu.host.ports.insert(FAKE_BM_BASE, 0x01);
    out(&mut c, FAKE_BM_BASE + 4, 4, 0x400_0000);
    out(&mut c, FAKE_BM_BASE, 1, 0x09);
    assert_eq!(
        c.vcpu.host.port_log,
        [(FAKE_BM_BASE, 1, None), (FAKE_BM_BASE, 1, Some(0x09))],
        "no new pointer reaches a running engine"
    );
}

#[test]
fn the_bus_master_trap_follows_bar4() {
    let mut c = cpu("");
    config_write(&mut c, IDE, 0x20, 4, 0xD001);
    assert!(c.vm.owners.ports.exits(0xD004) && !c.vm.owners.ports.exits(FAKE_BM_BASE + 4));
    prd_table(&mut c, 0x1_0000, &[(0x400_0000, 0x200)]);
    out(&mut c, 0xD004, 4, 0x1_0000);
    out(&mut c, 0xD000, 1, 0x09);
    assert_eq!(c.vcpu.host.port_log.last(), Some(&(0xD000, 1, Some(0x08))));
}

#[test]
fn the_apic_base_moves_only_onto_guest_ram_or_home() {
    let mut v = FakeVcpu::new();
    v.host.msrs.insert(0x1B, 0xFEE0_0900);
    let mut c = crate::testing::cpu_with("", v);
    for (base, takes) in [
        (0x10_0000u64, true),
        (0x400_0000, false),
        (0xEE0_1000, false),
        (0xFEB0_0000, false),
        (0xFEE0_0000, true),
    ] {
        assert_eq!(
            wrmsr(&mut c, 0x1B, base | 0x900),
            Action::Advance,
            "{base:#x}"
        );
        let now = c.vcpu.host.msrs[&0x1B];
        assert_eq!(now & !0xFFF == base, takes, "{base:#x}: {now:#x}");
        assert_eq!(now & 0xFFF, 0x900, "the other bits take effect");
        c.vcpu.host.msrs.insert(0x1B, 0xFEE0_0900);
    }
    // x2APIC mode keeps the base field: the same rule.
    wrmsr(&mut c, 0x1B, 0x400_0000 | 0xD00);
    assert_eq!(c.vcpu.host.msrs[&0x1B], 0xFEE0_0D00);
}

#[test]
fn an_x2apic_smi_ipi_is_dropped_and_other_ipis_sent() {
    let mut v = FakeVcpu::new();
    v.host.msrs.insert(0x830, 0);
    let mut c = crate::testing::cpu_with("", v);
    assert_eq!(wrmsr(&mut c, 0x830, 0x2_0000_0200), Action::Advance);
    assert!(c.vcpu.host.msr_writes.is_empty());
    assert_eq!(wrmsr(&mut c, 0x830, 0x4400), Action::Advance);
    assert_eq!(c.vcpu.host.msr_writes, [(0x830, 0x4400)]);
}

#[test]
fn the_guests_mtrrs_are_its_own_and_never_cover_vigil() {
    let mut v = FakeVcpu::new();
    v.host.msrs.insert(0xFE, 0x50A);
    v.host.msrs.insert(0x2FF, 0xC06);
    v.host.msrs.insert(0x200, 0x6);
    v.host.msrs.insert(0x201, 0xF_F000_0800);
    let mut c = crate::testing::cpu_with("", v);
    assert_eq!(rdmsr(&mut c, 0x201), Ok(0xF_F000_0800));
    // A 1 MiB write-back range at 16 MiB: accepted, read back, never written to the host.
    assert_eq!(wrmsr(&mut c, 0x202, 0x100_0006), Action::Advance);
    assert_eq!(wrmsr(&mut c, 0x203, 0xF_FFF0_0800), Action::Advance);
    assert_eq!(rdmsr(&mut c, 0x202), Ok(0x100_0006));
    // Over Vigil's image (64 MiB): #GP, and the copy keeps its value.
    assert_eq!(wrmsr(&mut c, 0x202, 0x400_0006), GP);
    assert_eq!(rdmsr(&mut c, 0x202), Ok(0x100_0006));
    // A mask that makes a range cover Vigil's memory: the base alone is fine while the pair
    // is not valid, the mask that validates it is refused.
    assert_eq!(
        wrmsr(&mut c, 0x204, 0x0000_0006),
        Action::Advance,
        "pair 2 is invalid yet"
    );
    assert_eq!(
        wrmsr(&mut c, 0x205, 0xF_0000_0800),
        GP,
        "4 GiB over everything"
    );
    assert_eq!(rdmsr(&mut c, 0x205), Ok(0));
    // Reserved bits and memory types as the processor checks them; beyond the count.
    assert_eq!(wrmsr(&mut c, 0x2FF, 0x1006), GP);
    assert_eq!(wrmsr(&mut c, 0x2FF, 0xC02), GP);
    assert_eq!(wrmsr(&mut c, 0x214, 0), GP);
    assert_eq!(wrmsr(&mut c, 0xFE, 0), GP);
    assert!(c.vcpu.host.msr_writes.is_empty());
}

#[test]
fn msrs_that_hold_addresses_never_name_vigils_memory() {
    let mut v = FakeVcpu::new();
    for msr in [0x600, 0x560, 0x561, 0x570] {
        v.host.msrs.insert(msr, 0);
    }
    let mut c = crate::testing::cpu_with("", v);
    assert_eq!(
        wrmsr(&mut c, 0x600, 0x400_0800),
        GP,
        "DS_AREA in Vigil's image"
    );
    assert_eq!(
        wrmsr(&mut c, 0x600, 0xFFFF_FFFF_8000_1000),
        GP,
        "in Vigil's window"
    );
    assert_eq!(
        wrmsr(&mut c, 0x600, 0x8000_0000_0000_0000),
        GP,
        "non-canonical"
    );
    assert_eq!(wrmsr(&mut c, 0x600, 0x1_2000), Action::Advance);
    assert_eq!(
        wrmsr(&mut c, 0x560, 0x400_0000),
        GP,
        "PT output in Vigil's image"
    );
    assert_eq!(
        wrmsr(&mut c, 0x560, 0x30_0000),
        GP,
        "PT output beyond guest RAM"
    );
    assert_eq!(wrmsr(&mut c, 0x560, 0x1_0000), Action::Advance);
    assert_eq!(
        wrmsr(&mut c, 0x561, 0x3FFF_FF80),
        GP,
        "a mask that runs past guest RAM"
    );
    assert_eq!(wrmsr(&mut c, 0x570, 0x101), GP, "ToPA output");
    assert_eq!(wrmsr(&mut c, 0x570, 0x1), Action::Advance);
    assert_eq!(
        c.vcpu.host.msr_writes,
        [(0x600, 0x1_2000), (0x560, 0x1_0000), (0x570, 0x1)]
    );
}

#[test]
fn misc_enable_may_not_disable_xd_and_unknown_msrs_are_not_written() {
    let mut v = FakeVcpu::new();
    v.host.msrs.insert(0x1A0, 0x1);
    v.host.msrs.insert(0x1234, 0x55);
    let mut c = crate::testing::cpu_with("", v);
    assert_eq!(wrmsr(&mut c, 0x1A0, 0x4_0000_0001), GP);
    assert_eq!(wrmsr(&mut c, 0x1A0, 0x41), Action::Advance);
    assert_eq!(rdmsr(&mut c, 0x1234), Ok(0x55), "read on the host");
    assert_eq!(wrmsr(&mut c, 0x1234, 0x66), GP, "written nowhere");
    assert_eq!(wrmsr(&mut c, 0x1F2, 0x400_0006), GP, "SMRR");
    assert_eq!(wrmsr(&mut c, 0x3F1, 1), GP, "PEBS");
    assert_eq!(c.vcpu.host.msr_writes, [(0x1A0, 0x41)]);
}

#[test]
fn a_usb_host_controller_whose_dma_is_not_mediated_never_runs() {
    let mut c = cpu("");
    assert_eq!(out(&mut c, FAKE_USB_BASE, 2, 0x0081), Action::Advance);
    assert_eq!(
        c.vcpu.host.port_log,
        [(FAKE_USB_BASE, 2, Some(0x0080))],
        "run bit kept off"
    );
    // Its registers move; the hold moves with them.
    config_write(&mut c, USB, 0x20, 4, 0xD041);
    assert!(c.vm.owners.ports.exits(0xD040) && !c.vm.owners.ports.exits(FAKE_USB_BASE));
    c.vcpu.host.port_log.clear();
    out(&mut c, 0xD040, 2, 0x0001);
    assert_eq!(c.vcpu.host.port_log, [(0xD040, 2, Some(0x0000))]);
    // Its other registers (the frame list base at +8) are the guest's, untrapped.
    assert!(!c.vm.owners.ports.exits(0xD048));
}
