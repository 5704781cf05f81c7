//! Nested page tables (APM Vol. 2 15.25): guest-physical to system-physical translation in the
//! ordinary x86 page-table format of the host's paging mode — for a 64-bit host, 4-level
//! long-mode tables (Vol. 2 5.3) rooted at N_CR3. Every nested access counts as a user access
//! (15.25.5), so every entry has U/S set; there is no separate read permission, so "not
//! readable" is "not present" and execute-only pages cannot be expressed (NX needs the host's
//! EFER.NXE). Memory types: the leaves select PAT entry 0 (write-back in the power-on PAT) and
//! the host's MTRRs apply to the system-physical address (15.25.8), so device ranges stay
//! uncacheable as on bare metal. Accessed and dirty bits are preset in every entry, so a
//! processor that maintains them never writes the tables.
//!
//! Because the format is the host's own, walking these tables is walking ordinary page tables:
//! [`walk`] uses `x86_arch`'s page-table walker with user-mode access.

mod builder;
#[cfg(test)]
mod tests;

pub use builder::{ArenaFrames, NptBuilder};

use core::fmt;
use x86_arch::paging::{self, Access, PageFault, PagingRegs, PhysRead};
use x86_arch::regs::{CR0_PE, CR0_PG, CR0_WP, CR4_PAE, EFER_LMA, EFER_LME, EFER_NXE};

/// Bits of a long-mode paging entry as nested paging uses them (Vol. 2 5.4.1).
pub mod entry {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    /// U/S: always set — nested accesses are user accesses.
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    /// PS in a PDPE or PDE: the entry maps a 1-GiB or 2-MiB page.
    pub const LARGE: u64 = 1 << 7;
    /// Bit 9 is available to software; the builder marks its leaves with it, so a page whose
    /// permissions were all removed (not present) still remembers its address.
    pub const SOFTWARE_MAPPED: u64 = 1 << 9;
    /// Bits 51:12: the next table or the page.
    pub const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
    pub const NO_EXECUTE: u64 = 1 << 63;
}

/// Read/write/execute permissions of a nested mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NptPerms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl NptPerms {
    pub const NONE: NptPerms = NptPerms::from_bits(0);
    pub const R: NptPerms = NptPerms::from_bits(1);
    pub const RW: NptPerms = NptPerms::from_bits(3);
    pub const RX: NptPerms = NptPerms::from_bits(5);
    pub const RWX: NptPerms = NptPerms::from_bits(7);

    /// Bit 0 read, bit 1 write, bit 2 execute (the exit layer's order).
    pub const fn bits(self) -> u64 {
        (self.read as u64) | ((self.write as u64) << 1) | ((self.exec as u64) << 2)
    }

    pub const fn from_bits(b: u64) -> NptPerms {
        NptPerms {
            read: b & 1 != 0,
            write: b & 2 != 0,
            exec: b & 4 != 0,
        }
    }

    /// The entry bits for these permissions: `None` for combinations the format cannot express
    /// (write or execute without read), or no-execute when NX is not available.
    pub const fn entry_bits(self, nx: bool) -> Option<u64> {
        if !self.read {
            return if self.write || self.exec {
                None
            } else {
                Some(0)
            };
        }
        if !self.exec && !nx {
            return None;
        }
        Some(
            entry::PRESENT
                | entry::USER
                | if self.write { entry::WRITABLE } else { 0 }
                | if self.exec { 0 } else { entry::NO_EXECUTE },
        )
    }
}

impl fmt::Display for NptPerms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |on, ch| if on { ch } else { '-' };
        write!(
            f,
            "{}{}{}",
            c(self.read, 'r'),
            c(self.write, 'w'),
            c(self.exec, 'x')
        )
    }
}

/// The size of a page a nested leaf maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    Size4K,
    Size2M,
    /// With the Page1GB feature (CPUID Fn8000_0001 EDX[26]), as in the host's own paging.
    Size1G,
}

impl PageSize {
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
            PageSize::Size1G => 1 << 30,
        }
    }

    /// 1 = PT, 2 = PD, 3 = PDPT.
    pub const fn level(self) -> u8 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }
}

/// Supplies the 4-KiB frames nested tables live in.
pub trait FrameAllocator {
    /// The physical address of a newly allocated, zeroed 4-KiB frame.
    fn alloc_zeroed(&mut self) -> Option<u64>;
    /// The frame at `phys` as a table (in the hypervisor physical equals virtual).
    fn table(&mut self, phys: u64) -> &mut [u64; 512];
    /// Takes back a frame the builder no longer uses. By default frames are kept.
    fn free(&mut self, _phys: u64) {}
}

/// Why the builder refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NptError {
    /// Addresses and lengths must be multiples of 4 KiB.
    Unaligned,
    /// Write or execute without read, or no-execute without NX: the format cannot say it.
    Inexpressible,
    /// Beyond the 48 bits 4-level tables translate.
    OutOfRange,
    OutOfFrames,
}

impl fmt::Display for NptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NptError::Unaligned => "address or length not a multiple of 4 KiB",
            NptError::Inexpressible => {
                "permissions nested page tables cannot express (write or execute without read, \
                 or no-execute without NX)"
            }
            NptError::OutOfRange => "range beyond the 256 TiB 4-level tables cover",
            NptError::OutOfFrames => "no frame left for a nested table",
        })
    }
}

/// Where a guest-physical address leads through the nested tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub hpa: u64,
    pub perms: NptPerms,
    /// 1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB.
    pub level: u8,
}

impl fmt::Display for Translation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = match self.level {
            3 => "1G",
            2 => "2M",
            _ => "4K",
        };
        write!(f, "hpa {:#x} {} {size}", self.hpa, self.perms)
    }
}

/// The paging registers under which nested tables rooted at `ncr3` are walked: a 64-bit host
/// with PAE, long mode and (if `nx`) NXE.
pub fn walk_regs(ncr3: u64, phys_addr_width: u8, nx: bool) -> PagingRegs {
    PagingRegs {
        cr0: CR0_PE | CR0_PG | CR0_WP,
        cr3: ncr3 & entry::ADDRESS,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA | if nx { EFER_NXE } else { 0 },
        phys_addr_width,
    }
}

/// Where `gpa` leads through the tables at `ncr3`, read through `mem`, with the permissions the
/// whole walk allows; the page fault the walk ends in if it does not translate.
pub fn walk(
    mem: &dyn PhysRead,
    ncr3: u64,
    gpa: u64,
    phys_addr_width: u8,
) -> Result<Translation, PageFault> {
    let regs = walk_regs(ncr3, phys_addr_width, true);
    let t = paging::translate(mem, &regs, gpa, Access::READ.user())?;
    Ok(Translation {
        hpa: t.gpa,
        perms: NptPerms {
            read: true,
            write: t.writable,
            exec: t.executable,
        },
        level: t.level,
    })
}
