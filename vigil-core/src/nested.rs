//! Nested paging as the exit layer sees it: the permissions a guest-physical page has in the
//! second-level tables (Intel EPT, SDM Vol. 3C 29.3; AMD NPT, APM Vol. 2 15.25). The backend
//! translates them into its own entry format.

use core::fmt;

/// Read/write/execute permissions of a guest-physical page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Perms {
    pub const NONE: Perms = Perms::from_bits(0);
    pub const R: Perms = Perms::from_bits(1);
    pub const RW: Perms = Perms::from_bits(3);
    pub const X: Perms = Perms::from_bits(4);
    pub const RX: Perms = Perms::from_bits(5);
    pub const RWX: Perms = Perms::from_bits(7);

    /// Bit 0 read, bit 1 write, bit 2 execute (the order of EPT entries).
    pub const fn bits(self) -> u64 {
        (self.read as u64) | ((self.write as u64) << 1) | ((self.exec as u64) << 2)
    }

    pub const fn from_bits(b: u64) -> Perms {
        Perms {
            read: b & 1 != 0,
            write: b & 2 != 0,
            exec: b & 4 != 0,
        }
    }

    /// The access allowed by both.
    pub const fn and(self, other: Perms) -> Perms {
        Perms::from_bits(self.bits() & other.bits())
    }
}

impl fmt::Display for Perms {
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
