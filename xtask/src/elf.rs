//! Dropping debug information from Vigil's image on the ISO. GRUB reads every byte of it from
//! the emulated CD, and Vigil's release build carries megabytes of DWARF: stripping it saves
//! about a second per boot. The unstripped binary stays in the target directory for
//! symbolizing addresses.
//!
//! Like `objcopy --strip-debug`: loadable contents and every section header stay (so section
//! indices in the symbol table stay valid); non-allocated sections other than the symbol and
//! string tables become empty.

const SHF_ALLOC: u64 = 0x2;
const SHT_NOBITS: u32 = 8;
const EHDR_SIZE: usize = 64;
const SHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
/// Non-allocated sections kept: the symbols (small, and useful to whoever reads the image).
const KEPT: &[&str] = &[".symtab", ".strtab", ".shstrtab"];

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

#[derive(Clone, Copy, Debug)]
struct Section {
    name: u32,
    kind: u32,
    flags: u64,
    offset: u64,
    size: u64,
    align: u64,
}

/// The image without its debug sections, or `None` when it is not a little-endian ELF64 with
/// section headers, or stripping would not make it smaller.
pub fn strip_debug(data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    if data.len() < EHDR_SIZE || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return Ok(None);
    }
    let bad = || "malformed ELF header".to_string();
    let phoff = u64_at(data, 32).ok_or_else(bad)? as usize;
    let shoff = u64_at(data, 40).ok_or_else(bad)? as usize;
    let phentsize = u16_at(data, 54).ok_or_else(bad)? as usize;
    let phnum = u16_at(data, 56).ok_or_else(bad)? as usize;
    let shentsize = u16_at(data, 58).ok_or_else(bad)? as usize;
    let shnum = u16_at(data, 60).ok_or_else(bad)? as usize;
    let shstrndx = u16_at(data, 62).ok_or_else(bad)? as usize;
    if shnum == 0 || shoff == 0 || shentsize != SHDR_SIZE || (phnum > 0 && phentsize != PHDR_SIZE) {
        return Ok(None);
    }

    let mut sections = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let at = shoff + i * SHDR_SIZE;
        let field = |off: usize| u64_at(data, at + off).ok_or("section header out of the file");
        sections.push(Section {
            name: u32_at(data, at).ok_or("section header out of the file")?,
            kind: u32_at(data, at + 4).ok_or("section header out of the file")?,
            flags: field(8)?,
            offset: field(24)?,
            size: field(32)?,
            align: field(48)?,
        });
    }
    let name_of = |s: &Section| -> &str {
        let Some(strtab) = sections.get(shstrndx) else {
            return "";
        };
        let start = strtab.offset as usize + s.name as usize;
        let bytes = data.get(start..).unwrap_or(&[]);
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(0);
        std::str::from_utf8(&bytes[..end]).unwrap_or("")
    };

    // Everything a loader reads: headers, segments, allocated sections.
    let mut prefix = EHDR_SIZE.max(phoff + phnum * PHDR_SIZE);
    for i in 0..phnum {
        let at = phoff + i * PHDR_SIZE;
        let offset = u64_at(data, at + 8).ok_or("program header out of the file")? as usize;
        let filesz = u64_at(data, at + 32).ok_or("program header out of the file")? as usize;
        if filesz > 0 {
            prefix = prefix.max(offset + filesz);
        }
    }
    for s in &sections {
        if s.flags & SHF_ALLOC != 0 && s.kind != SHT_NOBITS {
            prefix = prefix.max((s.offset + s.size) as usize);
        }
    }
    if prefix > data.len() {
        return Err("segments reach past the end of the file".into());
    }

    let mut out = data[..prefix].to_vec();
    let mut headers = data
        .get(shoff..shoff + shnum * SHDR_SIZE)
        .ok_or("section headers out of the file")?
        .to_vec();
    for (i, s) in sections.iter().enumerate() {
        if s.flags & SHF_ALLOC != 0 || s.kind == SHT_NOBITS || i == 0 {
            continue;
        }
        let (offset, size) = if i == shstrndx || KEPT.contains(&name_of(s)) {
            let align = s.align.max(1) as usize;
            out.resize(out.len().next_multiple_of(align), 0);
            let bytes = data
                .get(s.offset as usize..(s.offset + s.size) as usize)
                .ok_or("section data out of the file")?;
            let offset = out.len() as u64;
            out.extend_from_slice(bytes);
            (offset, s.size)
        } else {
            (0, 0)
        };
        let at = i * SHDR_SIZE;
        headers[at + 24..at + 32].copy_from_slice(&offset.to_le_bytes());
        headers[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(8), 0);
    let new_shoff = out.len() as u64;
    out.extend_from_slice(&headers);
    out[40..48].copy_from_slice(&new_shoff.to_le_bytes());
    Ok((out.len() < data.len()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test's own executable: an ELF64 with debug information.
    fn own_image() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    fn sections(d: &[u8]) -> Vec<(String, Section)> {
        let shoff = u64_at(d, 40).unwrap() as usize;
        let shnum = u16_at(d, 60).unwrap() as usize;
        let shstrndx = u16_at(d, 62).unwrap() as usize;
        let read = |i: usize| {
            let at = shoff + i * SHDR_SIZE;
            Section {
                name: u32_at(d, at).unwrap(),
                kind: u32_at(d, at + 4).unwrap(),
                flags: u64_at(d, at + 8).unwrap(),
                offset: u64_at(d, at + 24).unwrap(),
                size: u64_at(d, at + 32).unwrap(),
                align: u64_at(d, at + 48).unwrap(),
            }
        };
        let strtab = read(shstrndx);
        (0..shnum)
            .map(|i| {
                let s = read(i);
                let start = (strtab.offset + s.name as u64) as usize;
                let end = start + d[start..].iter().position(|&b| b == 0).unwrap();
                (String::from_utf8_lossy(&d[start..end]).into_owned(), s)
            })
            .collect()
    }

    #[test]
    fn stripping_keeps_what_loads_and_the_symbols() {
        let image = own_image();
        let stripped = strip_debug(&image)
            .unwrap()
            .expect("a debug build has DWARF to drop");
        assert!(stripped.len() < image.len());
        // Headers and program headers are unchanged apart from e_shoff.
        assert_eq!(image[..40], stripped[..40]);
        assert_eq!(image[48..64], stripped[48..64]);
        let before = sections(&image);
        let after = sections(&stripped);
        assert_eq!(before.len(), after.len());
        let mut dropped = 0;
        for ((name, b), (name2, a)) in before.iter().zip(&after) {
            assert_eq!(name, name2);
            let bytes =
                |d: &[u8], s: &Section| d[s.offset as usize..(s.offset + s.size) as usize].to_vec();
            if b.flags & SHF_ALLOC != 0 && b.kind != SHT_NOBITS {
                assert_eq!(b.offset, a.offset, "{name} moved");
                assert_eq!(bytes(&image, b), bytes(&stripped, a), "{name} changed");
            } else if KEPT.contains(&name.as_str()) {
                assert_eq!(bytes(&image, b), bytes(&stripped, a), "{name} changed");
            } else if name.starts_with(".debug") {
                assert_eq!(a.size, 0, "{name} kept");
                dropped += 1;
            }
        }
        assert!(dropped > 0);
        // Stripping again changes nothing more.
        assert_eq!(strip_debug(&stripped).unwrap(), None);
    }

    #[test]
    fn other_files_are_left_alone() {
        assert_eq!(strip_debug(b"not an elf").unwrap(), None);
        let mut elf32 = own_image();
        elf32[4] = 1;
        assert_eq!(strip_debug(&elf32).unwrap(), None);
    }
}
