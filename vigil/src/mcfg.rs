//! PCI Express enhanced configuration (MMCONFIG): a memory window per bus range that reaches
//! every function's configuration space (PCI Firmware Specification 3.2, 4.1.2, the ACPI MCFG
//! table). Writes there would bypass Vigil's mediation of 0xCF8/0xCFC, so the guest does not
//! get it: the windows are taken out of its EPT (an access is #GP, as any access outside its
//! memory), and the MCFG table is hidden from it by renaming its signature (with the checksum
//! kept valid), so the OS uses configuration mechanism #1, where Vigil judges every write.
//! Bochs' i440FX machine has no MMCONFIG.

/// The memory windows an MCFG table (its whole bytes) describes: `[start, end)` each.
pub fn windows(table: &[u8]) -> impl Iterator<Item = (u64, u64)> + '_ {
    // Header (36 bytes), 8 reserved, then 16-byte allocations: base (8), segment (2), start
    // bus (1), end bus (1), reserved (4).
    table
        .get(44..)
        .unwrap_or(&[])
        .chunks_exact(16)
        .filter_map(|e| {
            let base = u64::from_le_bytes(e[..8].try_into().ok()?);
            let (start, end) = (u64::from(e[10]), u64::from(e[11]));
            (end >= start && base != 0).then(|| (base + (start << 20), base + ((end + 1) << 20)))
        })
}

/// The table under another name, `XCFG`, that no OS looks for; the checksum byte (offset 9)
/// changes so the bytes still sum to zero (ACPI 6.5 5.2.6).
pub fn hide(table: &mut [u8]) {
    if table.len() < 36 || &table[..4] != b"MCFG" {
        return;
    }
    let before: u8 = table[..4].iter().fold(0u8, |s, &b| s.wrapping_add(b));
    table[0] = b'X';
    let after: u8 = table[..4].iter().fold(0u8, |s, &b| s.wrapping_add(b));
    table[9] = table[9].wrapping_add(before.wrapping_sub(after));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mcfg() -> Vec<u8> {
        let mut t = vec![0u8; 60];
        t[..4].copy_from_slice(b"MCFG");
        t[4..8].copy_from_slice(&60u32.to_le_bytes());
        t[44..52].copy_from_slice(&0xE000_0000u64.to_le_bytes());
        t[54] = 0;
        t[55] = 0x3F;
        let sum = t.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        t[9] = 0u8.wrapping_sub(sum);
        t
    }

    #[test]
    fn the_windows_cover_each_bus_range() {
        let t = mcfg();
        assert_eq!(
            windows(&t).collect::<Vec<_>>(),
            [(0xE000_0000, 0xE400_0000)]
        );
        assert_eq!(windows(&t[..40]).count(), 0);
    }

    #[test]
    fn hiding_renames_and_keeps_the_checksum() {
        let mut t = mcfg();
        hide(&mut t);
        assert_eq!(&t[..4], b"XCFG");
        assert_eq!(t.iter().fold(0u8, |s, &b| s.wrapping_add(b)), 0);
        let before = t.clone();
        hide(&mut t);
        assert_eq!(t, before, "only an MCFG table is renamed");
    }
}
