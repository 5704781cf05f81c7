//! What Vigil's ELF says must be in the machine's memory: its loaded, non-writable segments (code
//! and read-only data) at their physical addresses, its entry point and the function that ends a
//! run. Everything comes from the file, nothing from Vigil's own output.

const PT_LOAD: u32 = 1;
const PF_W: u32 = 2;
const PF_X: u32 = 1;
const SHT_SYMTAB: u32 = 2;

/// One loaded segment that nothing may change at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Physical load address (the program header's p_paddr: where GRUB puts it).
    pub paddr: u64,
    pub vaddr: u64,
    /// The bytes (p_filesz of them; these segments have no zero-filled tail).
    pub bytes: Vec<u8>,
    pub executable: bool,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.paddr + self.bytes.len() as u64
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
    pub segments: Vec<Segment>,
    /// Physical address of the ELF entry point.
    pub entry: u64,
    /// Physical address of the function that powers the machine off at the end of every run
    /// Vigil ends itself (`vigil::power::power_off`).
    pub power_off: Option<u64>,
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
        if flags & PF_W != 0 || filesz == 0 {
            continue;
        }
        let bytes = data
            .get(offset..offset + filesz)
            .ok_or_else(|| bad("segment outside the file"))?
            .to_vec();
        segments.push(Segment {
            paddr,
            vaddr,
            bytes,
            executable: flags & PF_X != 0,
        });
    }
    if segments.is_empty() {
        return Err("the ELF has no non-writable loaded segment".into());
    }
    let phys = |v: u64| {
        loads
            .iter()
            .find(|l| l.vaddr <= v && v < l.vaddr + l.memsz)
            .map(|l| v - l.vaddr + l.paddr)
    };
    let entry = phys(entry).ok_or_else(|| bad("entry point outside every segment"))?;

    let mut power_off = None;
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
                let name = String::from_utf8_lossy(&bytes[..end]);
                // Rust's mangling of `vigil::power::power_off` (legacy scheme: length-prefixed
                // path components, then a hash).
                if name.contains("5vigil5power9power_off") {
                    power_off = phys(value);
                }
            }
        }
    }
    Ok(Image {
        segments,
        entry,
        power_off,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64: one R+X segment, one R segment, one RW segment, entry in the first.
    fn tiny_elf() -> Vec<u8> {
        let mut d = vec![0u8; 0x400];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[24..32].copy_from_slice(&0x40_0010u64.to_le_bytes());
        d[32..40].copy_from_slice(&64u64.to_le_bytes());
        d[54..56].copy_from_slice(&56u16.to_le_bytes());
        d[56..58].copy_from_slice(&3u16.to_le_bytes());
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
        ph(&mut d, 0, 5, 0x200, 0x40_0000, 0x100_0000, 0x20);
        ph(&mut d, 1, 4, 0x220, 0x40_1000, 0x100_1000, 0x10);
        ph(&mut d, 2, 6, 0x230, 0x40_2000, 0x100_2000, 0x10);
        for (i, b) in d[0x200..0x240].iter_mut().enumerate() {
            *b = i as u8;
        }
        d
    }

    #[test]
    fn keeps_only_the_non_writable_segments_at_their_physical_addresses() {
        let image = parse(&tiny_elf()).unwrap();
        assert_eq!(image.segments.len(), 2);
        assert_eq!(image.segments[0].paddr, 0x100_0000);
        assert!(image.segments[0].executable);
        assert_eq!(image.segments[0].bytes, (0..0x20).collect::<Vec<u8>>());
        assert_eq!(image.segments[1].paddr, 0x100_1000);
        assert_eq!(image.segments[1].kind(), "read-only data");
        // The entry's virtual address translated through its segment.
        assert_eq!(image.entry, 0x100_0010);
        assert_eq!(image.power_off, None);
    }

    #[test]
    fn refuses_what_is_not_an_elf64() {
        assert!(
            parse(b"not an elf at all, but long enough to have a header of sixty-four b").is_err()
        );
    }
}
