//! Guest page-table walks: guest-virtual to guest-physical under every IA-32 paging mode
//! (SDM Vol. 3A chapter 4), with the permission checks a processor makes and the #PF error code
//! it would report. Guest-physical memory is read through [`PhysRead`].

#[cfg(test)]
mod tests;
mod walk;

pub use walk::translate;

use crate::regs::*;
use core::fmt;

/// Reads physical memory for a page walk (guest page tables here, EPT or NPT tables in a
/// backend). `None` means the address cannot be read.
pub trait PhysRead {
    fn read_u64(&self, phys: u64) -> Option<u64>;

    /// A 32-bit read, for 32-bit paging structures; by default from the enclosing u64.
    fn read_u32(&self, phys: u64) -> Option<u32> {
        let q = self.read_u64(phys & !7)?;
        Some((q >> ((phys & 4) * 8)) as u32)
    }
}

impl<F: Fn(u64) -> Option<u64>> PhysRead for F {
    fn read_u64(&self, phys: u64) -> Option<u64> {
        self(phys)
    }
}

/// The paging mode selected by CR0.PG, CR4.PAE, EFER.LMA and CR4.LA57 (SDM Vol. 3A 4.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// Paging off: linear addresses are physical.
    Off,
    Bits32,
    Pae,
    Level4,
    Level5,
}

/// The registers that decide a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingRegs {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// MAXPHYADDR: address bits at and above it in paging entries are reserved.
    pub phys_addr_width: u8,
}

impl PagingRegs {
    pub fn mode(&self) -> PagingMode {
        if self.cr0 & CR0_PG == 0 {
            PagingMode::Off
        } else if self.cr4 & CR4_PAE == 0 {
            PagingMode::Bits32
        } else if self.efer & EFER_LMA == 0 && self.efer & EFER_LME == 0 {
            PagingMode::Pae
        } else if self.cr4 & CR4_LA57 != 0 {
            PagingMode::Level5
        } else {
            PagingMode::Level4
        }
    }

    fn nxe(&self) -> bool {
        self.efer & EFER_NXE != 0
    }
}

/// What kind of access is being translated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    /// A CPL-3 access (user mode).
    pub user: bool,
    /// An instruction fetch.
    pub fetch: bool,
}

impl Access {
    pub const READ: Access = Access {
        write: false,
        user: false,
        fetch: false,
    };
    pub const WRITE: Access = Access {
        write: true,
        user: false,
        fetch: false,
    };
    pub const FETCH: Access = Access {
        write: false,
        user: false,
        fetch: true,
    };

    /// The same access made from user mode.
    pub const fn user(self) -> Access {
        Access { user: true, ..self }
    }
}

/// A successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestTranslation {
    pub gpa: u64,
    /// The level of the leaf: 1 = 4 KiB page, 2 = 2 MiB (4 MiB under 32-bit paging), 3 = 1 GiB.
    /// 0 with paging off.
    pub level: u8,
    pub page_size: u64,
    /// Writable at every level.
    pub writable: bool,
    /// User-accessible at every level.
    pub user: bool,
    /// Not execute-disabled at any level.
    pub executable: bool,
    pub global: bool,
}

impl fmt::Display for GuestTranslation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |on, ch| if on { ch } else { '-' };
        write!(
            f,
            "gpa {:#x} ({} KiB page) {}{}{}{}",
            self.gpa,
            self.page_size / 1024,
            c(true, 'r'),
            c(self.writable, 'w'),
            c(self.executable, 'x'),
            c(self.user, 'u')
        )
    }
}

/// Why a walk failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultReason {
    NotPresent,
    /// A reserved bit is set in a paging entry (SDM Vol. 3A 4.13 "RSVD").
    ReservedBit,
    /// A write to a page not writable at every level (by user mode, or with CR0.WP set).
    WriteProtected,
    /// A user-mode access to a supervisor page.
    UserAccessToSupervisor,
    /// A fetch from an execute-disabled page.
    NoExecute,
    /// A supervisor fetch from a user page with CR4.SMEP set.
    Smep,
    /// The address is not canonical: the processor raises #GP, not #PF.
    NonCanonical,
    /// A paging structure lies at a guest-physical address that cannot be read.
    Unreadable {
        gpa: u64,
    },
}

/// A failed walk, with what a processor would report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    pub reason: FaultReason,
    /// The level whose entry caused the fault (for permission faults, the leaf's level).
    pub level: u8,
    /// That entry's value (0 if none was read).
    pub entry: u64,
    pub access: Access,
    /// Whether an instruction fetch would set the I/D bit (NXE or SMEP on; SDM Vol. 3A 4.7).
    pub(crate) id_applies: bool,
}

impl PageFault {
    /// Whether the processor reports this as #PF (rather than #GP or not at all).
    pub fn is_page_fault(&self) -> bool {
        !matches!(
            self.reason,
            FaultReason::NonCanonical | FaultReason::Unreadable { .. }
        )
    }

    /// The #PF error code (SDM Vol. 3A 4.7): P (bit 0) for faults on present entries, W/R (1),
    /// U/S (2), RSVD (3) and I/D (4).
    pub fn error_code(&self) -> u32 {
        let present = !matches!(self.reason, FaultReason::NotPresent);
        (present as u32)
            | ((self.access.write as u32) << 1)
            | ((self.access.user as u32) << 2)
            | (((self.reason == FaultReason::ReservedBit) as u32) << 3)
            | (((self.access.fetch && self.id_applies) as u32) << 4)
    }
}

impl fmt::Display for PageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            FaultReason::NotPresent => "not present",
            FaultReason::ReservedBit => "reserved bit set",
            FaultReason::WriteProtected => "write to a read-only page",
            FaultReason::UserAccessToSupervisor => "user access to a supervisor page",
            FaultReason::NoExecute => "fetch from a no-execute page",
            FaultReason::Smep => "supervisor fetch from a user page (SMEP)",
            FaultReason::NonCanonical => return f.write_str("non-canonical address (#GP)"),
            FaultReason::Unreadable { gpa } => {
                return write!(f, "paging structure at gpa {gpa:#x} unreadable");
            }
        };
        write!(
            f,
            "#PF({:#x}): {what} at level {} (entry {:#x})",
            self.error_code(),
            self.level,
            self.entry
        )
    }
}
