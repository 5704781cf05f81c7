//! Guest loaders: they validate an image, place it in guest-physical memory and describe the
//! initial vCPU state its boot protocol defines. Pure logic over the `GuestMemory` trait, so the
//! host tests exercise them with malformed images.

pub mod elf;
pub mod linux;
pub mod multiboot1;

use crate::memmap::MemoryMap;
use alloc::vec::Vec;
use core::fmt;

/// Guest-physical memory as a loader sees it.
pub trait GuestMemory {
    /// Copies `bytes` to guest-physical `gpa`. Fails if any byte is not guest RAM.
    fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), LoadError>;
    /// Zeroes `len` bytes at `gpa`. Fails if any byte is not guest RAM.
    fn zero(&mut self, gpa: u64, len: u64) -> Result<(), LoadError>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The image ends before a structure it declares.
    Truncated {
        what: &'static str,
        need: u64,
        have: u64,
    },
    BadMagic {
        what: &'static str,
    },
    Unsupported(&'static str),
    /// A part of the image would land outside the guest's RAM (or on Vigil's memory).
    NotGuestRam {
        what: &'static str,
        start: u64,
        end: u64,
    },
    TooLarge {
        what: &'static str,
        size: u64,
        max: u64,
    },
    /// The image speaks an older boot protocol than the loader needs.
    ProtocolTooOld {
        version: u16,
        min: u16,
    },
    /// No room in the guest's RAM for this many bytes.
    DoesNotFit {
        what: &'static str,
        size: u64,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            LoadError::Truncated { what, need, have } => {
                write!(
                    f,
                    "image truncated: {what} needs {need} bytes, the image has {have}"
                )
            }
            LoadError::BadMagic { what } => write!(f, "not a valid image: wrong or missing {what}"),
            LoadError::Unsupported(what) => write!(f, "unsupported image: {what}"),
            LoadError::NotGuestRam { what, start, end } => {
                write!(f, "{what} [{start:#x}-{end:#x}) is not in the guest's RAM")
            }
            LoadError::TooLarge { what, size, max } => {
                write!(f, "{what} is too large: {size} bytes (at most {max})")
            }
            LoadError::ProtocolTooOld { version, min } => write!(
                f,
                "Linux boot protocol {}.{:02} is too old (Vigil needs {}.{:02} or later)",
                version >> 8,
                version & 0xFF,
                min >> 8,
                min & 0xFF
            ),
            LoadError::DoesNotFit { what, size } => write!(
                f,
                "{what} ({size} bytes) does not fit in the guest's RAM where the boot protocol allows it"
            ),
        }
    }
}

/// Initial register state of a guest, as its boot protocol defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryState {
    pub rip: u64,
    pub rax: u64,
    pub rbx: u64,
    pub rsi: u64,
    /// The guest starts in 32-bit protected mode with flat segments and paging off.
    pub protected_mode_flat: bool,
}

fn overlaps(a: (u64, u64), others: &[(u64, u64)]) -> bool {
    others.iter().any(|&(s, e)| s < a.1 && a.0 < e)
}

/// Where the boot modules (`sources`: images still to be copied, a multiboot guest's own
/// modules) must be before the loader writes anything: a module that lies in `keep_clear` (where
/// the kernel, its initrd or the boot data go) is moved to the highest free, page-aligned RAM
/// below 4 GiB that is clear of `keep_clear`, of every other module and of conventional memory;
/// the others stay. GRUB places modules where it likes — over a non-relocatable kernel's fixed
/// address, for one — and this is how they get out of the way (the copy is made with memmove
/// semantics, so any order of moves is safe: no new place overlaps any module, old or new).
pub fn relocate_sources(
    sources: &[(u64, u64)],
    keep_clear: &[(u64, u64)],
    map: &MemoryMap,
) -> Result<Vec<(u64, u64)>, LoadError> {
    let mut placed: Vec<(u64, u64)> = sources.to_vec();
    for i in 0..sources.len() {
        let (start, end) = sources[i];
        if !overlaps((start, end), keep_clear) {
            continue;
        }
        let len = end - start;
        let mut avoid: Vec<(u64, u64)> = keep_clear.to_vec();
        avoid.extend_from_slice(sources);
        avoid.extend_from_slice(&placed);
        avoid.push((0, 0x10_0000));
        let at = map
            .find_top(len.max(1), 4096, 1 << 32, &avoid)
            .ok_or(LoadError::DoesNotFit {
                what: "a boot module in the way of the kernel (moving it aside)",
                size: len,
            })?;
        placed[i] = (at, at + len);
    }
    Ok(placed)
}

pub(crate) fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

pub(crate) fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

pub(crate) fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

#[cfg(test)]
pub(crate) mod testmem {
    use super::{GuestMemory, LoadError};
    use crate::memmap::{Kind, MemoryMap};

    /// RAM [0, 640 KiB) and [1 MiB, `end`).
    pub fn ram(end: u64) -> MemoryMap {
        let mut m = MemoryMap::new();
        m.add(0, 0x9F000, Kind::Ram).unwrap();
        m.add(0x9F000, 0x10_0000, Kind::Reserved).unwrap();
        m.add(0x10_0000, end, Kind::Ram).unwrap();
        m
    }

    #[test]
    fn modules_in_the_way_move_and_the_others_stay() {
        let map = ram(0x200_0000);
        let sources = [
            (0x10_0000, 0x12_0000),
            (0x12_0000, 0x12_1000),
            (0x40_0000, 0x41_0000),
        ];
        let kernel = (0x10_0000, 0x16_B000);
        let moved = super::relocate_sources(&sources, &[kernel], &map).unwrap();
        assert_eq!(moved[2], sources[2], "clear of the kernel: stays");
        for (i, m) in moved[..2].iter().enumerate() {
            assert_eq!(m.1 - m.0, sources[i].1 - sources[i].0, "same length");
            assert_eq!(m.0 % 4096, 0, "page-aligned");
            assert!(
                m.1 <= kernel.0 || m.0 >= kernel.1,
                "clear of the kernel: {m:x?}"
            );
            assert!(super::overlaps(*m, &[(0x10_0000, 0x200_0000)]));
            for other in sources.iter().chain(moved.iter().filter(|o| *o != m)) {
                assert!(!super::overlaps(*m, &[*other]), "{m:x?} hits {other:x?}");
            }
        }
        assert!(
            moved[0].0 >= 0x1F0_0000,
            "as high as RAM allows: {:x?}",
            moved[0]
        );
        let full = [(0x10_0000, 0x1F0_0000)];
        assert!(matches!(
            super::relocate_sources(&full, &[(0x10_0000, 0x11_0000)], &map),
            Err(LoadError::DoesNotFit { .. })
        ));
    }
    use alloc::vec;
    use alloc::vec::Vec;

    /// Guest RAM [0, size) minus one hole (standing in for Vigil's memory).
    pub struct VecMemory {
        pub bytes: Vec<u8>,
        pub hole: (u64, u64),
    }

    impl VecMemory {
        pub fn new(size: usize, hole: (u64, u64)) -> Self {
            Self {
                bytes: vec![0xCC; size],
                hole,
            }
        }

        fn check(&self, gpa: u64, len: u64) -> Result<(), LoadError> {
            let end = gpa.saturating_add(len);
            if end > self.bytes.len() as u64 || (gpa < self.hole.1 && self.hole.0 < end) {
                return Err(LoadError::NotGuestRam {
                    what: "test",
                    start: gpa,
                    end,
                });
            }
            Ok(())
        }
    }

    impl GuestMemory for VecMemory {
        fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), LoadError> {
            self.check(gpa, bytes.len() as u64)?;
            self.bytes[gpa as usize..gpa as usize + bytes.len()].copy_from_slice(bytes);
            Ok(())
        }

        fn zero(&mut self, gpa: u64, len: u64) -> Result<(), LoadError> {
            self.check(gpa, len)?;
            self.bytes[gpa as usize..(gpa + len) as usize].fill(0);
            Ok(())
        }
    }
}
