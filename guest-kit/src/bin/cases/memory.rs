//! Memory isolation: all of the guest's RAM is readable, none of Vigil's memory is.

use super::*;

const PAGE: u64 = 4096;
/// The kit's page tables identity-map the first 4 GiB (see `guest_kit::boot`).
const MAPPED_END: u64 = 1 << 32;

pub(super) fn page_down(address: u64) -> u64 {
    address & !(PAGE - 1)
}

pub(super) fn page_up(address: u64) -> u64 {
    page_down(address.saturating_add(PAGE - 1))
}

/// Vigil's memory is out of the guest's reach (docs/architecture.md, "Memory"):
/// (a) every page of every available region of the memory map below 4 GiB can be read;
/// (b) Vigil only: every page of its image and pool raises #GP on a read and on a write, and
/// the checksum of Vigil's protected memory is the same after all that as before.
///
/// The write is a locked add of 0 ([`fault::try_write_probe_u64`]): it needs write permission
/// like a store, but if isolation were broken it would leave Vigil's memory as it was, so the
/// failure is reported by this case rather than by whatever a corrupted Vigil does next.
pub(super) fn isolation() -> Outcome {
    let Some(boot) = guest_kit::boot_info() else {
        return fail!("no-boot-info");
    };
    let Some(map) = boot.memory_map() else {
        return fail!("no-memory-map flags={:#x}", boot.flags);
    };

    let mut vigil = [(0u64, 0u64); 2];
    let present = hypercall::vigil_present();
    if present {
        for (slot, range) in vigil.iter_mut().zip(VigilRange::ALL) {
            *slot = match hypercall::vigil_range(range) {
                Ok(r) if r.0 < r.1 => r,
                Ok(r) => {
                    return fail!(
                        "empty-vigil-range range={} vigil={:#x}-{:#x}",
                        range.name(),
                        r.0,
                        r.1
                    )
                }
                Err(e) => return fail!("vigil-range-hypercall range={} error={}", range.name(), e),
            };
        }
        // The memory map must not offer Vigil's memory as RAM.
        for region in boot.memory_map().into_iter().flatten() {
            if !region.available() {
                continue;
            }
            for (&(start, end), range) in vigil.iter().zip(VigilRange::ALL) {
                if region.base < end && start < region.end() {
                    return fail!(
                        "vigil-memory-offered-as-ram range={} vigil={:#x}-{:#x} region={:#x}-{:#x}",
                        range.name(),
                        start,
                        end,
                        region.base,
                        region.end()
                    );
                }
            }
        }
    }

    // (a) RAM: nothing may fault.
    let mut ram_pages = 0u64;
    for region in map.filter(|r| r.available()) {
        let start = page_up(region.base);
        let end = page_down(region.end().min(MAPPED_END));
        let mut page = start;
        while page < end {
            if let Err(c) = fault::try_read_u64(page) {
                return fail!(
                    "ram-read-faulted address={:#x} vector={} error={:#x}",
                    page,
                    c.vector,
                    c.error
                );
            }
            ram_pages += 1;
            page += PAGE;
        }
    }
    if ram_pages == 0 {
        return fail!("no-available-ram-below-4gib");
    }
    if !present {
        return pass!("ram_pages={} vigil_pages=0 gp=0 checksum=none", ram_pages);
    }

    // (b) Vigil's memory: every read and write is #GP.
    let before = match hypercall::vigil_checksum() {
        Ok(c) => c,
        Err(e) => return fail!("vigil-checksum-hypercall error={}", e),
    };
    let (mut vigil_pages, mut gp) = (0u64, 0u64);
    for (&(start, end), range) in vigil.iter().zip(VigilRange::ALL) {
        // One probe per 4 KiB page (the EPT's smallest unit): the range's start, then each page
        // boundary after it. Beyond 4 GiB the kit's own page tables would fault first, which
        // says nothing about Vigil (the architecture keeps its memory below 4 GiB anyway).
        let mut address = start;
        while address < end.min(MAPPED_END) {
            vigil_pages += 1;
            for (access, probe) in VIGIL_PROBES {
                if let Some(failed) = unless_gp(access, probe, range, address) {
                    return failed;
                }
                gp += 1;
            }
            address = page_down(address) + PAGE;
        }
    }
    let after = match hypercall::vigil_checksum() {
        Ok(c) => c,
        Err(e) => return fail!("vigil-checksum-hypercall error={}", e),
    };
    if after != before {
        return fail!(
            "vigil-memory-changed checksum_before={:#x} checksum_after={:#x} vigil_pages={}",
            before,
            after,
            vigil_pages
        );
    }
    pass!(
        "ram_pages={} vigil_pages={} gp={} checksum={:#x}",
        ram_pages,
        vigil_pages,
        gp,
        before
    )
}

/// A probe of one address: the value it read, or the exception it raised.
type Probe = fn(u64) -> Result<u64, Caught>;

/// The two accesses tried on every page of Vigil's memory, by name (`vigil-read-…`,
/// `vigil-write-…`), in the order they are tried.
const VIGIL_PROBES: [(&str, Probe); 2] = [
    ("read", fault::try_read_u64),
    ("write", fault::try_write_probe_u64),
];

/// One `access` of Vigil's memory at `address` must raise #GP: `None` if it did, else the
/// case's failure.
fn unless_gp(access: &str, probe: Probe, range: VigilRange, address: u64) -> Option<Outcome> {
    match probe(address) {
        Ok(value) => Some(fail!(
            "vigil-{}-succeeded range={} address={:#x} value={:#x}",
            access,
            range.name(),
            address,
            value
        )),
        Err(c) if c.vector == fault::GP => None,
        Err(c) => Some(fail!(
            "vigil-{}-wrong-vector range={} address={:#x} vector={} error={:#x}",
            access,
            range.name(),
            address,
            c.vector,
            c.error
        )),
    }
}

/// The boot modules the loader handed over (multiboot spec 3.3: `module` lines under GRUB,
/// `module2 PATH module STRING` under Vigil): their number, and for each its length, an FNV-1a
/// checksum of its bytes and its string (spaces as `+`), which the scenario compares with the
/// files it put on the ISO. Each must be page-aligned, non-empty, in RAM the memory map offers
/// and clear of the kit's own image. Skips when there are none.
pub(super) fn modules() -> Outcome {
    let Some(boot) = guest_kit::boot_info() else {
        return fail!("no-boot-info");
    };
    let Some(mods) = boot.modules() else {
        return skip!("no-module-list flags={:#x}", boot.flags);
    };
    let (image_start, image_end) = guest_kit::image_range();
    let mut out = guest_kit::harness::Text::new();
    let mut count = 0;
    for (i, (start, end, string)) in mods.enumerate() {
        count += 1;
        let (start, end) = (start as u64, end as u64);
        if end <= start || start % PAGE != 0 {
            return fail!("bad-module index={} start={:#x} end={:#x}", i, start, end);
        }
        if start < image_end && image_start < end {
            return fail!(
                "module-over-the-image index={} module={:#x}-{:#x} image={:#x}-{:#x}",
                i,
                start,
                end,
                image_start,
                image_end
            );
        }
        let in_ram = boot
            .memory_map()
            .into_iter()
            .flatten()
            .any(|r| r.available() && r.base <= start && end <= r.end());
        if !in_ram {
            return fail!(
                "module-not-in-ram index={} module={:#x}-{:#x}",
                i,
                start,
                end
            );
        }
        // SAFETY: the module lies in RAM (checked above), identity-mapped below 4 GiB.
        let bytes =
            unsafe { core::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
        let mut hash = 0xCBF2_9CE4_8422_2325u64;
        for &b in bytes {
            hash = (hash ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
        }
        use core::fmt::Write;
        let _ = write!(
            out,
            " m{i}.len={} m{i}.fnv={hash:#x} m{i}.string=",
            end - start
        );
        for c in string.chars() {
            let _ = out.write_char(if c == ' ' { '+' } else { c });
        }
    }
    if count == 0 {
        return skip!("no-modules");
    }
    pass!("count={}{}", count, out.as_str())
}

/// Device space far above RAM (where firmware puts 64-bit BARs) reads as on bare metal: the
/// guest's EPT covers the whole physical address space the processor reports, so a read at
/// 256 GiB — above any RAM these machines have, below MAXPHYADDR — reaches the bus as bare,
/// with no #GP. Reports the value read, which bare and Vigil runs must share.
pub(super) fn high_mmio() -> Outcome {
    const GPA: u64 = 256 << 30;
    if cpu::cpuid(0x8000_0000, 0).eax < 0x8000_0008 {
        return skip!("no-leaf-80000008");
    }
    let phys_bits = cpu::cpuid(0x8000_0008, 0).eax & 0xFF;
    if phys_bits < 39 {
        return skip!("maxphyaddr-below-256gib phys_bits={}", phys_bits);
    }
    if cpu::cpuid(0x8000_0001, 0).edx & (1 << 26) == 0 {
        return skip!("no-1gib-pages");
    }
    let below_ram = boot_ram_end().is_some_and(|end| end <= GPA);
    if !below_ram {
        return skip!("ram-reaches-256gib");
    }
    // SAFETY: the kit's page tables leave that linear range unused.
    unsafe { guest_kit::boot::map_gib(GPA, true) };
    let read = fault::try_read_u64(GPA);
    // SAFETY: as above; the mapping goes away again.
    unsafe { guest_kit::boot::map_gib(GPA, false) };
    match read {
        Ok(value) => pass!("gpa={:#x} value={:#x} phys_bits={}", GPA, value, phys_bits),
        Err(c) => fail!(
            "fault vector={} error={:#x} gpa={:#x} phys_bits={}",
            c.vector,
            c.error,
            GPA,
            phys_bits
        ),
    }
}

/// The end of the highest region of the memory map.
fn boot_ram_end() -> Option<u64> {
    let map = guest_kit::boot_info()?.memory_map()?;
    map.map(|r| r.end()).max()
}
