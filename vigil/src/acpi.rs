//! Just enough ACPI: the FADT (ACPI 6.5 5.2.9), whose facts `vigil::fadt` reads — PM1 control,
//! the SMI command port, the reset register —, the MADT (5.2.12), which lists the processors
//! Vigil brings into VMX, and the MCFG, whose MMCONFIG windows Vigil takes. Tables are read in
//! place (firmware memory is identity-mapped) with every length checked before use.

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

/// The tables the root points to (RSDT or XSDT), by address.
fn tables(rsdt: Option<u64>, xsdt: Option<u64>) -> impl Iterator<Item = u64> {
    let (root, entry_size) = match (
        xsdt.and_then(|a| table(a, b"XSDT")),
        rsdt.and_then(|a| table(a, b"RSDT")),
    ) {
        (Some(x), _) => (x, 8),
        (None, Some(r)) => (r, 4),
        _ => (&[][..], 4),
    };
    root.get(36..)
        .unwrap_or(&[])
        .chunks_exact(entry_size)
        .map(move |e| {
            if entry_size == 8 {
                u64::from_le_bytes(e.try_into().unwrap_or_default())
            } else {
                u64::from(u32::from_le_bytes(e.try_into().unwrap_or_default()))
            }
        })
}

/// The first table with `signature` the root lists.
fn find(rsdt: Option<u64>, xsdt: Option<u64>, signature: &[u8; 4]) -> Option<&'static [u8]> {
    tables(rsdt, xsdt).find_map(|addr| table(addr, signature))
}

/// The FADT's facts (`vigil::fadt`), from the RSDT (`rsdt`) or XSDT (`xsdt`) address of the
/// RSDP.
pub fn fadt_facts(rsdt: Option<u64>, xsdt: Option<u64>) -> Option<vigil_core::platform::Acpi> {
    find(rsdt, xsdt, b"FACP").map(vigil::fadt::parse)
}

/// The MADT, whole.
pub fn madt(rsdt: Option<u64>, xsdt: Option<u64>) -> Option<&'static [u8]> {
    find(rsdt, xsdt, b"APIC")
}

/// The MMCONFIG windows (`vigil::mcfg`), with the MCFG table hidden from the guest. Call
/// before the guest runs.
pub fn take_mmconfig(rsdt: Option<u64>, xsdt: Option<u64>) -> alloc::vec::Vec<(u64, u64)> {
    let mut all = alloc::vec::Vec::new();
    for addr in tables(rsdt, xsdt) {
        let Some(t) = table(addr, b"MCFG") else {
            continue;
        };
        all.extend(vigil::mcfg::windows(t));
        // SAFETY: the firmware's table, identity-mapped and writable, which nothing else uses
        // while Vigil boots; its length was checked.
        let bytes = unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, t.len()) };
        vigil::mcfg::hide(bytes);
    }
    for (s, e) in &all {
        log::info!(
            "PCI Express configuration window [{s:#x}-{e:#x}): taken from the guest (MCFG hidden)"
        );
    }
    all
}
