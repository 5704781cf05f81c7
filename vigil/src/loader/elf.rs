//! ELF32/ELF64 program-header loading, as multiboot loaders do it: each PT_LOAD segment goes to
//! its physical address (p_paddr), with the bytes past p_filesz zeroed (System V ABI, "Program
//! Loading").

use super::{read_u16, read_u32, read_u64, GuestMemory, LoadError};

const PT_LOAD: u32 = 1;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ElfImage {
    pub entry: u64,
    pub is_64: bool,
    pub segments: alloc::vec::Vec<Segment>,
}

impl ElfImage {
    pub fn parse(image: &[u8]) -> Result<ElfImage, LoadError> {
        let have = image.len() as u64;
        if image.len() < 52 {
            return Err(LoadError::Truncated {
                what: "ELF header",
                need: 52,
                have,
            });
        }
        if image[..4] != *b"\x7fELF" {
            return Err(LoadError::BadMagic {
                what: "ELF header (\\x7fELF)",
            });
        }
        let is_64 = match image[4] {
            1 => false,
            2 => true,
            _ => {
                return Err(LoadError::Unsupported(
                    "ELF class is neither 32- nor 64-bit",
                ))
            }
        };
        if image[5] != 1 {
            return Err(LoadError::Unsupported("ELF is not little-endian"));
        }
        let trunc = |what, need: u64| LoadError::Truncated { what, need, have };
        let machine = read_u16(image, 18).ok_or(trunc("ELF header", 20))?;
        if machine != EM_386 && machine != EM_X86_64 {
            return Err(LoadError::Unsupported("ELF machine is not x86"));
        }
        let (entry, phoff, phentsize, phnum) = if is_64 {
            if image.len() < 64 {
                return Err(trunc("ELF64 header", 64));
            }
            (
                read_u64(image, 24).unwrap_or(0),
                read_u64(image, 32).unwrap_or(0),
                read_u16(image, 54).unwrap_or(0) as u64,
                read_u16(image, 56).unwrap_or(0) as u64,
            )
        } else {
            (
                read_u32(image, 24).unwrap_or(0) as u64,
                read_u32(image, 28).unwrap_or(0) as u64,
                read_u16(image, 42).unwrap_or(0) as u64,
                read_u16(image, 44).unwrap_or(0) as u64,
            )
        };
        let min_entsize = if is_64 { 56 } else { 32 };
        if phnum == 0 {
            return Err(LoadError::Unsupported("ELF has no program headers"));
        }
        if phentsize < min_entsize {
            return Err(LoadError::Unsupported(
                "ELF program header entries are too small",
            ));
        }
        let table_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
        if table_end > have {
            return Err(trunc("ELF program header table", table_end));
        }
        let mut segments = alloc::vec::Vec::new();
        for i in 0..phnum {
            let at = (phoff + i * phentsize) as usize;
            if read_u32(image, at) != Some(PT_LOAD) {
                continue;
            }
            let s = if is_64 {
                Segment {
                    offset: read_u64(image, at + 8).unwrap_or(0),
                    paddr: read_u64(image, at + 24).unwrap_or(0),
                    filesz: read_u64(image, at + 32).unwrap_or(0),
                    memsz: read_u64(image, at + 40).unwrap_or(0),
                }
            } else {
                Segment {
                    offset: read_u32(image, at + 4).unwrap_or(0) as u64,
                    paddr: read_u32(image, at + 12).unwrap_or(0) as u64,
                    filesz: read_u32(image, at + 16).unwrap_or(0) as u64,
                    memsz: read_u32(image, at + 20).unwrap_or(0) as u64,
                }
            };
            if s.filesz > s.memsz {
                return Err(LoadError::Unsupported(
                    "ELF segment has more file bytes than memory bytes",
                ));
            }
            let file_end = s.offset.saturating_add(s.filesz);
            if file_end > have {
                return Err(trunc("ELF segment", file_end));
            }
            if s.paddr.checked_add(s.memsz).is_none_or(|end| end > 1 << 32) {
                return Err(LoadError::Unsupported("ELF segment lies above 4 GiB"));
            }
            segments.push(s);
        }
        if segments.is_empty() {
            return Err(LoadError::Unsupported("ELF has no loadable segment"));
        }
        Ok(ElfImage {
            entry,
            is_64,
            segments,
        })
    }

    /// Copies the segments into guest memory.
    pub fn load(&self, image: &[u8], mem: &mut dyn GuestMemory) -> Result<(), LoadError> {
        for s in &self.segments {
            let bytes = &image[s.offset as usize..(s.offset + s.filesz) as usize];
            mem.write(s.paddr, bytes)
                .map_err(|_| LoadError::NotGuestRam {
                    what: "ELF segment",
                    start: s.paddr,
                    end: s.paddr + s.memsz,
                })?;
            mem.zero(s.paddr + s.filesz, s.memsz - s.filesz)
                .map_err(|_| LoadError::NotGuestRam {
                    what: "ELF segment",
                    start: s.paddr,
                    end: s.paddr + s.memsz,
                })?;
        }
        Ok(())
    }

    /// The lowest and highest physical address the image occupies.
    pub fn extent(&self) -> (u64, u64) {
        let lo = self.segments.iter().map(|s| s.paddr).min().unwrap_or(0);
        let hi = self
            .segments
            .iter()
            .map(|s| s.paddr + s.memsz)
            .max()
            .unwrap_or(0);
        (lo, hi)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::loader::testmem::VecMemory;
    use alloc::vec;
    use alloc::vec::Vec;

    /// A minimal ELF64 with one PT_LOAD of `payload` at `paddr` and `bss` extra zero bytes.
    pub fn elf64(paddr: u64, payload: &[u8], bss: u64) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[6] = 1;
        e[16..18].copy_from_slice(&2u16.to_le_bytes());
        e[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        e[24..32].copy_from_slice(&paddr.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes());
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        e[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        e[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
        e[ph + 16..ph + 24].copy_from_slice(&paddr.to_le_bytes());
        e[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
        e[ph + 32..ph + 40].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        e[ph + 40..ph + 48].copy_from_slice(&(payload.len() as u64 + bss).to_le_bytes());
        e.extend_from_slice(payload);
        e
    }

    #[test]
    fn loads_segment_and_zeroes_bss() {
        let image = elf64(0x1000, b"hello", 3);
        let elf = ElfImage::parse(&image).unwrap();
        assert_eq!(elf.entry, 0x1000);
        let mut mem = VecMemory::new(0x4000, (0x3000, 0x4000));
        elf.load(&image, &mut mem).unwrap();
        assert_eq!(&mem.bytes[0x1000..0x1008], b"hello\0\0\0");
        assert_eq!(mem.bytes[0x1008], 0xCC, "nothing past memsz is touched");
    }

    #[test]
    fn segment_on_the_hole_is_refused() {
        let image = elf64(0x2FFE, b"hello", 0);
        let elf = ElfImage::parse(&image).unwrap();
        let mut mem = VecMemory::new(0x4000, (0x3000, 0x4000));
        assert!(matches!(
            elf.load(&image, &mut mem),
            Err(LoadError::NotGuestRam { .. })
        ));
    }

    #[test]
    fn malformed_images_get_named_errors() {
        let good = elf64(0x1000, b"hello", 0);
        assert!(matches!(
            ElfImage::parse(&good[..40]),
            Err(LoadError::Truncated { .. })
        ));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(
            ElfImage::parse(&bad),
            Err(LoadError::BadMagic {
                what: "ELF header (\\x7fELF)"
            })
        );
        let cut = &good[..good.len() - 2];
        assert!(matches!(
            ElfImage::parse(cut),
            Err(LoadError::Truncated {
                what: "ELF segment",
                ..
            })
        ));
        let mut high = good.clone();
        high[64 + 24..64 + 32].copy_from_slice(&0xFFFF_FFFEu64.to_le_bytes());
        assert!(matches!(
            ElfImage::parse(&high),
            Err(LoadError::Unsupported(_))
        ));
        let mut many = good.clone();
        many[56..58].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert!(matches!(
            ElfImage::parse(&many),
            Err(LoadError::Truncated { .. })
        ));
    }
}
