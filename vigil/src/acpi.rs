//! Just enough ACPI: the FADT's PM1a control block port (ACPI 6.5 5.2.9), which the guest writes
//! with SLP_EN to enter S5, and the MADT (5.2.12), which lists the processors Vigil brings into
//! VMX. Tables are read in place (firmware memory is identity-mapped) with every length checked
//! before use.

const FADT_PM1A_CNT_BLK: usize = 64;

/// Reads `len` bytes at physical `addr` if the table header there claims at least `len`.
fn table(addr: u64, signature: &[u8; 4]) -> Option<&'static [u8]> {
    if addr == 0 || addr >= 1 << 32 {
        return None;
    }
    // SAFETY: firmware tables below 4 GiB are identity-mapped; the header is 36 bytes.
    let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 36) };
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    if &header[..4] != signature || !(36..=1 << 20).contains(&len) {
        return None;
    }
    // SAFETY: as above, with the length the table declares (bounded).
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
}

/// The table with `signature` the root table lists, from the RSDT (`rsdt`) or XSDT (`xsdt`)
/// address of the RSDP.
fn find(rsdt: Option<u64>, xsdt: Option<u64>, signature: &[u8; 4]) -> Option<&'static [u8]> {
    let (root, entry_size) = match (
        xsdt.and_then(|a| table(a, b"XSDT")),
        rsdt.and_then(|a| table(a, b"RSDT")),
    ) {
        (Some(x), _) => (x, 8),
        (None, Some(r)) => (r, 4),
        _ => return None,
    };
    root[36..].chunks_exact(entry_size).find_map(|e| {
        let addr = if entry_size == 8 {
            u64::from_le_bytes(e.try_into().ok()?)
        } else {
            u32::from_le_bytes(e.try_into().ok()?) as u64
        };
        table(addr, signature)
    })
}

/// The PM1a control port.
pub fn pm1a_control_port(rsdt: Option<u64>, xsdt: Option<u64>) -> Option<u16> {
    let fadt = find(rsdt, xsdt, b"FACP")?;
    let port = u32::from_le_bytes(
        fadt.get(FADT_PM1A_CNT_BLK..FADT_PM1A_CNT_BLK + 4)?
            .try_into()
            .ok()?,
    );
    (port != 0 && port <= 0xFFFF).then_some(port as u16)
}

/// The MADT, whole.
pub fn madt(rsdt: Option<u64>, xsdt: Option<u64>) -> Option<&'static [u8]> {
    find(rsdt, xsdt, b"APIC")
}
