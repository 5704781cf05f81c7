//! Walking an EPT hierarchy (SDM Vol. 3C 29.3.2).

use super::{entry, EptPerms, MemType, PhysRead, Translation};
use core::fmt;

/// Why a guest-physical address does not translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The entry at `level` allows no access at all: an access would cause an EPT violation.
    NotPresent { level: u8, entry: u64 },
    /// The entry at `level` would cause an EPT misconfiguration (SDM Vol. 3C 29.3.3.1).
    Misconfigured { level: u8, entry: u64 },
    /// The table at `phys` could not be read.
    Unreadable { phys: u64 },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WalkError::NotPresent { level, entry } => {
                write!(f, "not present at level {level} (entry {entry:#x})")
            }
            WalkError::Misconfigured { level, entry } => {
                write!(f, "misconfigured at level {level} (entry {entry:#x})")
            }
            WalkError::Unreadable { phys } => write!(f, "EPT table at {phys:#x} unreadable"),
        }
    }
}

/// The bits of `gpa` that index the table at `level` (4 = PML4 ... 1 = PT).
pub(super) const fn index(gpa: u64, level: u8) -> usize {
    ((gpa >> (12 + 9 * (level as u32 - 1))) & 0x1ff) as usize
}

/// Bytes one entry at `level` covers.
pub(super) const fn coverage(level: u8) -> u64 {
    1 << (12 + 9 * (level as u32 - 1))
}

/// Whether the entry at `level` maps a page rather than pointing to a table.
pub(super) const fn is_leaf(e: u64, level: u8) -> bool {
    level == 1 || ((level == 2 || level == 3) && e & entry::LARGE != 0)
}

/// Walks from the PML4 at `pml4` through entries read by `read_entry` (given the entry's
/// physical address).
pub(super) fn walk_with(
    pml4: u64,
    gpa: u64,
    read_entry: &mut dyn FnMut(u64) -> Option<u64>,
) -> Result<Translation, WalkError> {
    let mut table = pml4 & entry::ADDRESS;
    let mut perms = EptPerms::RWX;
    for level in (1..=4u8).rev() {
        let at = table + 8 * index(gpa, level) as u64;
        let e = read_entry(at).ok_or(WalkError::Unreadable { phys: table })?;
        let here = EptPerms::from_bits(e);
        if here == EptPerms::NONE {
            return Err(WalkError::NotPresent { level, entry: e });
        }
        // Write-only entries, and a large-page bit in a PML4E, are misconfigurations.
        if !here.is_valid() || (level == 4 && e & entry::LARGE != 0) {
            return Err(WalkError::Misconfigured { level, entry: e });
        }
        perms = perms.and(here);
        if is_leaf(e, level) {
            let memtype =
                MemType::from_bits(((e & entry::MEMTYPE_MASK) >> entry::MEMTYPE_SHIFT) as u8)
                    .ok_or(WalkError::Misconfigured { level, entry: e })?;
            let size = coverage(level);
            // The address bits below a large page's size are reserved.
            if e & entry::ADDRESS & (size - 1) != 0 {
                return Err(WalkError::Misconfigured { level, entry: e });
            }
            let base = e & entry::ADDRESS;
            return Ok(Translation {
                hpa: base | (gpa & (size - 1)),
                perms,
                memtype,
                ignore_pat: e & entry::IGNORE_PAT != 0,
                level,
            });
        }
        table = e & entry::ADDRESS;
    }
    unreachable!("level 1 entries are always leaves")
}

/// Translates `gpa` through the EPT hierarchy whose PML4 is at `pml4` (an EPTP value works too:
/// its low bits are ignored), reading tables through `mem`.
pub fn walk(mem: &dyn PhysRead, pml4: u64, gpa: u64) -> Result<Translation, WalkError> {
    walk_with(pml4, gpa, &mut |phys| mem.read_u64(phys))
}
