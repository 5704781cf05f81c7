//! The processors of the machine, from the ACPI MADT (ACPI 6.5 5.2.12, "Multiple APIC
//! Description Table"): every local APIC (type 0) and local x2APIC (type 9) entry, in table
//! order, with the APIC ID Vigil sends its INIT and start-up IPIs to. Plain parsing of bytes,
//! every length checked, tested on the host.

/// The most processors this parse keeps (more are counted and refused by the caller).
pub const MAX_PROCESSORS: usize = 64;

/// One processor the MADT lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Processor {
    /// Local APIC ID (8 bits from a type-0 entry, 32 from a type-9 entry).
    pub apic_id: u32,
    /// Flags bit 0: usable now.
    pub enabled: bool,
    /// Flags bit 1: may be enabled later (hot-add); meaningful when not enabled.
    pub online_capable: bool,
}

impl Processor {
    /// Whether the guest could ever start it: enabled now, or online capable.
    pub fn startable(&self) -> bool {
        self.enabled || self.online_capable
    }
}

/// The processors of a MADT (the whole table, header included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Processors {
    pub list: [Option<Processor>; MAX_PROCESSORS],
    pub count: usize,
    /// Entries beyond [`MAX_PROCESSORS`].
    pub dropped: usize,
}

impl Processors {
    pub fn iter(&self) -> impl Iterator<Item = Processor> + '_ {
        self.list[..self.count].iter().flatten().copied()
    }
}

/// Why a MADT cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MadtError {
    /// Shorter than its header, or its length field disagrees with the bytes.
    Truncated,
    BadSignature,
    /// An entry's length runs past the table or is below 2.
    BadEntry {
        offset: usize,
    },
}

impl core::fmt::Display for MadtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MadtError::Truncated => write!(f, "the MADT is shorter than it says"),
            MadtError::BadSignature => write!(f, "not a MADT (signature is not APIC)"),
            MadtError::BadEntry { offset } => {
                write!(f, "the MADT entry at offset {offset:#x} has a bad length")
            }
        }
    }
}

/// The table header (36 bytes), the local APIC address (4) and flags (4) come before the
/// entries.
const ENTRIES: usize = 44;

pub fn processors(table: &[u8]) -> Result<Processors, MadtError> {
    if table.len() < ENTRIES {
        return Err(MadtError::Truncated);
    }
    if &table[..4] != b"APIC" {
        return Err(MadtError::BadSignature);
    }
    let len = u32::from_le_bytes(table[4..8].try_into().unwrap()) as usize;
    if len < ENTRIES || len > table.len() {
        return Err(MadtError::Truncated);
    }
    let mut out = Processors {
        list: [None; MAX_PROCESSORS],
        count: 0,
        dropped: 0,
    };
    let mut at = ENTRIES;
    while at + 2 <= len {
        let (kind, size) = (table[at], table[at + 1] as usize);
        if size < 2 || at + size > len {
            return Err(MadtError::BadEntry { offset: at });
        }
        let e = &table[at..at + size];
        let flags = |i: usize| {
            e.get(i..i + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        };
        let parsed = match (kind, size) {
            // Processor Local APIC: UID (1), APIC ID (1), flags (4).
            (0, 8) => flags(4).map(|f| (e[3] as u32, f)),
            // Processor Local x2APIC: reserved (2), x2APIC ID (4), flags (4), UID (4).
            (9, 16) => flags(8).map(|f| (u32::from_le_bytes(e[4..8].try_into().unwrap()), f)),
            _ => None,
        };
        if let Some((apic_id, f)) = parsed {
            let p = Processor {
                apic_id,
                enabled: f & 1 != 0,
                online_capable: f & 2 != 0,
            };
            // An x2APIC entry may repeat a processor a local APIC entry listed.
            if !out.iter().any(|q| q.apic_id == p.apic_id) {
                if out.count < MAX_PROCESSORS {
                    out.list[out.count] = Some(p);
                    out.count += 1;
                } else {
                    out.dropped += 1;
                }
            }
        }
        at += size;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn madt(entries: &[&[u8]]) -> Vec<u8> {
        let mut t = Vec::from(&b"APIC"[..]);
        t.extend_from_slice(&[0; 4]);
        t.resize(36, 0);
        t.extend_from_slice(&0xFEE0_0000u32.to_le_bytes());
        t.extend_from_slice(&1u32.to_le_bytes());
        for e in entries {
            t.extend_from_slice(e);
        }
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t
    }

    fn lapic(uid: u8, id: u8, flags: u32) -> Vec<u8> {
        let mut e = alloc::vec![0u8, 8, uid, id];
        e.extend_from_slice(&flags.to_le_bytes());
        e
    }

    #[test]
    fn bochs_four_processors_and_an_io_apic() {
        let io_apic: &[u8] = &[1, 12, 4, 0, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0];
        let t = madt(&[
            &lapic(0, 0, 1),
            &lapic(1, 1, 1),
            io_apic,
            &lapic(2, 2, 1),
            &lapic(3, 3, 1),
        ]);
        let p = processors(&t).unwrap();
        let ids: Vec<u32> = p.iter().map(|p| p.apic_id).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
        assert!(p.iter().all(|p| p.enabled && p.startable()));
    }

    #[test]
    fn x2apic_entries_disabled_and_online_capable() {
        let mut x2 = alloc::vec![9u8, 16, 0, 0];
        x2.extend_from_slice(&300u32.to_le_bytes());
        x2.extend_from_slice(&1u32.to_le_bytes());
        x2.extend_from_slice(&7u32.to_le_bytes());
        let mut dup = alloc::vec![9u8, 16, 0, 0];
        dup.extend_from_slice(&0u32.to_le_bytes());
        dup.extend_from_slice(&1u32.to_le_bytes());
        dup.extend_from_slice(&0u32.to_le_bytes());
        let t = madt(&[&lapic(0, 0, 1), &lapic(1, 4, 0), &lapic(2, 5, 2), &x2, &dup]);
        let p: Vec<Processor> = processors(&t).unwrap().iter().collect();
        assert_eq!(p.len(), 4, "the x2APIC entry for APIC 0 repeats it");
        assert!(!p[1].startable(), "disabled, not online capable");
        assert!(p[2].startable() && !p[2].enabled);
        assert_eq!(p[3].apic_id, 300);
    }

    #[test]
    fn malformed_tables_are_refused() {
        let good = madt(&[&lapic(0, 0, 1)]);
        assert_eq!(processors(&good[..40]), Err(MadtError::Truncated));
        let mut sig = good.clone();
        sig[0] = b'X';
        assert_eq!(processors(&sig), Err(MadtError::BadSignature));
        let mut long = good.clone();
        long[45] = 200;
        assert_eq!(processors(&long), Err(MadtError::BadEntry { offset: 44 }));
        let mut zero = good.clone();
        zero[45] = 0;
        assert_eq!(processors(&zero), Err(MadtError::BadEntry { offset: 44 }));
        let mut lying = good;
        lying[4] = 0xFF;
        assert_eq!(processors(&lying), Err(MadtError::Truncated));
    }
}
