//! A fake vCPU and host for the host tests: architectural state in plain fields, guest RAM in a
//! `Vec`, and a record of everything the handlers asked the "hardware" to do (events injected,
//! single-step traps, flushes, port and MSR accesses, reports). The fake holds the same switched
//! MSRs as the VMX backend, so tests see what a VMX guest sees.

use crate::config::Config;
use crate::cpu::{Cpu, Exited, Vm};
use crate::exit::{complete::complete, dispatch, Action, Exit, Stop};
use crate::nested::Perms;
use crate::owners::{MsrHandler, MsrRule, Owner, Owners, PortTable, IA32_FEATURE_CONTROL};
use crate::platform::{Acpi, DmaProtection, Facts, GuestMemory, Platform, PrdPage, ResetRegister};
use crate::time::tsc::VirtualTsc;
use crate::time::HiddenTime;
use crate::time::{EntryTime, Time};
use crate::vcpu::{
    msr as m, Activity, DescriptorTable, Flush, Host, Interruptibility, Mode, Seg, SegAttrs,
    Segment, Vcpu, Window,
};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use x86_arch::cpuid::Features;
use x86_arch::event::Event;
use x86_arch::regs::*;

/// Guest RAM of the fake: 2 MiB from address 0.
pub const RAM: usize = 2 << 20;
pub const PM1A: u16 = 0xB004;
/// Device memory of the fake from here up is ROM: writes are ignored.
pub const ROM: u64 = 0x30_0000;

#[derive(Default)]
pub struct FakeHost {
    pub cpuid: BTreeMap<(u32, u32), [u32; 4]>,
    /// MSRs the processor has; any other raises #GP.
    pub msrs: BTreeMap<u32, u64>,
    pub msr_writes: Vec<(u32, u64)>,
    /// Device registers, byte by byte (an unknown port reads 0).
    pub ports: BTreeMap<u16, u8>,
    /// Every port access that reached the "device": (port, size, value written or None).
    pub port_log: Vec<(u16, u8, Option<u32>)>,
    /// XCR0 values the processor accepts (bit mask of supported components).
    pub xcr0_supported: u64,
    pub xcr0: u64,
    pub pmcs: BTreeMap<u32, u64>,
    pub tsc: u64,
    /// How far the TSC moves at every read.
    pub tsc_step: u64,
    pub caches_written_back: u32,
    /// Times the local APIC was reset as INIT resets it.
    pub apic_inits: u32,
    /// The machine's PCI functions, reached through 0xCF8/0xCFC as on hardware.
    pub pci: FakePci,
}

/// One fake PCI function: its configuration space and which bits of it writes change.
#[derive(Clone)]
pub struct FakeFunction {
    pub config: [u8; 256],
    pub writable: [u8; 256],
}

impl FakeFunction {
    fn new(vendor: u16, device: u16, class: u32) -> FakeFunction {
        let mut f = FakeFunction {
            config: [0; 256],
            writable: [0; 256],
        };
        f.set32(0, u32::from(vendor) | (u32::from(device) << 16));
        f.set32(8, class << 8);
        // Command: I/O, memory, bus master writable.
        f.writable[4] = 0x07;
        // Device-specific registers are read-write.
        for w in &mut f.writable[0x40..] {
            *w = 0xFF;
        }
        f
    }

    pub fn get32(&self, reg: u8) -> u32 {
        let r = reg as usize;
        u32::from_le_bytes(self.config[r..r + 4].try_into().unwrap())
    }

    pub fn set32(&mut self, reg: u8, v: u32) {
        let r = reg as usize;
        self.config[r..r + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// An I/O BAR of `size` ports at `base`.
    fn io_bar(&mut self, reg: u8, size: u32, base: u32) {
        self.set32(reg, base | 1);
        let w = !(size - 1) & 0xFFFF_FFFC;
        self.writable[reg as usize..reg as usize + 4].copy_from_slice(&w.to_le_bytes());
    }

    /// A 32-bit memory BAR of `size` bytes at `base`.
    fn mem_bar(&mut self, reg: u8, size: u32, base: u32) {
        self.set32(reg, base);
        let w = !(size - 1) & 0xFFFF_FFF0;
        self.writable[reg as usize..reg as usize + 4].copy_from_slice(&w.to_le_bytes());
    }
}

/// The fake machine's PCI bus: Bochs' default i440FX machine (host bridge, PIIX3 ISA, IDE and
/// USB, PIIX4 power management) and a network card that masters the bus.
#[derive(Clone)]
pub struct FakePci {
    pub address: u32,
    pub functions: BTreeMap<(u8, u8, u8), FakeFunction>,
}

pub const FAKE_BM_BASE: u16 = 0xC000;
pub const FAKE_USB_BASE: u16 = 0xC020;
pub const FAKE_PM_BASE: u16 = 0xB000;
pub const FAKE_NIC_MEM: u32 = 0xFEBC_0000;

impl Default for FakePci {
    fn default() -> FakePci {
        let mut functions = BTreeMap::new();
        let mut host = FakeFunction::new(0x8086, 0x1237, 0x06_0000);
        host.config[0x72] = 0x0A;
        functions.insert((0, 0, 0), host);
        let mut isa = FakeFunction::new(0x8086, 0x7000, 0x06_0100);
        isa.config[0x0E] = 0x80;
        functions.insert((0, 1, 0), isa);
        let mut ide = FakeFunction::new(0x8086, 0x7010, 0x01_0180);
        ide.io_bar(0x20, 16, u32::from(FAKE_BM_BASE));
        ide.config[4] = 0x05;
        functions.insert((0, 1, 1), ide);
        let mut usb = FakeFunction::new(0x8086, 0x7020, 0x0C_0300);
        usb.io_bar(0x20, 32, u32::from(FAKE_USB_BASE));
        usb.config[4] = 0x05;
        functions.insert((0, 1, 2), usb);
        let mut pm = FakeFunction::new(0x8086, 0x7113, 0x06_8000);
        pm.set32(0x40, u32::from(FAKE_PM_BASE) | 1);
        pm.set32(0x90, 0xB100 | 1);
        functions.insert((0, 1, 3), pm);
        let mut nic = FakeFunction::new(0x8086, 0x100E, 0x02_0000);
        nic.mem_bar(0x10, 0x2_0000, FAKE_NIC_MEM);
        nic.io_bar(0x14, 64, 0xC040);
        nic.config[4] = 0x07;
        functions.insert((0, 2, 0), nic);
        FakePci {
            address: 0,
            functions,
        }
    }
}

impl FakePci {
    fn selected(&mut self) -> Option<(&mut FakeFunction, usize)> {
        let a = self.address;
        if a & 0x8000_0000 == 0 {
            return None;
        }
        let key = (
            (a >> 16) as u8,
            ((a >> 11) & 0x1F) as u8,
            ((a >> 8) & 7) as u8,
        );
        Some((self.functions.get_mut(&key)?, (a & 0xFC) as usize))
    }

    fn read(&mut self, port: u16, size: u8) -> u32 {
        let Some((f, reg)) = self.selected() else {
            return 0xFFFF_FFFF;
        };
        let at = reg + (port - 0xCFC) as usize;
        (0..size as usize).fold(0, |v, i| v | u32::from(f.config[at + i]) << (8 * i))
    }

    fn write(&mut self, port: u16, size: u8, value: u32) {
        let Some((f, reg)) = self.selected() else {
            return;
        };
        let at = reg + (port - 0xCFC) as usize;
        for i in 0..size as usize {
            let b = (value >> (8 * i)) as u8;
            let r = at + i;
            if r == 0x72 && f.get32(0) == 0x1237_8086 {
                // i440FX SMRAM: D_LCK makes D_OPEN 0 and both read-only (as Bochs does).
                let mut v = (b & 0x78) | 0x02;
                if f.config[0x72] & 0x10 != 0 {
                    v = (v & 0xBF) | 0x10;
                }
                f.config[0x72] = v;
                continue;
            }
            f.config[r] = (f.config[r] & !f.writable[r]) | (b & f.writable[r]);
        }
    }
}

impl Host for FakeHost {
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.cpuid
            .get(&(leaf, subleaf))
            .copied()
            .unwrap_or_default()
    }
    fn rdmsr(&mut self, msr: u32) -> Option<u64> {
        self.msrs.get(&msr).copied()
    }
    fn wrmsr(&mut self, msr: u32, value: u64) -> bool {
        match self.msrs.get_mut(&msr) {
            Some(v) => {
                *v = value;
                self.msr_writes.push((msr, value));
                true
            }
            None => false,
        }
    }
    fn xsetbv(&mut self, _xcr: u32, value: u64) -> bool {
        if value & !self.xcr0_supported != 0 {
            return false;
        }
        self.xcr0 = value;
        true
    }
    fn rdpmc(&mut self, counter: u32) -> Option<u64> {
        self.pmcs.get(&counter).copied()
    }
    fn port_in(&mut self, port: u16, size: u8) -> u32 {
        if port == 0xCF8 && size == 4 {
            return self.pci.address;
        }
        if (0xCFC..=0xCFF).contains(&port) {
            return self.pci.read(port, size);
        }
        self.port_log.push((port, size, None));
        (0..size).fold(0u32, |v, i| {
            let b = self
                .ports
                .get(&port.wrapping_add(i as u16))
                .copied()
                .unwrap_or(0);
            v | (b as u32) << (8 * i)
        })
    }
    fn port_out(&mut self, port: u16, size: u8, value: u32) {
        if port == 0xCF8 && size == 4 {
            self.pci.address = value;
            return;
        }
        if (0xCFC..=0xCFF).contains(&port) {
            self.pci.write(port, size, value);
            return;
        }
        self.port_log.push((port, size, Some(value)));
        for i in 0..size {
            self.ports
                .insert(port.wrapping_add(i as u16), (value >> (8 * i)) as u8);
        }
    }
    fn write_back_caches(&mut self) {
        self.caches_written_back += 1;
    }
    fn rdtsc(&mut self) -> u64 {
        self.tsc = self.tsc.wrapping_add(self.tsc_step);
        self.tsc
    }
    fn init_local_apic(&mut self) {
        self.apic_inits += 1;
    }
    fn vigil_range(&self, index: u32) -> Option<(u64, u64)> {
        match index {
            0 => Some((0x400_0000, 0x410_0000)),
            1 => Some((0xee0_0000, 0xfe0_0000)),
            _ => None,
        }
    }
    fn vigil_checksum(&mut self) -> u64 {
        0x1234_5678_9abc_def0
    }
}

pub struct FakeVcpu {
    pub gprs: [u64; 16],
    pub rip: u64,
    pub len: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr4_allowed: u64,
    pub hidden: Features,
    pub efer: u64,
    pub pdptes: Option<[u64; 4]>,
    pub segs: [Segment; 8],
    /// GDTR and IDTR: (base, limit).
    pub dtables: [(u64, u32); 2],
    pub drs: [u64; 8],
    /// The switched MSRs this "backend" holds (VMX's set; EFER is `efer`).
    pub msrs: BTreeMap<u32, u64>,
    pub intr: Interruptibility,
    pub injected: Vec<Event>,
    pub single_steps: u32,
    pub windows: [bool; 2],
    pub nmi_window_supported: bool,
    pub activity: Activity,
    pub flushes: Vec<Flush>,
    /// Times the nested translations were dropped (another vCPU changed the tables).
    pub nested_flushes: u32,
    pub mem: Vec<u8>,
    /// Device memory beyond RAM: (address, byte); an absent byte reads 0xFF. Addresses from
    /// `ROM` up ignore writes, as a ROM does.
    pub mmio: BTreeMap<u64, u8>,
    /// Every device access: (address, length, written).
    pub mmio_log: Vec<(u64, usize, bool)>,
    pub perms: BTreeMap<u64, Perms>,
    pub tsc_offset: u64,
    pub rdtsc_exit: bool,
    pub step_trap_works: bool,
    /// Nested paging can map execute-only pages (EPT with the capability; never NPT).
    pub exec_only: bool,
    pub step_trap: bool,
    pub exceptions: u32,
    pub poll: Option<u64>,
    /// The backend has no poll timer (SVM): `set_poll_timer` refuses.
    pub no_timer: bool,
    pub reports: Vec<String>,
    /// The guest's A20 gate as the platform last set it.
    pub a20_open: bool,
    /// Port ranges whose I/O filter the platform asked to refresh.
    pub io_refreshed: Vec<core::ops::RangeInclusive<u16>>,
    /// What `run` returns, in order; when empty, the run ends with a failed entry.
    pub script: VecDeque<Exit>,
    pub host: FakeHost,
}

fn flat(long: bool) -> Segment {
    Segment {
        selector: 0x10,
        base: 0,
        limit: 0xFFFF_FFFF,
        attrs: SegAttrs {
            typ: 0xB,
            s: true,
            present: true,
            long,
            db: !long,
            granularity: true,
            ..SegAttrs::default()
        },
    }
}

impl FakeVcpu {
    /// A 64-bit guest at CPL 0, paging on with identity page tables for the first 2 MiB (one
    /// 2 MiB page at 0x1000's PML4), interrupts enabled.
    pub fn new() -> FakeVcpu {
        let mut v = FakeVcpu {
            gprs: [0; 16],
            rip: 0x1000,
            len: 2,
            rflags: RFLAGS_FIXED1 | RFLAGS_IF,
            cr0: CR0_PE | CR0_PG | CR0_ET | CR0_NE | CR0_WP,
            cr2: 0,
            cr3: 0x10_0000,
            cr4: CR4_PAE,
            cr4_allowed: 0x3F_FFFF & !(CR4_VMXE | CR4_SMXE),
            hidden: Features::NONE,
            efer: EFER_LME | EFER_LMA | EFER_SCE | EFER_NXE,
            pdptes: None,
            segs: [flat(false); 8],
            dtables: [(0x2000, 0x1F), (0x3000, 0xFFF)],
            drs: [0, 0, 0, 0, 0, 0, DR6_FIXED1, DR7_FIXED1],
            msrs: BTreeMap::new(),
            intr: Interruptibility::default(),
            injected: Vec::new(),
            single_steps: 0,
            windows: [false; 2],
            nmi_window_supported: true,
            activity: Activity::Active,
            flushes: Vec::new(),
            nested_flushes: 0,
            mem: alloc::vec![0; RAM],
            mmio: BTreeMap::new(),
            mmio_log: Vec::new(),
            perms: BTreeMap::new(),
            tsc_offset: 0,
            rdtsc_exit: false,
            step_trap_works: true,
            exec_only: true,
            step_trap: false,
            exceptions: 0,
            poll: None,
            no_timer: false,
            reports: Vec::new(),
            a20_open: true,
            io_refreshed: Vec::new(),
            script: VecDeque::new(),
            host: FakeHost {
                xcr0_supported: 0b111,
                xcr0: 1,
                tsc_step: 1,
                ..FakeHost::default()
            },
        };
        v.segs[Seg::Cs as usize] = flat(true);
        for msr in [
            m::IA32_SYSENTER_CS,
            m::IA32_SYSENTER_ESP,
            m::IA32_SYSENTER_EIP,
            m::IA32_DEBUGCTL,
            m::IA32_PAT,
            m::IA32_FS_BASE,
            m::IA32_GS_BASE,
        ] {
            v.msrs.insert(msr, 0);
        }
        v.msrs.insert(m::IA32_PAT, 0x0007_0406_0007_0406);
        // Identity page tables: PML4 at 1 MiB, PDPT at 1 MiB + 4K, PD at 1 MiB + 8K, one
        // 2 MiB page at 0 (user, writable).
        v.poke64(0x10_0000, 0x10_1000 | 7);
        v.poke64(0x10_1000, 0x10_2000 | 7);
        v.poke64(0x10_2000, 0x87);
        v
    }

    /// A 32-bit protected-mode guest with paging off.
    pub fn protected32() -> FakeVcpu {
        let mut v = FakeVcpu::new();
        v.cr0 = CR0_PE | CR0_ET | CR0_NE;
        v.cr4 = 0;
        v.efer = 0;
        v.cr3 = 0;
        v.segs[Seg::Cs as usize] = flat(false);
        v
    }

    pub fn poke64(&mut self, gpa: u64, value: u64) {
        self.mem[gpa as usize..gpa as usize + 8].copy_from_slice(&value.to_le_bytes());
    }

    pub fn peek(&self, gpa: u64, len: usize) -> &[u8] {
        &self.mem[gpa as usize..gpa as usize + len]
    }
}

impl Default for FakeVcpu {
    fn default() -> Self {
        Self::new()
    }
}

impl Vcpu for FakeVcpu {
    type Host = FakeHost;

    fn host(&mut self) -> &mut FakeHost {
        &mut self.host
    }

    fn run(&mut self, _time: &EntryTime) -> Result<Exited, Stop> {
        let exit = self
            .script
            .pop_front()
            .ok_or(Stop::Failed("script ended"))?;
        let exit_tsc = self.host.rdtsc();
        Ok(Exited {
            exit,
            interrupted: None,
            exit_tsc,
        })
    }

    fn hidden_time(&self) -> HiddenTime {
        HiddenTime {
            offset: self.tsc_offset,
            ..HiddenTime::default()
        }
    }

    fn gpr(&self, n: u8) -> u64 {
        self.gprs[n as usize & 15]
    }
    fn set_gpr(&mut self, n: u8, value: u64) {
        self.gprs[n as usize & 15] = value;
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, rip: u64) {
        self.rip = rip;
    }
    fn instruction_len(&self) -> u64 {
        self.len
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, rflags: u64) {
        self.rflags = rflags;
    }
    fn cr0(&self) -> u64 {
        self.cr0
    }
    fn set_cr0(&mut self, value: u64) {
        self.cr0 = value;
    }
    fn cr2(&self) -> u64 {
        self.cr2
    }
    fn set_cr2(&mut self, value: u64) {
        self.cr2 = value;
    }
    fn cr3(&self) -> u64 {
        self.cr3
    }
    fn set_cr3(&mut self, value: u64) {
        self.cr3 = value;
    }
    fn cr4(&self) -> u64 {
        self.cr4
    }
    fn set_cr4(&mut self, value: u64) {
        self.cr4 = value;
    }
    fn cr4_allowed(&self) -> u64 {
        self.cr4_allowed
    }
    fn hidden_features(&self) -> Features {
        self.hidden
    }
    fn set_pdptes(&mut self, pdptes: [u64; 4]) {
        self.pdptes = Some(pdptes);
    }
    fn efer(&self) -> u64 {
        self.efer
    }
    fn set_efer(&mut self, value: u64) {
        self.efer = value;
    }
    fn cpl(&self) -> u8 {
        self.segs[Seg::Ss as usize].attrs.dpl
    }
    fn mode(&self) -> Mode {
        let cs = self.segs[Seg::Cs as usize].attrs;
        if self.cr0 & CR0_PE == 0 {
            Mode::Real
        } else if self.rflags & RFLAGS_VM != 0 {
            Mode::Virtual8086
        } else if self.efer & EFER_LMA != 0 && cs.long {
            Mode::Long64
        } else if cs.db {
            Mode::Protected32
        } else {
            Mode::Protected16
        }
    }
    fn segment(&self, seg: Seg) -> Segment {
        self.segs[seg as usize]
    }
    fn set_segment(&mut self, seg: Seg, value: &Segment) {
        self.segs[seg as usize] = *value;
    }
    fn dtable(&self, table: DescriptorTable) -> (u64, u32) {
        self.dtables[table as usize]
    }
    fn set_dtable(&mut self, table: DescriptorTable, base: u64, limit: u32) {
        self.dtables[table as usize] = (base, limit);
    }
    fn dr(&self, n: u8) -> u64 {
        self.drs[n as usize & 7]
    }
    fn set_dr(&mut self, n: u8, value: u64) {
        self.drs[n as usize & 7] = value;
    }
    fn msr(&self, msr: u32) -> Option<u64> {
        if msr == m::IA32_EFER {
            return Some(self.efer);
        }
        self.msrs.get(&msr).copied()
    }
    fn set_msr(&mut self, msr: u32, value: u64) -> bool {
        if msr == m::IA32_EFER {
            self.efer = value;
            return true;
        }
        match self.msrs.get_mut(&msr) {
            Some(v) => {
                *v = value;
                true
            }
            None => false,
        }
    }
    fn interruptibility(&self) -> Interruptibility {
        self.intr
    }
    fn set_interruptibility(&mut self, value: Interruptibility) {
        self.intr = value;
    }
    fn inject(&mut self, event: &Event) {
        self.injected.push(*event);
        self.activity = Activity::Active;
    }
    fn single_step_trap(&mut self) {
        self.single_steps += 1;
    }
    fn request_window(&mut self, kind: Window, on: bool) -> bool {
        if kind == Window::Nmi && !self.nmi_window_supported {
            return false;
        }
        self.windows[kind as usize] = on;
        true
    }
    fn activity(&self) -> Activity {
        self.activity
    }
    fn set_activity(&mut self, state: Activity) {
        self.activity = state;
    }
    fn flush(&mut self, what: Flush) {
        self.flushes.push(what);
    }
    fn invalidate_nested(&mut self) {
        self.nested_flushes += 1;
    }
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        match gpa.checked_add(buf.len() as u64) {
            Some(end) if end <= RAM as u64 => {
                buf.copy_from_slice(&self.mem[gpa as usize..end as usize]);
                true
            }
            _ => false,
        }
    }
    fn write_phys(&mut self, gpa: u64, bytes: &[u8]) -> bool {
        match gpa.checked_add(bytes.len() as u64) {
            Some(end) if end <= RAM as u64 => {
                self.mem[gpa as usize..end as usize].copy_from_slice(bytes);
                true
            }
            _ => false,
        }
    }
    fn read_mmio(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        if gpa < RAM as u64
            || self
                .host
                .vigil_range(0)
                .is_some_and(|(s, e)| gpa < e && gpa + buf.len() as u64 > s)
        {
            return false;
        }
        self.mmio_log.push((gpa, buf.len(), false));
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.mmio.get(&(gpa + i as u64)).copied().unwrap_or(0xFF);
        }
        true
    }
    fn write_mmio(&mut self, gpa: u64, bytes: &[u8]) -> bool {
        if gpa < RAM as u64
            || self
                .host
                .vigil_range(0)
                .is_some_and(|(s, e)| gpa < e && gpa + bytes.len() as u64 > s)
        {
            return false;
        }
        self.mmio_log.push((gpa, bytes.len(), true));
        if gpa < ROM {
            for (i, b) in bytes.iter().enumerate() {
                self.mmio.insert(gpa + i as u64, *b);
            }
        }
        true
    }
    fn phys_addr_bits(&self) -> u8 {
        40
    }
    fn set_a20(&mut self, open: bool) -> bool {
        self.a20_open = open;
        true
    }
    fn refresh_io_traps(&mut self, _table: &PortTable, ports: core::ops::RangeInclusive<u16>) {
        self.io_refreshed.push(ports);
    }
    fn set_page_perms(&mut self, page: u64, perms: Perms) -> bool {
        if page >= RAM as u64 {
            return false;
        }
        self.perms.insert(page, perms);
        true
    }
    fn exec_only_pages(&self) -> bool {
        self.exec_only
    }
    fn set_tsc_offset(&mut self, offset: u64) {
        self.tsc_offset = offset;
    }
    fn rdtsc_exits(&self) -> bool {
        self.rdtsc_exit
    }
    fn has_step_trap(&self) -> bool {
        self.step_trap_works
    }
    fn set_step_trap(&mut self, on: bool) {
        self.step_trap = on;
    }
    fn intercept_exception(&mut self, vector: u8, on: bool) {
        if on {
            self.exceptions |= 1 << vector;
        } else {
            self.exceptions &= !(1 << vector);
        }
    }
    fn set_poll_timer(&mut self, ticks: Option<u64>) -> bool {
        if self.no_timer {
            return false;
        }
        self.poll = ticks;
        true
    }
    fn report(&mut self, what: &str) {
        self.reports.push(what.into());
    }
    fn dump(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        writeln!(out, "fake vCPU at rip {:#x}", self.rip)
    }
    fn describe_gpa(&self, gpa: u64, out: &mut dyn fmt::Write) -> fmt::Result {
        writeln!(out, "  fake nested tables: gpa {gpa:#x} -> hpa {gpa:#x}")
    }
}

/// The virtualization MSRs of the fake backend (as VMX's).
pub static FAKE_VIRT_MSRS: [MsrRule; 2] = [
    MsrRule {
        msrs: IA32_FEATURE_CONTROL..=IA32_FEATURE_CONTROL,
        owner: Owner::Vigil,
        read: Some(MsrHandler::FeatureControl),
        write: Some(MsrHandler::FeatureControl),
        why: "VMX",
    },
    MsrRule {
        msrs: 0x480..=0x493,
        owner: Owner::Vigil,
        read: Some(MsrHandler::Absent),
        write: Some(MsrHandler::Absent),
        why: "VMX",
    },
];

/// Vigil's memory in the fake machine (as `FakeHost::vigil_range`).
pub const VIGIL: [(u64, u64); 2] = [(0x400_0000, 0x410_0000), (0xee0_0000, 0xfe0_0000)];
/// The physical addresses of the fake PRD copy pages.
pub const PRD_PAGES: [u32; 2] = [0x0ee0_1000, 0x0ee0_2000];

/// The facts a fake machine starts with: 2 MiB of guest RAM, Vigil's ranges, the FADT of
/// Bochs' BIOS (PM1a control in the PIIX4 PM block, SMI command 0xB2), `reset`.
pub fn facts(reset: Option<ResetRegister>) -> Facts {
    Facts {
        memory: GuestMemory::new(alloc::vec![(0, RAM as u64)], VIGIL.to_vec()),
        acpi: Acpi {
            pm1a_control: Some(PM1A),
            pm1b_control: None,
            smi_command: Some(0xB2),
            acpi_enable: 0xF1,
            acpi_disable: 0xF0,
            reset,
        },
        dma: DmaProtection::Mediated,
        prd_pages: PRD_PAGES.map(|phys| {
            Some(PrdPage {
                phys,
                bytes: Box::leak(Box::new([0u8; 4096])),
            })
        }),
    }
}

/// A vCPU on a machine with `facts` under `options` (Vigil's command line).
pub fn cpu_on(options: &str, mut vcpu: FakeVcpu, facts: Facts) -> Cpu<FakeVcpu> {
    let config = Config::parse(options).expect("test options parse");
    let platform = Platform::take(&mut vcpu.host, facts);
    let rules = platform.port_rules(&mut vcpu.host);
    let owners = Owners::build(&config, &rules, &FAKE_VIRT_MSRS);
    let vm: &'static Vm = Box::leak(Box::new(Vm {
        config,
        owners,
        platform,
        smp: crate::smp::Smp::new(1),
    }));
    // Only what the guest's exits do shows in the records.
    vcpu.host.port_log.clear();
    vcpu.host.msr_writes.clear();
    let time = Time::new(VirtualTsc::new(vm.config.tsc, 0, 0));
    let mut cpu = Cpu::new(vcpu, vm, 0, time);
    cpu.vcpu.set_tsc_offset(cpu.time.v.offset);
    cpu
}

/// A vCPU under the configuration `options` (Vigil's command line), on `vcpu`.
pub fn cpu_with(options: &str, vcpu: FakeVcpu) -> Cpu<FakeVcpu> {
    cpu_on(options, vcpu, facts(None))
}

pub fn cpu(options: &str) -> Cpu<FakeVcpu> {
    cpu_with(options, FakeVcpu::new())
}

/// One exit through its handler and the completion, as the exit loop runs it.
pub fn exit(cpu: &mut Cpu<FakeVcpu>, e: Exit) -> Action {
    let action = dispatch(cpu, &e);
    complete(cpu, action);
    action
}
