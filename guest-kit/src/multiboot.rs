//! The multiboot1 information structure (multiboot spec 0.6.96, section 3.3 "Boot information
//! format"): the command line, the boot modules and the memory map.
//!
//! All addresses in it are physical and below 4 GiB, so with the boot identity map they are
//! pointers as they stand.

/// flags bit 0: mem_lower / mem_upper are valid.
const FLAG_MEM: u32 = 1 << 0;
/// flags bit 2: cmdline is valid.
const FLAG_CMDLINE: u32 = 1 << 2;
/// flags bit 3: mods_count / mods_addr are valid.
const FLAG_MODS: u32 = 1 << 3;
/// flags bit 6: mmap_length / mmap_addr are valid.
const FLAG_MMAP: u32 = 1 << 6;

/// Memory map entry type 1: RAM available to the OS.
pub const MEMORY_AVAILABLE: u32 = 1;

/// The fixed part of the information structure (offsets 0–51).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Raw {
    flags: u32,
    mem_lower: u32,
    mem_upper: u32,
    boot_device: u32,
    cmdline: u32,
    mods_count: u32,
    mods_addr: u32,
    syms: [u32; 4],
    mmap_length: u32,
    mmap_addr: u32,
}

/// What the loader told us.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// Physical address of the information structure.
    pub address: u32,
    /// Its flags word.
    pub flags: u32,
    cmdline: &'static str,
    mem: Option<(u32, u32)>,
    mmap: Option<(u32, u32)>,
    mods: Option<(u32, u32)>,
}

impl BootInfo {
    /// Read the structure at `address`.
    ///
    /// # Safety
    /// `address` must be the multiboot information pointer the loader passed in EBX.
    pub unsafe fn parse(address: u32) -> BootInfo {
        let raw = unsafe { core::ptr::read_unaligned(address as usize as *const Raw) };
        let cmdline = if raw.flags & FLAG_CMDLINE != 0 && raw.cmdline != 0 {
            unsafe { c_str(raw.cmdline) }
        } else {
            ""
        };
        BootInfo {
            address,
            flags: raw.flags,
            cmdline,
            mem: (raw.flags & FLAG_MEM != 0).then_some((raw.mem_lower, raw.mem_upper)),
            mmap: (raw.flags & FLAG_MMAP != 0).then_some((raw.mmap_addr, raw.mmap_length)),
            mods: (raw.flags & FLAG_MODS != 0).then_some((raw.mods_addr, raw.mods_count)),
        }
    }

    /// The whole command line as the loader gave it (GRUB may or may not prefix the image path).
    pub fn cmdline(&self) -> &'static str {
        self.cmdline
    }

    /// Value of the first `key=value` word of the command line with this key.
    pub fn arg(&self, key: &str) -> Option<&'static str> {
        self.cmdline.split_ascii_whitespace().find_map(|word| {
            let (k, v) = word.split_once('=')?;
            (k == key).then_some(v)
        })
    }

    /// mem_lower and mem_upper in KiB, if given.
    pub fn mem_kib(&self) -> Option<(u32, u32)> {
        self.mem
    }

    /// The memory map, if given.
    pub fn memory_map(&self) -> Option<MemoryMap> {
        let (addr, len) = self.mmap?;
        Some(MemoryMap {
            next: addr,
            end: addr.saturating_add(len),
        })
    }
}

impl BootInfo {
    /// The boot modules, if the loader gave the list (flag 3): `(start, end, string)` each
    /// (spec 3.3: 16-byte entries of mod_start, mod_end, string, reserved).
    pub fn modules(&self) -> Option<impl Iterator<Item = (u32, u32, &'static str)>> {
        let (addr, count) = self.mods?;
        Some((0..count.min(64)).map(move |i| {
            let p = (addr as usize + 16 * i as usize) as *const u32;
            // SAFETY: the loader's module list: `count` entries of four dwords at `addr`.
            let (start, end, string) = unsafe {
                (
                    core::ptr::read_unaligned(p),
                    core::ptr::read_unaligned(p.add(1)),
                    core::ptr::read_unaligned(p.add(2)),
                )
            };
            let text = if string != 0 {
                // SAFETY: a NUL-terminated string the loader wrote.
                unsafe { c_str(string) }
            } else {
                ""
            };
            (start, end, text)
        }))
    }
}

/// One memory map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub length: u64,
    pub kind: u32,
}

impl Region {
    /// End address (exclusive).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.length)
    }

    /// Whether this is RAM available to the OS.
    pub fn available(&self) -> bool {
        self.kind == MEMORY_AVAILABLE
    }
}

/// Iterator over the memory map. Each entry starts with a `size` field that does not count
/// itself; the next entry follows `size + 4` bytes later (spec 3.3, "mmap_*").
pub struct MemoryMap {
    next: u32,
    end: u32,
}

impl Iterator for MemoryMap {
    type Item = Region;

    fn next(&mut self) -> Option<Region> {
        if self.next.saturating_add(24) > self.end {
            return None;
        }
        let p = self.next as usize as *const u8;
        let (size, base, length, kind) = unsafe {
            (
                core::ptr::read_unaligned(p as *const u32),
                core::ptr::read_unaligned(p.add(4) as *const u64),
                core::ptr::read_unaligned(p.add(12) as *const u64),
                core::ptr::read_unaligned(p.add(20) as *const u32),
            )
        };
        // A size below 20 would not even hold base, length and type: treat the map as over.
        if size < 20 {
            self.next = self.end;
        } else {
            self.next = self.next.saturating_add(size + 4);
        }
        Some(Region { base, length, kind })
    }
}

/// The NUL-terminated string at `address`, cut at the first NUL or non-UTF-8 byte, at most 4 KiB.
unsafe fn c_str(address: u32) -> &'static str {
    let p = address as usize as *const u8;
    let mut len = 0;
    while len < 4096 && unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    let bytes = unsafe { core::slice::from_raw_parts(p, len) };
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => unsafe { core::str::from_utf8_unchecked(&bytes[..e.valid_up_to()]) },
    }
}
