//! DMA protection: no bus master may read or write a byte of Vigil's memory.
//!
//! Two ways to get there, behind one question — may this function master the bus, and through
//! what — so that an IOMMU slots in where the machine has one:
//! - [`DmaProtection::Iommu`] (VT-d, AMD-Vi on real hardware): the IOMMU's second-level tables
//!   map guest RAM only, as the EPT does, and every device may master the bus; its DMA is
//!   confined by the hardware, with no trap on the data path.
//! - [`DmaProtection::Mediated`] (no IOMMU, as in Bochs): only functions whose DMA engine Vigil
//!   mediates may master the bus; every other function's bus-master enable stays off (the
//!   command register is Vigil's, `pci.rs`). Today that is the PIIX IDE bus master: its
//!   registers exit, and at every start Vigil copies the guest's PRD table into its own memory,
//!   checks every entry against guest RAM and starts the engine on the copy, so the guest cannot
//!   change the table after the check.
//!
//! The IDE bus-master block (Intel 290562 5.2.1; Bochs iodev/pci_ide.cc), per channel at
//! `base + 8 * channel`: +0 command (bit 0 start, bit 3 direction), +2 status, +4 the PRD
//! table's physical address (dword). A PRD entry is 8 bytes: the region's physical address
//! (bit 0 zero), its byte count in bits 15:1 of the second dword (0 = 64 KiB), end of table in
//! bit 31.

use super::memory::GuestMemory;
use super::pci::{Chip, Function};

/// How DMA is kept out of Vigil's memory on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaProtection {
    /// No IOMMU: only mediated DMA engines may run.
    Mediated,
    /// An IOMMU confines every function to guest RAM.
    Iommu,
}

impl DmaProtection {
    /// Whether `f` may master the bus.
    pub fn may_master(self, f: &Function) -> bool {
        match self {
            DmaProtection::Iommu => true,
            DmaProtection::Mediated => mediator(f).is_some(),
        }
    }
}

/// The DMA engines Vigil knows how to mediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mediator {
    IdeBusMaster,
}

pub fn mediator(f: &Function) -> Option<Mediator> {
    (f.chip == Chip::PiixIde).then_some(Mediator::IdeBusMaster)
}

/// The most PRD entries Vigil copies for one transfer: one page. (Linux's libata uses at most
/// 256; the PIIX allows a table up to a 64 KiB boundary.)
pub const MAX_PRD_ENTRIES: usize = 512;
const PRD_EOT: u32 = 1 << 31;

/// A page of Vigil's memory for one channel's PRD copy.
pub struct PrdPage {
    /// Its physical address (below 4 GiB, dword-aligned: the engine's pointer register).
    pub phys: u32,
    pub bytes: &'static mut [u8; 4096],
}

impl core::fmt::Debug for PrdPage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PrdPage({:#x})", self.phys)
    }
}

/// The guest's view of the bus-master block, and Vigil's copies.
#[derive(Debug, Default)]
pub struct BusMaster {
    /// The PRD pointer each channel's guest wrote (the real register holds Vigil's copy).
    pub prd_pointer: [u32; 2],
    pub pages: [Option<PrdPage>; 2],
    /// Transfers started on a checked copy, and refused.
    pub started: u64,
    pub refused: u64,
}

/// Why a start was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrdRefusal {
    /// The table itself is not guest RAM (entry `index`'s 8 bytes).
    TableNotRam {
        index: usize,
        at: u64,
    },
    /// An entry's region is not guest RAM.
    RegionNotRam {
        index: usize,
        start: u64,
        end: u64,
    },
    /// A region crosses a 64 KiB boundary, which the engine does not allow.
    CrossesBoundary {
        index: usize,
        start: u64,
        end: u64,
    },
    TooLong,
    NoPage,
}

/// The region of one PRD entry: `[start, end)` (Bochs and the PIIX read the count's bits 15:1,
/// 0 meaning 64 KiB; the address's bit 0 is zero on the PIIX and used as is by Bochs, so the
/// range covers both readings).
pub fn region(addr: u32, count: u32) -> (u64, u64) {
    let size = match count & 0xFFFE {
        0 => 0x1_0000,
        n => u64::from(n),
    };
    (u64::from(addr & !1), u64::from(addr) + size)
}

/// Copies the guest's PRD table at `table` (read through `read`, which fails outside guest RAM)
/// into `page`, checking each entry against `memory`. Returns the number of entries.
pub fn copy_prd_table(
    table: u64,
    read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
    memory: &GuestMemory,
    page: &mut [u8; 4096],
) -> Result<usize, PrdRefusal> {
    for index in 0..MAX_PRD_ENTRIES {
        let at = table + 8 * index as u64;
        let mut e = [0u8; 8];
        if !read(at, &mut e) {
            return Err(PrdRefusal::TableNotRam { index, at });
        }
        let addr = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let count = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let (start, end) = region(addr, count);
        if !memory.is_ram(start, end) || memory.touches_vigil(start, end) {
            return Err(PrdRefusal::RegionNotRam { index, start, end });
        }
        if start >> 16 != (end - 1) >> 16 {
            return Err(PrdRefusal::CrossesBoundary { index, start, end });
        }
        page[8 * index..8 * index + 8].copy_from_slice(&e);
        if count & PRD_EOT != 0 {
            return Ok(index + 1);
        }
    }
    Err(PrdRefusal::TooLong)
}
