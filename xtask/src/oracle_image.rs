//! What Vigil's ELF says must be in the machine's memory: the code and read-only data of its
//! image (the loaded, non-writable segments of its virtual window), its entry point and the
//! function every end of a run passes through. Everything comes from the file, nothing from
//! Vigil's own output.
//!
//! Vigil runs at a fixed virtual address (its window, `VIGIL_VMA` in vigil/link.ld) wherever its
//! bytes are in physical memory: GRUB loads the image low and Vigil copies it to the top of RAM.
//! So the ELF gives *virtual* addresses and bytes; where those bytes are in physical memory is
//! the emulator's to say (oracle.rs reads Vigil's page tables through Bochs' debugger). The
//! boot trampoline (`.boot`, linked and loaded at its physical address) stays behind at the load
//! address, which becomes guest RAM: it is not part of the image that is compared.

const PT_LOAD: u32 = 1;
const PF_W: u32 = 2;
const PF_X: u32 = 1;
const SHT_SYMTAB: u32 = 2;

/// The base of Vigil's virtual window (vigil/link.ld `VIGIL_VMA`).
pub const WINDOW_BASE: u64 = 0xFFFF_FFFF_8000_0000;
/// The size of the window (one page table of 4 KiB pages, vigil/link.ld `WINDOW`).
pub const WINDOW_SIZE: u64 = 2 << 20;

/// The mangled name of the function that ends every run Vigil ends itself
/// (`vigil::power::finish`; legacy mangling: length-prefixed path components, then a hash).
const FINISH_SYMBOL: &str = "5vigil5power6finish";

/// One loaded segment of the window that nothing may change at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Virtual address in Vigil's window.
    pub vaddr: u64,
    /// The bytes (p_filesz of them; these segments have no zero-filled tail).
    pub bytes: Vec<u8>,
    pub executable: bool,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.vaddr + self.bytes.len() as u64
    }

    pub fn kind(&self) -> &'static str {
        if self.executable {
            "code"
        } else {
            "read-only data"
        }
    }
}

/// The part of Vigil's image the oracle compares, and the addresses it breaks at.
#[derive(Clone, Debug)]
pub struct Image {
    /// Code and read-only data of the window, by virtual address.
    pub segments: Vec<Segment>,
    /// Physical address of the ELF entry point (the boot trampoline, linked at its load
    /// address).
    pub entry: u64,
    /// Virtual address of `vigil::power::finish`, which every end of a run Vigil ends itself
    /// passes through.
    pub finish: Option<u64>,
    /// The window's extent in the ELF: [first loaded byte, last loaded byte) of the window's
    /// segments, writable ones included.
    pub window: (u64, u64),
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

struct Load {
    vaddr: u64,
    paddr: u64,
    memsz: u64,
}

/// Parse a little-endian ELF64 executable.
pub fn parse(data: &[u8]) -> Result<Image, String> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return Err("not a little-endian ELF64 file".into());
    }
    let bad = |what: &str| format!("malformed ELF: {what}");
    let entry = u64_at(data, 24).ok_or_else(|| bad("header"))?;
    let phoff = u64_at(data, 32).ok_or_else(|| bad("header"))? as usize;
    let shoff = u64_at(data, 40).ok_or_else(|| bad("header"))? as usize;
    let phentsize = u16_at(data, 54).ok_or_else(|| bad("header"))? as usize;
    let phnum = u16_at(data, 56).ok_or_else(|| bad("header"))? as usize;
    let shentsize = u16_at(data, 58).ok_or_else(|| bad("header"))? as usize;
    let shnum = u16_at(data, 60).ok_or_else(|| bad("header"))? as usize;

    let mut segments = Vec::new();
    let mut loads = Vec::new();
    let mut window = (u64::MAX, 0u64);
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let kind = u32_at(data, at).ok_or_else(|| bad("program header"))?;
        if kind != PT_LOAD {
            continue;
        }
        let flags = u32_at(data, at + 4).ok_or_else(|| bad("program header"))?;
        let offset = u64_at(data, at + 8).ok_or_else(|| bad("program header"))? as usize;
        let vaddr = u64_at(data, at + 16).ok_or_else(|| bad("program header"))?;
        let paddr = u64_at(data, at + 24).ok_or_else(|| bad("program header"))?;
        let filesz = u64_at(data, at + 32).ok_or_else(|| bad("program header"))? as usize;
        let memsz = u64_at(data, at + 40).ok_or_else(|| bad("program header"))?;
        loads.push(Load {
            vaddr,
            paddr,
            memsz,
        });
        if vaddr < WINDOW_BASE {
            // The boot trampoline: left behind at the load address, guest RAM after the move.
            continue;
        }
        window = (window.0.min(vaddr), window.1.max(vaddr + memsz));
        if flags & PF_W != 0 || filesz == 0 {
            continue;
        }
        let bytes = data
            .get(offset..offset + filesz)
            .ok_or_else(|| bad("segment outside the file"))?
            .to_vec();
        segments.push(Segment {
            vaddr,
            bytes,
            executable: flags & PF_X != 0,
        });
    }
    if segments.is_empty() {
        return Err("the ELF has no non-writable loaded segment in Vigil's window".into());
    }
    if window.1 - window.0 > WINDOW_SIZE {
        return Err(format!(
            "the window's segments span {:#x} bytes, more than the {WINDOW_SIZE:#x}-byte window",
            window.1 - window.0
        ));
    }
    let phys = |v: u64| {
        loads
            .iter()
            .find(|l| l.vaddr <= v && v < l.vaddr + l.memsz)
            .map(|l| v - l.vaddr + l.paddr)
    };
    let entry = phys(entry).ok_or_else(|| bad("entry point outside every segment"))?;

    let mut finish = None;
    if shnum > 0 && shentsize == 64 {
        for i in 0..shnum {
            let at = shoff + i * 64;
            if u32_at(data, at + 4) != Some(SHT_SYMTAB) {
                continue;
            }
            let offset = u64_at(data, at + 24).ok_or_else(|| bad("section header"))? as usize;
            let size = u64_at(data, at + 32).ok_or_else(|| bad("section header"))? as usize;
            let link = u32_at(data, at + 40).ok_or_else(|| bad("section header"))? as usize;
            let strtab_at = shoff + link * 64;
            let str_off = u64_at(data, strtab_at + 24).ok_or_else(|| bad("string table"))? as usize;
            for s in (offset..offset + size).step_by(24) {
                let name = u32_at(data, s).ok_or_else(|| bad("symbol"))? as usize;
                let value = u64_at(data, s + 8).ok_or_else(|| bad("symbol"))?;
                let bytes = data.get(str_off + name..).unwrap_or(&[]);
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(0);
                if String::from_utf8_lossy(&bytes[..end]).contains(FINISH_SYMBOL) {
                    finish = Some(value);
                }
            }
        }
    }
    Ok(Image {
        segments,
        entry,
        finish,
        window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64: a trampoline segment at its physical address (entry there), then in the
    /// window one R+X segment, one R segment and one RW segment.
    fn tiny_elf() -> Vec<u8> {
        let mut d = vec![0u8; 0x400];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[24..32].copy_from_slice(&0x10_0008u64.to_le_bytes());
        d[32..40].copy_from_slice(&64u64.to_le_bytes());
        d[54..56].copy_from_slice(&56u16.to_le_bytes());
        d[56..58].copy_from_slice(&4u16.to_le_bytes());
        let ph = |d: &mut Vec<u8>, i: usize, flags: u32, off: u64, va: u64, pa: u64, sz: u64| {
            let at = 64 + i * 56;
            d[at..at + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            d[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
            d[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            d[at + 16..at + 24].copy_from_slice(&va.to_le_bytes());
            d[at + 24..at + 32].copy_from_slice(&pa.to_le_bytes());
            d[at + 32..at + 40].copy_from_slice(&sz.to_le_bytes());
            d[at + 40..at + 48].copy_from_slice(&sz.to_le_bytes());
        };
        ph(&mut d, 0, 5, 0x1f0, 0x10_0000, 0x10_0000, 0x10);
        ph(&mut d, 1, 5, 0x200, WINDOW_BASE, 0x10_1000, 0x20);
        ph(&mut d, 2, 4, 0x220, WINDOW_BASE + 0x1000, 0x10_2000, 0x10);
        ph(&mut d, 3, 6, 0x230, WINDOW_BASE + 0x2000, 0x10_3000, 0x10);
        for (i, b) in d[0x200..0x240].iter_mut().enumerate() {
            *b = i as u8;
        }
        d
    }

    #[test]
    fn keeps_only_the_windows_non_writable_segments_by_virtual_address() {
        let image = parse(&tiny_elf()).unwrap();
        assert_eq!(image.segments.len(), 2, "the trampoline is not compared");
        assert_eq!(image.segments[0].vaddr, WINDOW_BASE);
        assert!(image.segments[0].executable);
        assert_eq!(image.segments[0].bytes, (0..0x20).collect::<Vec<u8>>());
        assert_eq!(image.segments[1].vaddr, WINDOW_BASE + 0x1000);
        assert_eq!(image.segments[1].kind(), "read-only data");
        assert_eq!(image.window, (WINDOW_BASE, WINDOW_BASE + 0x2010));
        // The entry is in the trampoline, at its physical address.
        assert_eq!(image.entry, 0x10_0008);
        assert_eq!(image.finish, None);
    }

    #[test]
    fn refuses_what_is_not_an_elf64() {
        assert!(
            parse(b"not an elf at all, but long enough to have a header of sixty-four b").is_err()
        );
    }
}
