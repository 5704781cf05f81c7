//! The Linux x86 boot protocol (Documentation/arch/x86/boot.rst): validate a bzImage's setup
//! header, place the protected-mode kernel, the initrd and the command line in guest RAM, and
//! build the zero page (`struct boot_params`, Documentation/arch/x86/zero-page.rst) whose E820
//! map is the guest's memory map — the machine's minus Vigil's memory.
//!
//! The kernel starts at its 32-bit entry: protected mode, paging off, flat __BOOT_CS (0x10) and
//! __BOOT_DS (0x18) segments, ESI = the zero page, interrupts off (boot.rst, "32-bit Boot
//! Protocol").

use super::{read_u16, read_u32, read_u64, EntryState, GuestMemory, LoadError};
use crate::memmap::MemoryMap;
use alloc::vec::Vec;

const HDR_MAGIC: &[u8; 4] = b"HdrS";
const BOOT_FLAG: u16 = 0xAA55;
/// 2.10 added pref_address and init_size, which safe placement needs (kernels since 2.6.31).
pub const MIN_PROTOCOL: u16 = 0x020A;
const LOADED_HIGH: u8 = 1 << 0;
const CAN_USE_HEAP: u8 = 1 << 7;
const E820_MAX: usize = 128;
const ZERO_PAGE: usize = 4096;

/// The setup-header fields the loader uses (offsets are from the start of the image, which
/// equal the offsets in the zero page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    pub setup_sects: u8,
    pub version: u16,
    pub loadflags: u8,
    pub code32_start: u32,
    pub initrd_addr_max: u32,
    pub kernel_alignment: u32,
    pub relocatable: bool,
    pub cmdline_size: u32,
    pub pref_address: u64,
    pub init_size: u32,
    /// Where the header ends: it is copied into the zero page up to here.
    pub header_end: usize,
}

/// A parsed bzImage.
pub struct BzImage<'a> {
    pub header: SetupHeader,
    image: &'a [u8],
    /// The protected-mode kernel: everything after the real-mode setup sectors.
    pub kernel: &'a [u8],
}

/// Whether an image looks like a bzImage (to tell it from a multiboot kernel).
pub fn is_bzimage(image: &[u8]) -> bool {
    image.get(0x202..0x206) == Some(HDR_MAGIC)
}

impl<'a> BzImage<'a> {
    pub fn parse(image: &'a [u8]) -> Result<BzImage<'a>, LoadError> {
        let have = image.len() as u64;
        if image.len() < 0x264 {
            return Err(LoadError::Truncated {
                what: "Linux setup header",
                need: 0x264,
                have,
            });
        }
        if read_u16(image, 0x1FE) != Some(BOOT_FLAG) || !is_bzimage(image) {
            return Err(LoadError::BadMagic {
                what: "Linux boot sector (0xAA55) or setup header (HdrS)",
            });
        }
        let version = read_u16(image, 0x206).unwrap_or(0);
        if version < MIN_PROTOCOL {
            return Err(LoadError::ProtocolTooOld {
                version,
                min: MIN_PROTOCOL,
            });
        }
        let setup_sects = match image[0x1F1] {
            0 => 4, // boot.rst: "if this field is 0, the real value is 4"
            n => n,
        };
        let kernel_start = (setup_sects as usize + 1) * 512;
        if kernel_start >= image.len() {
            return Err(LoadError::Truncated {
                what: "Linux image (setup sectors and kernel)",
                need: kernel_start as u64 + 1,
                have,
            });
        }
        let header = SetupHeader {
            setup_sects,
            version,
            loadflags: image[0x211],
            code32_start: read_u32(image, 0x214).unwrap_or(0),
            initrd_addr_max: read_u32(image, 0x22C).unwrap_or(0),
            kernel_alignment: read_u32(image, 0x230).unwrap_or(0),
            relocatable: image[0x234] != 0,
            cmdline_size: read_u32(image, 0x238).unwrap_or(0),
            pref_address: read_u64(image, 0x258).unwrap_or(0),
            init_size: read_u32(image, 0x260).unwrap_or(0),
            header_end: (0x202 + image[0x201] as usize).min(0x290),
        };
        if header.loadflags & LOADED_HIGH == 0 {
            return Err(LoadError::Unsupported(
                "Linux image is a zImage (loads low); only bzImage is supported",
            ));
        }
        if header.relocatable && !header.kernel_alignment.is_power_of_two() {
            return Err(LoadError::Unsupported(
                "Linux setup header has a kernel_alignment that is not a power of two",
            ));
        }
        Ok(BzImage {
            header,
            image,
            kernel: &image[kernel_start..],
        })
    }

    /// Bytes the kernel needs from its load address while it decompresses and starts.
    pub fn footprint(&self) -> u64 {
        (self.header.init_size as u64).max(self.kernel.len() as u64)
    }
}

/// Where everything goes in guest-physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub kernel: u64,
    pub initrd: Option<u64>,
    pub zero_page: u64,
    pub cmdline: u64,
}

/// Fixed low-memory spots for the zero page and the command line: conventional memory the
/// protocol leaves to the boot loader.
pub const ZERO_PAGE_AT: u64 = 0x9000;
pub const CMDLINE_AT: u64 = 0x8200;
const CMDLINE_ROOM: u64 = ZERO_PAGE_AT - CMDLINE_AT;

fn overlaps(a: (u64, u64), avoid: &[(u64, u64)]) -> bool {
    avoid.iter().any(|&(s, e)| s < a.1 && a.0 < e)
}

/// Chooses addresses: a relocatable kernel at the lowest suitably aligned address from its
/// preferred one upwards whose whole footprint is guest RAM clear of `avoid`; a non-relocatable
/// one at its `code32_start` (boot.rst: it must run there), whatever lies there now — the caller
/// moves boot modules out of its way ([`super::relocate_sources`]); and the initrd as high as
/// the kernel allows, clear of the kernel and of `avoid` (the boot modules still to be copied).
pub fn place(
    bz: &BzImage,
    initrd_len: Option<u64>,
    cmdline_len: u64,
    map: &MemoryMap,
    avoid: &[(u64, u64)],
) -> Result<Placement, LoadError> {
    let h = &bz.header;
    if cmdline_len > h.cmdline_size as u64 || cmdline_len + 1 > CMDLINE_ROOM {
        return Err(LoadError::TooLarge {
            what: "Linux command line",
            size: cmdline_len,
            max: (h.cmdline_size as u64).min(CMDLINE_ROOM - 1),
        });
    }
    let footprint = bz.footprint();
    let kernel = if h.relocatable {
        let align = (h.kernel_alignment as u64).max(4096);
        let mut found = None;
        for r in map.ram() {
            let mut at = r
                .start
                .max(h.pref_address)
                .max(0x10_0000)
                .next_multiple_of(align);
            while at + footprint <= r.end {
                if !overlaps((at, at + footprint), avoid) {
                    found = Some(at);
                    break;
                }
                at += align;
            }
            if found.is_some() {
                break;
            }
        }
        found.ok_or(LoadError::DoesNotFit {
            what: "Linux kernel",
            size: footprint,
        })?
    } else {
        let at = h.code32_start as u64;
        if !map.is_ram(at, at + footprint) {
            return Err(LoadError::NotGuestRam {
                what: "non-relocatable Linux kernel",
                start: at,
                end: at + footprint,
            });
        }
        at
    };
    let initrd = match initrd_len {
        None => None,
        Some(len) => {
            let limit = (h.initrd_addr_max as u64 + 1).min(1 << 32);
            let mut keep_out: Vec<(u64, u64)> = avoid.to_vec();
            keep_out.push((kernel, kernel + footprint));
            keep_out.push((0, 0x10_0000));
            Some(
                map.find_top(len.max(1), 4096, limit, &keep_out)
                    .ok_or(LoadError::DoesNotFit {
                        what: "initrd",
                        size: len,
                    })?,
            )
        }
    };
    Ok(Placement {
        kernel,
        initrd,
        zero_page: ZERO_PAGE_AT,
        cmdline: CMDLINE_AT,
    })
}

/// The zero page for this kernel and placement.
pub fn zero_page(
    bz: &BzImage,
    at: &Placement,
    initrd_len: u64,
    map: &MemoryMap,
    rsdp: Option<u64>,
) -> Result<Vec<u8>, LoadError> {
    let mut zp = alloc::vec![0u8; ZERO_PAGE];
    let end = bz.header.header_end;
    zp[0x1F1..end].copy_from_slice(&bz.image[0x1F1..end]);
    let put32 =
        |zp: &mut [u8], off: usize, v: u32| zp[off..off + 4].copy_from_slice(&v.to_le_bytes());
    zp[0x210] = 0xFF; // type_of_loader: "undefined" (boot.rst assigns no number to Vigil)
    zp[0x211] |= CAN_USE_HEAP;
    put32(&mut zp, 0x214, at.kernel as u32);
    if let Some(initrd) = at.initrd {
        put32(&mut zp, 0x218, initrd as u32);
        put32(&mut zp, 0x21C, initrd_len as u32);
        put32(&mut zp, 0x0C0, (initrd >> 32) as u32);
        put32(&mut zp, 0x0C4, (initrd_len >> 32) as u32);
    }
    put32(&mut zp, 0x228, at.cmdline as u32);
    put32(&mut zp, 0x0C8, (at.cmdline >> 32) as u32);
    if let Some(rsdp) = rsdp {
        zp[0x070..0x078].copy_from_slice(&rsdp.to_le_bytes());
    }
    // alt_mem_k: RAM above 1 MiB in KiB, for kernels that look at it before E820.
    let above_1m: u64 = map
        .ram()
        .filter(|r| r.end > 0x10_0000)
        .map(|r| r.end - r.start.max(0x10_0000))
        .sum();
    put32(
        &mut zp,
        0x1E0,
        (above_1m / 1024).min(u32::MAX as u64) as u32,
    );
    let regions = map.regions();
    if regions.len() > E820_MAX {
        return Err(LoadError::TooLarge {
            what: "E820 map",
            size: regions.len() as u64,
            max: E820_MAX as u64,
        });
    }
    zp[0x1E8] = regions.len() as u8;
    for (i, r) in regions.iter().enumerate() {
        let off = 0x2D0 + 20 * i;
        zp[off..off + 8].copy_from_slice(&r.start.to_le_bytes());
        zp[off + 8..off + 16].copy_from_slice(&r.len().to_le_bytes());
        put32(&mut zp, off + 16, r.kind.e820());
    }
    Ok(zp)
}

/// Places and loads a Linux kernel (and initrd) into guest memory, and returns the entry state.
#[allow(clippy::too_many_arguments)]
pub fn load(
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    map: &MemoryMap,
    avoid: &[(u64, u64)],
    rsdp: Option<u64>,
    mem: &mut dyn GuestMemory,
) -> Result<(Placement, EntryState), LoadError> {
    let bz = BzImage::parse(image)?;
    let initrd_len = initrd.map(|i| i.len() as u64);
    let at = place(&bz, initrd_len, cmdline.len() as u64, map, avoid)?;
    let entry = write(&bz, &at, initrd, cmdline, map, rsdp, mem)?;
    Ok((at, entry))
}

/// Writes the kernel, the initrd, the command line and the zero page where `at` says; returns
/// the entry state.
pub fn write(
    bz: &BzImage,
    at: &Placement,
    initrd: Option<&[u8]>,
    cmdline: &str,
    map: &MemoryMap,
    rsdp: Option<u64>,
    mem: &mut dyn GuestMemory,
) -> Result<EntryState, LoadError> {
    let initrd_len = initrd.map(|i| i.len() as u64);
    let zp = zero_page(bz, at, initrd_len.unwrap_or(0), map, rsdp)?;
    mem.write(at.kernel, bz.kernel)?;
    if let (Some(addr), Some(data)) = (at.initrd, initrd) {
        mem.write(addr, data)?;
    }
    let mut line = Vec::with_capacity(cmdline.len() + 1);
    line.extend_from_slice(cmdline.as_bytes());
    line.push(0);
    mem.write(at.cmdline, &line)?;
    mem.write(at.zero_page, &zp)?;
    Ok(EntryState {
        rip: at.kernel,
        rax: 0,
        rbx: 0,
        rsi: at.zero_page,
        protected_mode_flat: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::testmem::VecMemory;
    use crate::memmap::Kind;

    /// A synthetic bzImage: 4 setup sectors, then `kernel_len` bytes of "kernel".
    fn bzimage(version: u16, kernel_len: usize) -> Vec<u8> {
        let mut b = alloc::vec![0u8; 5 * 512 + kernel_len];
        b[0x1F1] = 4;
        b[0x1FE..0x200].copy_from_slice(&BOOT_FLAG.to_le_bytes());
        b[0x200] = 0xEB;
        b[0x201] = 0x6A; // header runs to 0x26C
        b[0x202..0x206].copy_from_slice(HDR_MAGIC);
        b[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        b[0x211] = LOADED_HIGH;
        b[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        b[0x22C..0x230].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
        b[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
        b[0x234] = 1;
        b[0x238..0x23C].copy_from_slice(&0x7FFu32.to_le_bytes());
        b[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
        b[0x260..0x264].copy_from_slice(&0x40_0000u32.to_le_bytes());
        for (i, byte) in b[5 * 512..].iter_mut().enumerate() {
            *byte = i as u8;
        }
        b
    }

    /// 64 MiB of guest RAM with a hole at [32, 34) MiB standing in for Vigil.
    fn guest_map() -> MemoryMap {
        let mut m = MemoryMap::new();
        m.add(0, 0x9F000, Kind::Ram).unwrap();
        m.add(0x9F000, 0x10_0000, Kind::Reserved).unwrap();
        m.add(0x10_0000, 0x400_0000, Kind::Ram).unwrap();
        m.set(0x200_0000, 0x220_0000, Kind::Reserved).unwrap();
        m
    }

    #[test]
    fn loads_kernel_initrd_and_zero_page() {
        let image = bzimage(0x20F, 0x1000);
        let initrd = [0x5Au8; 0x3000];
        let map = guest_map();
        let mut mem = VecMemory::new(0x400_0000, (0x200_0000, 0x220_0000));
        let (at, entry) = load(
            &image,
            Some(&initrd),
            "console=ttyS0",
            &map,
            &[],
            Some(0xF0000),
            &mut mem,
        )
        .unwrap();
        assert_eq!(at.kernel, 0x100_0000, "the preferred address is free");
        assert_eq!(entry.rip, 0x100_0000);
        assert_eq!(entry.rsi, ZERO_PAGE_AT);
        assert_eq!(&mem.bytes[0x100_0000..0x100_0004], &[0, 1, 2, 3]);
        let initrd_at = at.initrd.unwrap();
        assert_eq!(initrd_at + 0x3000, 0x400_0000, "initrd at the top of RAM");
        let zp = &mem.bytes[ZERO_PAGE_AT as usize..ZERO_PAGE_AT as usize + 4096];
        assert_eq!(read_u32(zp, 0x218), Some(initrd_at as u32));
        assert_eq!(read_u32(zp, 0x21C), Some(0x3000));
        assert_eq!(read_u32(zp, 0x228), Some(CMDLINE_AT as u32));
        assert_eq!(read_u64(zp, 0x070), Some(0xF0000));
        assert_eq!(zp[0x210], 0xFF);
        assert_eq!(&zp[0x202..0x206], HDR_MAGIC);
        assert_eq!(
            &mem.bytes[CMDLINE_AT as usize..CMDLINE_AT as usize + 14],
            b"console=ttyS0\0"
        );
        // The E820 map shows Vigil's hole as reserved.
        let n = zp[0x1E8] as usize;
        assert_eq!(n, map.regions().len());
        let hole = (0..n)
            .find(|i| read_u64(zp, 0x2D0 + 20 * i) == Some(0x200_0000))
            .unwrap();
        assert_eq!(read_u32(zp, 0x2D0 + 20 * hole + 16), Some(2));
    }

    #[test]
    fn kernel_skips_over_holes_and_avoided_ranges() {
        let image = bzimage(0x20F, 0x1000);
        let map = guest_map();
        // A module sits at the preferred 16 MiB: the next 2 MiB-aligned slot is 18 MiB.
        let bz = BzImage::parse(&image).unwrap();
        let at = place(&bz, None, 10, &map, &[(0x100_0000, 0x110_0000)]).unwrap();
        assert_eq!(at.kernel, 0x120_0000);
        // Blocked up to 31 MiB: a 4 MiB footprint at 32 MiB would hit the hole, so it goes
        // above it.
        let at = place(&bz, None, 10, &map, &[(0x100_0000, 0x1F0_0000)]).unwrap();
        assert_eq!(at.kernel, 0x220_0000);
    }

    #[test]
    fn a_non_relocatable_kernel_loads_at_code32_start_over_modules() {
        let mut image = bzimage(0x20C, 0x2000);
        image[0x234] = 0; // not relocatable
        image[0x260..0x264].copy_from_slice(&0x6_B000u32.to_le_bytes());
        let bz = BzImage::parse(&image).unwrap();
        let map = guest_map();
        // GRUB put the kernel's own module at 1 MiB: the kernel still goes there.
        let module = (0x10_0000, 0x10_0000 + image.len() as u64);
        let at = place(&bz, Some(0x3000), 10, &map, &[module]).unwrap();
        assert_eq!(at.kernel, 0x10_0000);
        let initrd = at.initrd.unwrap();
        assert!(initrd >= 0x10_0000 + 0x6_B000, "initrd clear of the kernel");
        // The caller moves the module out of the kernel's way, then loads from the copy.
        let moved = crate::loader::relocate_sources(
            &[module],
            &[
                (at.kernel, at.kernel + bz.footprint()),
                (initrd, initrd + 0x3000),
            ],
            &map,
        )
        .unwrap();
        assert!(moved[0].0 >= 0x10_0000 + 0x6_B000);
        let mut mem = VecMemory::new(0x400_0000, (0x200_0000, 0x220_0000));
        mem.bytes[moved[0].0 as usize..moved[0].1 as usize].copy_from_slice(&image);
        let copy = &mem.bytes[moved[0].0 as usize..moved[0].1 as usize].to_vec();
        let bz = BzImage::parse(copy).unwrap();
        let entry = write(&bz, &at, None, "nopause", &map, None, &mut mem).unwrap();
        assert_eq!(entry.rip, 0x10_0000);
        assert_eq!(&mem.bytes[0x10_0000..0x10_0004], &[0, 1, 2, 3]);
        // Where the kernel cannot be in RAM, the error says so.
        let mut hole = guest_map();
        hole.set(0x10_0000, 0x11_0000, Kind::Reserved).unwrap();
        assert!(matches!(
            place(&bz, None, 10, &hole, &[]),
            Err(LoadError::NotGuestRam { .. })
        ));
    }

    #[test]
    fn malformed_images_get_clear_errors() {
        let good = bzimage(0x20F, 0x1000);
        assert!(matches!(
            BzImage::parse(&good[..0x100]),
            Err(LoadError::Truncated { .. })
        ));
        assert!(matches!(
            BzImage::parse(&good[..5 * 512]),
            Err(LoadError::Truncated { .. })
        ));
        let mut bad = good.clone();
        bad[0x202] = b'X';
        assert!(matches!(
            BzImage::parse(&bad),
            Err(LoadError::BadMagic { .. })
        ));
        let old = bzimage(0x204, 0x1000);
        assert_eq!(
            BzImage::parse(&old).err(),
            Some(LoadError::ProtocolTooOld {
                version: 0x204,
                min: MIN_PROTOCOL
            })
        );
        let mut zimage = good.clone();
        zimage[0x211] = 0;
        assert!(matches!(
            BzImage::parse(&zimage),
            Err(LoadError::Unsupported(_))
        ));
        let map = guest_map();
        let mut mem = VecMemory::new(0x400_0000, (0x200_0000, 0x220_0000));
        let long = "x".repeat(0x800);
        assert!(matches!(
            load(&good, None, &long, &map, &[], None, &mut mem),
            Err(LoadError::TooLarge {
                what: "Linux command line",
                ..
            })
        ));
        let huge_initrd = alloc::vec![0u8; 0x300_0000];
        assert!(matches!(
            load(&good, Some(&huge_initrd), "", &map, &[], None, &mut mem),
            Err(LoadError::DoesNotFit { what: "initrd", .. })
        ));
    }
}
