//! PCI configuration space: configuration mechanism #1 (the address at 0xCF8, the data at
//! 0xCFC-0xCFF; PCI Local Bus Specification 3.0, 3.2.2.3.2), what Vigil knows of each function
//! (found by a scan at boot, BAR sizes included), and the policy for every configuration write
//! the guest makes.
//!
//! A write can move a decoder (a BAR, a bridge window, a chipset's base register), enable bus
//! mastering, or change how the chipset decodes memory (SMRAM, DRAM rows, the AGP aperture,
//! BIOS write enable). Vigil decides before the write reaches the device:
//! - nothing may decode memory over Vigil's (a memory BAR, an expansion ROM, a bridge window);
//! - nothing may decode a port Vigil owns (COM2, the shutdown port, the PCI and reset ports, the
//!   keyboard controller, the SMI command port, the decoders it follows) — except a followed
//!   decoder itself, whose trap then moves with it (the IDE bus-master block, the PIIX4
//!   power-management block);
//! - a function may master the bus only when its DMA is mediated or confined (`dma.rs`);
//! - SMRAM stays as Vigil locked it, DRAM decoding as the firmware left it, the AGP GART off,
//!   BIOS writes off.
//!
//! A refused change does not take effect: the register keeps its value (the rest of the same
//! write goes through). Reads pass through: the guest sees the registers as they are.

use alloc::vec::Vec;

pub const CONFIG_ADDRESS: u16 = 0xCF8;
pub const CONFIG_DATA: u16 = 0xCFC;
/// The reset control register (PIIX3/PIIX4 RC, ICH RST_CNT), a byte inside CONFIG_ADDRESS's
/// dword that answers byte accesses.
pub const RESET_CONTROL: u16 = 0xCF9;

/// A function's place: bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl Bdf {
    pub const fn new(bus: u8, dev: u8, func: u8) -> Bdf {
        Bdf { bus, dev, func }
    }

    /// The CONFIG_ADDRESS value for register `reg` (its dword).
    pub fn address(self, reg: u8) -> u32 {
        0x8000_0000
            | (u32::from(self.bus) << 16)
            | (u32::from(self.dev & 0x1F) << 11)
            | (u32::from(self.func & 7) << 8)
            | u32::from(reg & 0xFC)
    }

    /// The function and register a CONFIG_ADDRESS value selects, if its enable bit is set.
    pub fn from_address(a: u32) -> Option<(Bdf, u8)> {
        (a & 0x8000_0000 != 0).then(|| {
            (
                Bdf::new(
                    (a >> 16) as u8,
                    ((a >> 11) & 0x1F) as u8,
                    ((a >> 8) & 7) as u8,
                ),
                (a & 0xFC) as u8,
            )
        })
    }
}

impl core::fmt::Display for Bdf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

/// Configuration space through mechanism #1: what Vigil uses itself, on the host.
pub trait ConfigSpace {
    fn config_read(&mut self, bdf: Bdf, reg: u8, size: u8) -> u32;
    fn config_write(&mut self, bdf: Bdf, reg: u8, size: u8, value: u32);
}

impl<H: crate::vcpu::Host> ConfigSpace for H {
    fn config_read(&mut self, bdf: Bdf, reg: u8, size: u8) -> u32 {
        self.port_out(CONFIG_ADDRESS, 4, bdf.address(reg));
        self.port_in(CONFIG_DATA + u16::from(reg & 3), size)
    }

    fn config_write(&mut self, bdf: Bdf, reg: u8, size: u8, value: u32) {
        self.port_out(CONFIG_ADDRESS, 4, bdf.address(reg));
        self.port_out(CONFIG_DATA + u16::from(reg & 3), size, value);
    }
}

/// Chipset functions Vigil knows the device-specific registers of (Bochs' i440FX/i440BX
/// machines; Intel datasheets 290549, 290562, 290565).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chip {
    /// i440FX host bridge (8086:1237): PAM 0x59-0x5F, DRB 0x60-0x67, SMRAM 0x72.
    I440fx,
    /// i440BX host bridge (8086:7190): as the FX, plus ESMRAMC 0x73 and the AGP GART.
    I440bx,
    /// PIIX3/PIIX4 PCI-to-ISA bridge (8086:7000, 8086:7110): XBCS 0x4E (BIOS write enable).
    PiixIsa,
    /// PIIX3/PIIX4 IDE (8086:7010, 8086:7111): the bus-master block in BAR4.
    PiixIde,
    /// PIIX4 power management (8086:7113): PMBA 0x40 (64 ports), SMBBA 0x90 (16 ports).
    Piix4Pm,
    /// PIIX3/PIIX4 USB, a UHCI host controller (8086:7020, 8086:7112): its I/O registers in
    /// BAR4 (32 ports), USBCMD first (UHCI 1.1, 2.1.1).
    PiixUhci,
    Other,
}

impl Chip {
    pub fn identify(vendor: u16, device: u16) -> Chip {
        match (vendor, device) {
            (0x8086, 0x1237) => Chip::I440fx,
            (0x8086, 0x7190 | 0x7192) => Chip::I440bx,
            (0x8086, 0x7000 | 0x7110) => Chip::PiixIsa,
            (0x8086, 0x7010 | 0x7111) => Chip::PiixIde,
            (0x8086, 0x7113) => Chip::Piix4Pm,
            (0x8086, 0x7020 | 0x7112) => Chip::PiixUhci,
            _ => Chip::Other,
        }
    }
}

/// One base address register as the scan found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Its register (0x10-0x24; 0x30/0x38 for an expansion ROM).
    pub reg: u8,
    pub kind: BarKind,
    /// The address bits the BAR implements (the sizing mask): it decodes `value & mask` up to
    /// `(value & mask) + size`.
    pub mask: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    /// A 64-bit memory BAR: `reg` holds the low half, `reg + 4` the high half.
    Mem64,
    Rom,
}

impl Bar {
    pub fn size(&self) -> u64 {
        match self.kind {
            BarKind::Io => (!self.mask & 0xFFFF) + 1,
            BarKind::Mem64 => (!self.mask).wrapping_add(1),
            _ => (!self.mask & 0xFFFF_FFFF) + 1,
        }
    }
}

/// One function the scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    /// Class, subclass, programming interface.
    pub class: u32,
    /// Header layout (bit 7, multi-function, removed): 0 device, 1 PCI-to-PCI bridge.
    pub header: u8,
    pub chip: Chip,
    pub bars: Vec<Bar>,
}

impl Function {
    pub fn bar(&self, reg: u8) -> Option<&Bar> {
        self.bars
            .iter()
            .find(|b| b.reg == reg || (b.kind == BarKind::Mem64 && b.reg + 4 == reg))
    }
}

fn bar_regs(header: u8) -> &'static [u8] {
    match header {
        0 => &[0x10, 0x14, 0x18, 0x1C, 0x20, 0x24],
        1 => &[0x10, 0x14],
        _ => &[],
    }
}

/// Sizes one BAR (PCI 3.0, 6.2.5.1): all ones, read back, restore. Decoding is off meanwhile.
fn size_bar<C: ConfigSpace>(c: &mut C, bdf: Bdf, reg: u8) -> (u32, u32) {
    let old = c.config_read(bdf, reg, 4);
    c.config_write(bdf, reg, 4, 0xFFFF_FFFF);
    let mask = c.config_read(bdf, reg, 4);
    c.config_write(bdf, reg, 4, old);
    (old, mask)
}

/// Every function on bus 0 and the buses behind its bridges, with its BARs sized.
pub fn scan<C: ConfigSpace>(c: &mut C) -> Vec<Function> {
    let mut found = Vec::new();
    let mut buses = alloc::vec![0u8];
    let mut seen = [false; 256];
    while let Some(bus) = buses.pop() {
        if core::mem::replace(&mut seen[bus as usize], true) {
            continue;
        }
        for dev in 0..32u8 {
            for func in 0..8u8 {
                let bdf = Bdf::new(bus, dev, func);
                let id = c.config_read(bdf, 0, 4);
                if id & 0xFFFF == 0xFFFF || id == 0 {
                    if func == 0 {
                        break;
                    }
                    continue;
                }
                let header_raw = c.config_read(bdf, 0x0E, 1) as u8;
                let header = header_raw & 0x7F;
                let f = scan_function(c, bdf, id, header);
                if header == 1 {
                    buses.push(c.config_read(bdf, 0x19, 1) as u8);
                }
                found.push(f);
                if func == 0 && header_raw & 0x80 == 0 {
                    break;
                }
            }
        }
    }
    found.sort_by_key(|f| f.bdf);
    found
}

fn scan_function<C: ConfigSpace>(c: &mut C, bdf: Bdf, id: u32, header: u8) -> Function {
    let class = c.config_read(bdf, 0x08, 4) >> 8;
    let command = c.config_read(bdf, 0x04, 2);
    // No decoding while a BAR holds all ones.
    c.config_write(bdf, 0x04, 2, command & !0x3);
    let mut bars = Vec::new();
    let regs = bar_regs(header);
    let mut i = 0;
    while i < regs.len() {
        let reg = regs[i];
        i += 1;
        let (old, mask) = size_bar(c, bdf, reg);
        if mask == 0 || mask == 0xFFFF_FFFF && old == 0xFFFF_FFFF {
            continue;
        }
        if old & 1 == 1 {
            bars.push(Bar {
                reg,
                kind: BarKind::Io,
                mask: u64::from(mask & 0xFFFC) | 0xFFFF_FFFF_FFFF_0000,
            });
        } else if (old >> 1) & 3 == 2 && i < regs.len() {
            let (_, high) = size_bar(c, bdf, regs[i]);
            i += 1;
            bars.push(Bar {
                reg,
                kind: BarKind::Mem64,
                mask: (u64::from(high) << 32) | u64::from(mask & 0xFFFF_FFF0),
            });
        } else {
            bars.push(Bar {
                reg,
                kind: BarKind::Mem32,
                mask: u64::from(mask & 0xFFFF_FFF0) | 0xFFFF_FFFF_0000_0000,
            });
        }
    }
    let rom = if header == 1 { 0x38 } else { 0x30 };
    if header <= 1 {
        let (_, mask) = size_bar(c, bdf, rom);
        if mask & 0xFFFF_F800 != 0 {
            bars.push(Bar {
                reg: rom,
                kind: BarKind::Rom,
                mask: u64::from(mask & 0xFFFF_F800) | 0xFFFF_FFFF_0000_0000,
            });
        }
    }
    c.config_write(bdf, 0x04, 2, command);
    Function {
        bdf,
        vendor: id as u16,
        device: (id >> 16) as u16,
        class,
        header,
        chip: Chip::identify(id as u16, (id >> 16) as u16),
        bars,
    }
}

/// The command register's bits (PCI 3.0, 6.2.2).
pub const COMMAND_IO: u32 = 1 << 0;
pub const COMMAND_MEMORY: u32 = 1 << 1;
pub const COMMAND_BUS_MASTER: u32 = 1 << 2;

/// i440FX/BX registers (Intel 290549 3.3).
pub const SMRAM: u8 = 0x72;
pub const SMRAM_D_OPEN: u32 = 1 << 6;
pub const SMRAM_D_LCK: u32 = 1 << 4;
pub const SMRAM_G_SMRAME: u32 = 1 << 3;
/// PIIX XBCS bit 2: BIOS write enable (Intel 290550 2.2.9).
const XBCS: u8 = 0x4E;
const XBCS_BIOS_WRITE: u32 = 1 << 2;
/// PIIX4 PMBA and SMBBA (Intel 290562 7.2.1, 7.2.10).
pub const PMBA: u8 = 0x40;
pub const PM_BLOCK_SIZE: u16 = 64;
const SMB_BLOCK_SIZE: u16 = 16;
/// PIIX IDE BMIBA: BAR4, 16 ports (Intel 290562 5.1.9).
pub const BMIBA: u8 = 0x20;
pub const BM_BLOCK_SIZE: u16 = 16;
/// PIIX USB USBBA: BAR4, 32 ports (Intel 290562 6.1.9).
pub const USBBA: u8 = 0x20;
pub const USB_BLOCK_SIZE: u16 = 32;

/// A decoder whose ports Vigil traps and follows when the guest moves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Followed {
    /// The IDE bus-master block (BAR4 of a PIIX IDE function).
    BusMaster,
    /// The PIIX4 power-management block (PMBA), which holds PM1a_CNT.
    PmBlock,
    /// A UHCI host controller's registers (BAR4), whose run bit Vigil holds off when its DMA
    /// may not run.
    UsbHost,
}

/// What one configuration register of `f` is, for the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Command,
    Bar(Bar),
    /// A type-1 header's I/O, memory or prefetchable window (PCI-to-PCI Bridge Architecture
    /// 1.2, 3.2.5.6-3.2.5.9), by its registers.
    BridgeWindow,
    IoBase {
        size: u16,
        followed: Option<Followed>,
    },
    Smram,
    /// Registers that decide which addresses are DRAM, or map memory elsewhere (the GART):
    /// the firmware's, never changed.
    Locked,
    Xbcs,
    Other,
}

fn field(f: &Function, reg: u8) -> Field {
    let dword = reg & 0xFC;
    match (f.chip, reg) {
        (_, 0x04 | 0x05) => return Field::Command,
        (Chip::PiixIde, 0x20..=0x23) => {
            return Field::IoBase {
                size: BM_BLOCK_SIZE,
                followed: Some(Followed::BusMaster),
            }
        }
        (Chip::PiixUhci, 0x20..=0x23) => {
            return Field::IoBase {
                size: USB_BLOCK_SIZE,
                followed: Some(Followed::UsbHost),
            }
        }
        (Chip::I440fx | Chip::I440bx, SMRAM) | (Chip::I440bx, 0x73) => return Field::Smram,
        // DRAM control and timing, DRAM row boundaries (290549 3.3.15-3.3.19).
        (Chip::I440fx | Chip::I440bx, 0x57 | 0x58 | 0x60..=0x67) => return Field::Locked,
        // The AGP aperture enable (PACCFG bit 9) and the GART (APSIZE, AGPCTRL, ATTBASE).
        (Chip::I440bx, 0x51 | 0xB0..=0xBB) => return Field::Locked,
        (Chip::PiixIsa, XBCS) => return Field::Xbcs,
        (Chip::Piix4Pm, 0x40..=0x43) => {
            return Field::IoBase {
                size: PM_BLOCK_SIZE,
                followed: Some(Followed::PmBlock),
            }
        }
        (Chip::Piix4Pm, 0x90..=0x93) => {
            return Field::IoBase {
                size: SMB_BLOCK_SIZE,
                followed: None,
            }
        }
        _ => {}
    }
    if let Some(b) = f.bar(dword) {
        return Field::Bar(*b);
    }
    if f.header == 1 && matches!(dword, 0x1C | 0x20 | 0x24) {
        return Field::BridgeWindow;
    }
    Field::Other
}

/// What the policy needs to know about the rest of the machine.
pub trait Judge {
    /// Whether `[start, end)` of memory touches Vigil's.
    fn memory_is_vigils(&self, start: u64, end: u64) -> bool;
    /// The first port of `ports` Vigil owns, not counting `except` (a followed decoder's own
    /// trap).
    fn port_is_vigils(&self, first: u16, last: u16, except: Option<Followed>) -> Option<u16>;
    /// Whether `f` may master the bus (its DMA mediated, or an IOMMU confining it).
    fn may_master(&self, f: &Function) -> bool;
}

/// A refused change, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    BusMaster,
    MemoryOverVigil { start: u64, end: u64 },
    PortOverVigil { port: u16 },
    Smram,
    Locked,
    BiosWrite,
}

/// The outcome of the policy for one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The value to write, over the same bytes as the guest's access: the guest's, with refused
    /// fields put back.
    pub value: u32,
    pub refused: Option<Refusal>,
    /// A followed decoder that moves: (which, old base, new base); `None` = not decoding.
    pub moved: Option<(Followed, Option<u16>, Option<u16>)>,
}

/// Merges an access of `size` bytes at `reg` (value `v`) into the dword `old` (at `reg & !3`).
pub fn merge(old: u32, reg: u8, size: u8, v: u32) -> u32 {
    let shift = 8 * u32::from(reg & 3);
    let mask = match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    } << shift;
    (old & !mask) | ((v << shift) & mask)
}

/// The bytes of the access, out of a dword.
pub fn extract(dword: u32, reg: u8, size: u8) -> u32 {
    let v = dword >> (8 * u32::from(reg & 3));
    match size {
        1 => v & 0xFF,
        2 => v & 0xFFFF,
        _ => v,
    }
}

/// An I/O decoder's base from its register value (bit 0 set: I/O space), or `None` if the
/// register does not select I/O space.
fn io_base(value: u32, size: u16) -> Option<u16> {
    (value & 1 == 1).then(|| (value as u16) & !(size - 1) & !3)
}

/// Judges a write of `size` bytes at `reg` of `f`, given the dword's current value `old` (and
/// for a 64-bit BAR, the other half `other`). Pure: the caller reads and writes the device.
pub fn judge_write(
    f: &Function,
    reg: u8,
    size: u8,
    value: u32,
    old: u32,
    other: u32,
    j: &dyn Judge,
) -> Verdict {
    // An access whose bytes belong to different fields (a dword over command and status, over
    // SMRAM and its neighbours) is judged byte by byte, each on what the earlier ones left.
    let first = field(f, reg);
    if (1..size).any(|i| field(f, reg + i) != first) {
        let mut dword = old;
        let mut verdict = Verdict {
            value: 0,
            refused: None,
            moved: None,
        };
        for i in 0..size {
            let byte = (value >> (8 * i)) & 0xFF;
            let v = judge_byte(f, reg + i, byte, dword, other, j);
            dword = merge(dword, reg + i, 1, v.value);
            verdict.refused = verdict.refused.or(v.refused);
            verdict.moved = verdict.moved.or(v.moved);
        }
        verdict.value = extract(dword, reg, size);
        return verdict;
    }
    judge_byte_or_more(f, reg, size, value, old, other, j)
}

fn judge_byte(f: &Function, reg: u8, byte: u32, old: u32, other: u32, j: &dyn Judge) -> Verdict {
    judge_byte_or_more(f, reg, 1, byte, old, other, j)
}

/// Judges an access all of whose bytes belong to one field.
fn judge_byte_or_more(
    f: &Function,
    reg: u8,
    size: u8,
    value: u32,
    old: u32,
    other: u32,
    j: &dyn Judge,
) -> Verdict {
    let dword = reg & 0xFC;
    let new = merge(old, reg, size, value);
    let keep = |why| Verdict {
        value: extract(old, reg, size),
        refused: Some(why),
        moved: None,
    };
    let pass = |v: u32| Verdict {
        value: extract(v, reg, size),
        refused: None,
        moved: None,
    };
    match field(f, reg) {
        Field::Command => {
            if new & COMMAND_BUS_MASTER != 0 && old & COMMAND_BUS_MASTER == 0 && !j.may_master(f) {
                return Verdict {
                    value: extract(new & !COMMAND_BUS_MASTER, reg, size),
                    refused: Some(Refusal::BusMaster),
                    moved: None,
                };
            }
            pass(new)
        }
        Field::Bar(bar) => {
            let base = match bar.kind {
                BarKind::Io => {
                    let base = u64::from(new & 0xFFFC) & bar.mask;
                    let last = base + bar.size() - 1;
                    if let Some(port) = j.port_is_vigils(base as u16, last.min(0xFFFF) as u16, None)
                    {
                        return keep(Refusal::PortOverVigil { port });
                    }
                    return pass(new);
                }
                BarKind::Mem64 if dword == bar.reg => {
                    ((u64::from(other) << 32) | u64::from(new & 0xFFFF_FFF0)) & bar.mask
                }
                BarKind::Mem64 => {
                    ((u64::from(new) << 32) | u64::from(other & 0xFFFF_FFF0)) & bar.mask
                }
                BarKind::Rom if new & 1 == 0 => return pass(new),
                _ => u64::from(new & 0xFFFF_FFF0) & bar.mask,
            };
            let end = base.saturating_add(bar.size());
            if j.memory_is_vigils(base, end) {
                return keep(Refusal::MemoryOverVigil { start: base, end });
            }
            pass(new)
        }
        Field::BridgeWindow => {
            // Judge the window the bridge would forward after the write, as a range.
            if let Some((start, end, io)) = bridge_window(dword, new, other) {
                if io {
                    if let Some(port) =
                        j.port_is_vigils(start as u16, (end - 1).min(0xFFFF) as u16, None)
                    {
                        return keep(Refusal::PortOverVigil { port });
                    }
                } else if j.memory_is_vigils(start, end) {
                    return keep(Refusal::MemoryOverVigil { start, end });
                }
            }
            pass(new)
        }
        Field::IoBase {
            size: block,
            followed,
        } => {
            let (old_base, new_base) = (io_base(old, block), io_base(new, block));
            if new_base == old_base {
                return pass(new);
            }
            if let Some(b) = new_base {
                if let Some(port) = j.port_is_vigils(b, b.saturating_add(block - 1), followed) {
                    return keep(Refusal::PortOverVigil { port });
                }
            }
            Verdict {
                value: extract(new, reg, size),
                refused: None,
                moved: followed.map(|w| (w, old_base, new_base)),
            }
        }
        Field::Smram => keep(Refusal::Smram),
        Field::Locked => {
            if new == old {
                pass(new)
            } else {
                keep(Refusal::Locked)
            }
        }
        Field::Xbcs => {
            // XBCS is byte 2 of its dword: BIOS write enable may not go from 0 to 1.
            let bit = XBCS_BIOS_WRITE << (8 * u32::from(XBCS & 3));
            if new & bit != 0 && old & bit == 0 {
                return Verdict {
                    value: extract(new & !bit, reg, size),
                    refused: Some(Refusal::BiosWrite),
                    moved: None,
                };
            }
            pass(new)
        }
        Field::Other => pass(new),
    }
}

/// A bridge's forwarding window after a write to its `dword` (`other`: the paired register for
/// the 32-bit I/O and 64-bit prefetchable upper halves, which the policy treats as 0 when it
/// cannot tell). Returns `(start, end, is_io)`.
fn bridge_window(dword: u8, new: u32, other: u32) -> Option<(u64, u64, bool)> {
    let _ = other;
    match dword {
        0x1C => {
            let base = u64::from(new & 0xF0) << 8;
            let limit = (u64::from((new >> 8) & 0xF0) << 8) | 0xFFF;
            (limit >= base).then_some((base, limit + 1, true))
        }
        0x20 | 0x24 => {
            let base = u64::from(new & 0xFFF0) << 16;
            let limit = (u64::from((new >> 16) & 0xFFF0) << 16) | 0xF_FFFF;
            (limit >= base).then_some((base, limit + 1, false))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
