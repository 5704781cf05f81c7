//! Multiboot (version 0.6.96) kernels: find and check the header, load the image (ELF, or the
//! header's address fields when flag 16 asks for them), and build the multiboot information the
//! kernel receives in EBX, with the guest's memory map.

use super::elf::ElfImage;
use super::{read_u32, EntryState, GuestMemory, LoadError};
use crate::memmap::MemoryMap;
use alloc::vec::Vec;

const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// EAX at entry (multiboot spec 3.2).
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie in the first 8192 bytes, 32-bit aligned (spec 3.1.1).
const SEARCH_LIMIT: usize = 8192;
const FLAG_PAGE_ALIGN: u32 = 1 << 0;
const FLAG_MEMORY_INFO: u32 = 1 << 1;
const FLAG_VIDEO_MODE: u32 = 1 << 2;
const FLAG_ADDRESSES: u32 = 1 << 16;
/// Low 16 flag bits are requirements a loader must honour or refuse the kernel (spec 3.1.2).
const KNOWN_REQUIRED: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE;

#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    pub offset: usize,
    pub flags: u32,
    /// header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr (flag 16).
    pub addresses: Option<[u32; 5]>,
}

impl Header {
    pub fn find(image: &[u8]) -> Result<Header, LoadError> {
        let limit = image.len().min(SEARCH_LIMIT);
        let mut offset = 0;
        while offset + 12 <= limit {
            if read_u32(image, offset) == Some(HEADER_MAGIC) {
                let flags = read_u32(image, offset + 4).unwrap_or(0);
                let checksum = read_u32(image, offset + 8).unwrap_or(0);
                if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) == 0 {
                    return Self::decode(image, offset, flags);
                }
            }
            offset += 4;
        }
        if image.len() < 12 {
            return Err(LoadError::Truncated {
                what: "multiboot header",
                need: 12,
                have: image.len() as u64,
            });
        }
        Err(LoadError::BadMagic {
            what: "multiboot header (none with a valid checksum in the first 8 KiB)",
        })
    }

    fn decode(image: &[u8], offset: usize, flags: u32) -> Result<Header, LoadError> {
        if flags & 0xFFFF & !KNOWN_REQUIRED != 0 {
            return Err(LoadError::Unsupported(
                "multiboot header requires a feature this loader does not know",
            ));
        }
        let addresses = if flags & FLAG_ADDRESSES != 0 {
            let mut a = [0u32; 5];
            for (i, slot) in a.iter_mut().enumerate() {
                *slot = read_u32(image, offset + 12 + 4 * i).ok_or(LoadError::Truncated {
                    what: "multiboot header address fields",
                    need: (offset + 32) as u64,
                    have: image.len() as u64,
                })?;
            }
            Some(a)
        } else {
            None
        };
        Ok(Header {
            offset,
            flags,
            addresses,
        })
    }
}

/// What a loaded multiboot kernel occupies and where it starts.
#[derive(Debug, PartialEq, Eq)]
pub struct Loaded {
    pub entry: u64,
    pub start: u64,
    pub end: u64,
}

/// Where a multiboot kernel image would go, without writing anything: [start, end).
pub fn extent(image: &[u8]) -> Result<(u64, u64), LoadError> {
    struct Nowhere;
    impl GuestMemory for Nowhere {
        fn write(&mut self, _: u64, _: &[u8]) -> Result<(), LoadError> {
            Ok(())
        }
        fn zero(&mut self, _: u64, _: u64) -> Result<(), LoadError> {
            Ok(())
        }
    }
    load(image, &mut Nowhere).map(|l| (l.start, l.end))
}

/// Loads a multiboot kernel image into guest memory.
pub fn load(image: &[u8], mem: &mut dyn GuestMemory) -> Result<Loaded, LoadError> {
    let header = Header::find(image)?;
    match header.addresses {
        Some([header_addr, load_addr, load_end, bss_end, entry]) => {
            // The file offset of load_addr follows from where the header sits (spec 3.1.3).
            let file_start = (header.offset as u64)
                .checked_sub(header_addr.wrapping_sub(load_addr) as u64)
                .ok_or(LoadError::Unsupported(
                    "multiboot load_addr lies after header_addr",
                ))?;
            let load_end = if load_end == 0 {
                load_addr as u64 + image.len() as u64 - file_start
            } else {
                load_end as u64
            };
            let bss_end = if bss_end == 0 {
                load_end
            } else {
                bss_end as u64
            };
            if load_end < load_addr as u64 || bss_end < load_end {
                return Err(LoadError::Unsupported(
                    "multiboot address fields are out of order",
                ));
            }
            let file_end = file_start + (load_end - load_addr as u64);
            if file_end > image.len() as u64 {
                return Err(LoadError::Truncated {
                    what: "multiboot image",
                    need: file_end,
                    have: image.len() as u64,
                });
            }
            mem.write(
                load_addr as u64,
                &image[file_start as usize..file_end as usize],
            )?;
            mem.zero(load_end, bss_end - load_end)?;
            Ok(Loaded {
                entry: entry as u64,
                start: load_addr as u64,
                end: bss_end,
            })
        }
        None => {
            let elf = ElfImage::parse(image)?;
            if elf.entry >= 1 << 32 {
                return Err(LoadError::Unsupported("ELF entry point lies above 4 GiB"));
            }
            elf.load(image, mem)?;
            let (start, end) = elf.extent();
            Ok(Loaded {
                entry: elf.entry,
                start,
                end,
            })
        }
    }
}

/// The boot data Vigil writes for a guest (boot GDT, then the multiboot information).
pub const BOOT_DATA_SIZE: u64 = 0x2000;

/// Where a multiboot guest's boot data goes: 0x8000, in conventional memory as GRUB does, unless
/// the image or a module is there (a kernel may load anywhere); then the highest free pages of
/// conventional memory, then of all RAM below 4 GiB, clear of `avoid`.
pub fn boot_data_at(map: &MemoryMap, avoid: &[(u64, u64)]) -> Option<u64> {
    const PREFERRED: u64 = 0x8000;
    let clear = |at: u64| {
        !avoid
            .iter()
            .any(|&(s, e)| s < at + BOOT_DATA_SIZE && at < e)
    };
    if map.is_ram(PREFERRED, PREFERRED + BOOT_DATA_SIZE) && clear(PREFERRED) {
        return Some(PREFERRED);
    }
    let mut low_avoid: Vec<(u64, u64)> = avoid.to_vec();
    low_avoid.push((0, 0x1000)); // the real-mode IVT and BIOS data stay untouched
    map.find_top(BOOT_DATA_SIZE, 4096, 0xA_0000, &low_avoid)
        .or_else(|| map.find_top(BOOT_DATA_SIZE, 4096, 1 << 32, &low_avoid))
}

/// A boot module handed to a multiboot kernel: [start, end) in guest RAM and its string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfoModule<'a> {
    pub start: u64,
    pub end: u64,
    pub string: &'a str,
}

/// Builds the multiboot information structure (spec 3.3) for placement at guest-physical
/// `base`: the fixed part, then the command line, the boot loader name, the module list with
/// the modules' strings, and the memory map.
pub fn build_info(base: u32, cmdline: &str, map: &MemoryMap, modules: &[InfoModule]) -> Vec<u8> {
    const FIXED: usize = 88;
    let mut info = alloc::vec![0u8; FIXED];
    let put = |info: &mut Vec<u8>, off: usize, v: u32| {
        info[off..off + 4].copy_from_slice(&v.to_le_bytes())
    };

    // mem_lower / mem_upper in KiB: RAM from 0 and from 1 MiB, up to the first hole.
    let contiguous_from = |start: u64| {
        let mut end = start;
        while let Some(r) = map.ram().find(|r| r.start <= end && end < r.end) {
            end = r.end;
        }
        end - start
    };
    let mem_lower = contiguous_from(0).min(640 * 1024) / 1024;
    let mem_upper = contiguous_from(0x10_0000).min(u32::MAX as u64 * 1024) / 1024;
    let mut flags = 1 << 0; // mem_lower/mem_upper
    put(&mut info, 4, mem_lower as u32);
    put(&mut info, 8, mem_upper as u32);

    let append_str = |info: &mut Vec<u8>, s: &str| {
        let at = base + info.len() as u32;
        info.extend_from_slice(s.as_bytes());
        info.push(0);
        at
    };
    let at = append_str(&mut info, cmdline);
    put(&mut info, 16, at);
    flags |= 1 << 2;
    let at = append_str(&mut info, "Vigil");
    put(&mut info, 64, at);
    flags |= 1 << 9;

    // Modules (flag 3): as GRUB does, the list is there even when it is empty.
    let strings: Vec<u32> = modules
        .iter()
        .map(|m| append_str(&mut info, m.string))
        .collect();
    while !info.len().is_multiple_of(4) {
        info.push(0);
    }
    let mods_at = base + info.len() as u32;
    for (m, string) in modules.iter().zip(strings) {
        info.extend_from_slice(&(m.start as u32).to_le_bytes());
        info.extend_from_slice(&(m.end as u32).to_le_bytes());
        info.extend_from_slice(&string.to_le_bytes());
        info.extend_from_slice(&0u32.to_le_bytes());
    }
    put(&mut info, 20, modules.len() as u32);
    put(&mut info, 24, mods_at);
    flags |= 1 << 3;

    while !info.len().is_multiple_of(4) {
        info.push(0);
    }
    let mmap_at = base + info.len() as u32;
    for r in map.regions() {
        info.extend_from_slice(&20u32.to_le_bytes()); // size of the entry, not counting itself
        info.extend_from_slice(&r.start.to_le_bytes());
        info.extend_from_slice(&r.len().to_le_bytes());
        info.extend_from_slice(&r.kind.e820().to_le_bytes());
    }
    let mmap_len = base + info.len() as u32 - mmap_at;
    put(&mut info, 44, mmap_len);
    put(&mut info, 48, mmap_at);
    flags |= 1 << 6;
    put(&mut info, 0, flags);
    info
}

/// The register state multiboot defines at entry (spec 3.2): EAX = magic, EBX = info.
pub fn entry_state(loaded: &Loaded, info_addr: u32) -> EntryState {
    EntryState {
        rip: loaded.entry,
        rax: BOOTLOADER_MAGIC as u64,
        rbx: info_addr as u64,
        rsi: 0,
        protected_mode_flat: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::elf::tests::elf64;
    use crate::loader::testmem::VecMemory;
    use crate::memmap::Kind;

    fn with_header(mut image: Vec<u8>, flags: u32) -> Vec<u8> {
        let at = 120; // after the ELF headers, inside the segment payload
        let words = [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags)),
        ];
        for (i, w) in words.iter().enumerate() {
            image[at + 4 * i..at + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        image
    }

    #[test]
    fn elf_kernel_loads_at_its_physical_address() {
        let image = with_header(
            elf64(0x2000, &[0u8; 32], 16),
            FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO,
        );
        let mut mem = VecMemory::new(0x8000, (0x6000, 0x8000));
        let loaded = load(&image, &mut mem).unwrap();
        assert_eq!(
            loaded,
            Loaded {
                entry: 0x2000,
                start: 0x2000,
                end: 0x2030
            }
        );
        assert_eq!(read_u32(&mem.bytes, 0x2000), Some(HEADER_MAGIC));
    }

    #[test]
    fn bad_checksum_and_unknown_requirements_are_refused() {
        let mut image = with_header(elf64(0x2000, &[0u8; 32], 0), 0);
        image[128] ^= 1;
        assert!(matches!(
            Header::find(&image),
            Err(LoadError::BadMagic { .. })
        ));
        let image = with_header(elf64(0x2000, &[0u8; 32], 0), 1 << 5);
        assert!(matches!(
            Header::find(&image),
            Err(LoadError::Unsupported(_))
        ));
        assert!(matches!(
            Header::find(&[0u8; 4]),
            Err(LoadError::Truncated { .. })
        ));
    }

    #[test]
    fn boot_data_goes_where_the_image_is_not() {
        let mut map = MemoryMap::new();
        map.add(0, 0x9F000, Kind::Ram).unwrap();
        map.add(0x10_0000, 0x200_0000, Kind::Ram).unwrap();
        assert_eq!(boot_data_at(&map, &[(0x10_0000, 0x12_0000)]), Some(0x8000));
        // A kernel that loads at 0x8000: the boot data moves to the top of conventional memory.
        let at = boot_data_at(&map, &[(0x7000, 0x2_0000)]).unwrap();
        assert_eq!(at, 0x9D000);
        // All conventional memory taken: above 1 MiB, clear of the image.
        let at = boot_data_at(&map, &[(0, 0x9F000), (0x10_0000, 0x1FF_0000)]).unwrap();
        assert!(at >= 0x1FF_0000 && at + BOOT_DATA_SIZE <= 0x200_0000);
    }

    #[test]
    fn info_describes_memory_and_command_line() {
        let mut map = MemoryMap::new();
        map.add(0, 0x9F000, Kind::Ram).unwrap();
        map.add(0x9F000, 0xA0000, Kind::Reserved).unwrap();
        map.add(0x10_0000, 0x400_0000, Kind::Ram).unwrap();
        let modules = [InfoModule {
            start: 0x20_0000,
            end: 0x20_0123,
            string: "env a=1",
        }];
        let info = build_info(0x8000, "case=all", &map, &modules);
        let flags = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9);
        assert_eq!(read_u32(&info, 0).unwrap() & flags, flags);
        assert_eq!(read_u32(&info, 4), Some(0x9F000 / 1024));
        assert_eq!(read_u32(&info, 8), Some((0x400_0000 - 0x10_0000) / 1024));
        let cmd = read_u32(&info, 16).unwrap() as usize - 0x8000;
        assert_eq!(&info[cmd..cmd + 9], b"case=all\0");
        let (len, at) = (
            read_u32(&info, 44).unwrap() as usize,
            read_u32(&info, 48).unwrap() as usize - 0x8000,
        );
        assert_eq!(len, 3 * 24);
        assert_eq!(crate::loader::read_u64(&info, at + 4 + 24), Some(0x9F000));
        assert_eq!(read_u32(&info, at + 20 + 24), Some(2));
        assert_eq!(read_u32(&info, 20), Some(1), "mods_count");
        let m = read_u32(&info, 24).unwrap() as usize - 0x8000;
        assert_eq!(read_u32(&info, m), Some(0x20_0000));
        assert_eq!(read_u32(&info, m + 4), Some(0x20_0123));
        let string = read_u32(&info, m + 8).unwrap() as usize - 0x8000;
        assert_eq!(&info[string..string + 8], b"env a=1\0");
    }
}
