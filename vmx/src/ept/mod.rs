//! Extended page tables (SDM Vol. 3C 29.3): entry formats, the EPT pointer, a builder that maps
//! guest-physical ranges with the largest pages that fit, a walker for any EPT hierarchy, and
//! the INVEPT/INVVPID instructions.

mod builder;
mod invalidate;
#[cfg(test)]
mod tests;
mod walk;

pub use crate::mtrr::MemType;
pub use builder::{ArenaFrames, EptBuilder};
pub use invalidate::{invept, invvpid, InveptType, InvvpidType};
pub use walk::{walk, WalkError};

use core::fmt;

/// Bits of an EPT paging-structure entry (SDM Vol. 3C 29.3.2, Tables 29-1 to 29-6).
pub mod entry {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const EXECUTE: u64 = 1 << 2;
    pub const RWX: u64 = READ | WRITE | EXECUTE;
    /// Bits 5:3 of a leaf: the EPT memory type.
    pub const MEMTYPE_SHIFT: u32 = 3;
    pub const MEMTYPE_MASK: u64 = 7 << MEMTYPE_SHIFT;
    /// Bit 6 of a leaf: ignore the guest's PAT.
    pub const IGNORE_PAT: u64 = 1 << 6;
    /// Bit 7 of a PDPTE or PDE: the entry maps a 1 GiB or 2 MiB page.
    pub const LARGE: u64 = 1 << 7;
    pub const ACCESSED: u64 = 1 << 8;
    pub const DIRTY: u64 = 1 << 9;
    /// Bit 10: execute access for user-mode linear addresses (mode-based execute control).
    pub const USER_EXECUTE: u64 = 1 << 10;
    /// Bit 11 is ignored by the processor; the builder marks its leaves with it so a page whose
    /// permissions were all removed still remembers its address and type.
    pub const SOFTWARE_MAPPED: u64 = 1 << 11;
    /// Bits 51:12: physical address of the next table or the page.
    pub const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
    /// Bit 63: suppress #VE.
    pub const SUPPRESS_VE: u64 = 1 << 63;
}

/// Read/write/execute permissions of an EPT mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EptPerms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl EptPerms {
    pub const NONE: EptPerms = EptPerms {
        read: false,
        write: false,
        exec: false,
    };
    pub const R: EptPerms = EptPerms {
        read: true,
        write: false,
        exec: false,
    };
    pub const RW: EptPerms = EptPerms {
        read: true,
        write: true,
        exec: false,
    };
    pub const RX: EptPerms = EptPerms {
        read: true,
        write: false,
        exec: true,
    };
    pub const RWX: EptPerms = EptPerms {
        read: true,
        write: true,
        exec: true,
    };

    pub const fn bits(self) -> u64 {
        (self.read as u64) | ((self.write as u64) << 1) | ((self.exec as u64) << 2)
    }

    pub const fn from_bits(b: u64) -> EptPerms {
        EptPerms {
            read: b & 1 != 0,
            write: b & 2 != 0,
            exec: b & 4 != 0,
        }
    }

    /// Write without read is an EPT misconfiguration (SDM Vol. 3C 29.3.3.1).
    pub const fn is_valid(self) -> bool {
        !self.write || self.read
    }

    /// The access allowed by both.
    pub const fn and(self, other: EptPerms) -> EptPerms {
        EptPerms::from_bits(self.bits() & other.bits())
    }
}

impl fmt::Display for EptPerms {
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

/// The size of a page an EPT leaf maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    Size4K,
    Size2M,
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

    /// The paging-structure level holding leaves of this size: 1 = PT, 2 = PD, 3 = PDPT.
    pub const fn level(self) -> u8 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }

    /// The largest page size the processor's EPT supports (SDM Vol. 3D A.10).
    pub fn largest_supported(caps: &crate::caps::VmxCaps) -> PageSize {
        if caps.ept_1g_pages() && caps.ept_2m_pages() {
            PageSize::Size1G
        } else if caps.ept_2m_pages() {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        }
    }
}

/// Where a guest-physical address leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The host-physical address, page offset included.
    pub hpa: u64,
    /// The permissions all entries of the walk allow together.
    pub perms: EptPerms,
    pub memtype: MemType,
    pub ignore_pat: bool,
    /// The level of the leaf: 1 = 4 KiB page, 2 = 2 MiB, 3 = 1 GiB.
    pub level: u8,
}

impl Translation {
    pub const fn page_size(&self) -> PageSize {
        match self.level {
            3 => PageSize::Size1G,
            2 => PageSize::Size2M,
            _ => PageSize::Size4K,
        }
    }
}

impl fmt::Display for Translation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = match self.level {
            3 => "1G",
            2 => "2M",
            _ => "4K",
        };
        write!(
            f,
            "hpa {:#x} {} {} {size}",
            self.hpa, self.perms, self.memtype
        )?;
        if self.ignore_pat {
            f.write_str(" ipat")?;
        }
        Ok(())
    }
}

/// Reads physical memory for a walk (EPT tables here; guest page tables in `x86-arch`).
pub use x86_arch::PhysRead;

/// Supplies the 4-KiB frames EPT tables live in.
pub trait FrameAllocator {
    /// The physical address of a newly allocated, zeroed 4-KiB frame.
    fn alloc_zeroed(&mut self) -> Option<u64>;
    /// The frame at `phys` as a table (in the hypervisor physical equals virtual).
    fn table(&mut self, phys: u64) -> &mut [u64; 512];
    /// Takes back a frame the builder no longer uses. By default frames are kept.
    fn free(&mut self, _phys: u64) {}
}

impl<T: FrameAllocator + ?Sized> FrameAllocator for &mut T {
    fn alloc_zeroed(&mut self) -> Option<u64> {
        (**self).alloc_zeroed()
    }
    fn table(&mut self, phys: u64) -> &mut [u64; 512] {
        (**self).table(phys)
    }
    fn free(&mut self, phys: u64) {
        (**self).free(phys)
    }
}

/// Why the builder refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptError {
    /// Addresses and lengths must be multiples of 4 KiB.
    Unaligned,
    /// Write without read cannot be expressed (SDM Vol. 3C 29.3.3.1).
    WriteWithoutRead,
    /// The range reaches beyond the 48 bits a 4-level EPT translates.
    OutOfRange,
    /// The frame allocator ran dry.
    OutOfFrames,
}

impl fmt::Display for EptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EptError::Unaligned => "address or length not a multiple of 4 KiB",
            EptError::WriteWithoutRead => "write permission without read permission",
            EptError::OutOfRange => "range beyond the 256 TiB a 4-level EPT covers",
            EptError::OutOfFrames => "no frame left for an EPT table",
        })
    }
}

/// The EPT pointer (SDM Vol. 3C 25.6.11): PML4 address, memory type used to access the tables,
/// page-walk length and whether accessed/dirty flags are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eptp(pub u64);

impl Eptp {
    pub const fn new(pml4_phys: u64, memtype: MemType, page_walk_len: u8, ad_bits: bool) -> Eptp {
        Eptp(
            (pml4_phys & entry::ADDRESS)
                | memtype as u64
                | (((page_walk_len as u64).saturating_sub(1) & 7) << 3)
                | ((ad_bits as u64) << 6),
        )
    }
    pub const fn pml4(self) -> u64 {
        self.0 & entry::ADDRESS
    }
    pub const fn memtype(self) -> Option<MemType> {
        MemType::from_bits((self.0 & 7) as u8)
    }
    pub const fn page_walk_len(self) -> u8 {
        ((self.0 >> 3) & 7) as u8 + 1
    }
    pub const fn ad_bits(self) -> bool {
        self.0 & (1 << 6) != 0
    }
}
