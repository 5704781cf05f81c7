//! Vigil's fault and panic reports end with a frame-pointer backtrace of raw addresses:
//! ```text
//! backtrace:
//!   0: 0x0000000004008c56
//!   1: 0x0000000004003a10
//! ```
//! xtask turns them into function names and source lines with `addr2line` (binutils) and the
//! unstripped Vigil binary in the target directory.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::report::parse_hex;

/// The addresses of the last backtrace among `lines`.
pub fn backtrace_addresses(lines: &[&str]) -> Vec<u64> {
    let Some(start) = lines.iter().rposition(|l| l.trim() == "backtrace:") else {
        return Vec::new();
    };
    lines[start + 1..]
        .iter()
        .map_while(|l| {
            let (index, addr) = l.trim().split_once(": ")?;
            index.parse::<u32>().ok()?;
            parse_hex(addr)
        })
        .collect()
}

/// One line per address: `N: 0x… function at file:line`, inlined callers on further lines.
pub fn symbolize(elf: &Path, addrs: &[u64]) -> Result<Vec<String>, String> {
    // Frames after the first hold return addresses: look up the call instruction before them.
    let lookups: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{:#x}", if i == 0 { *a } else { a.saturating_sub(1) }))
        .collect();
    let out = Command::new("addr2line")
        .args(["-a", "-f", "-C", "-i", "-e"])
        .arg(elf)
        .args(&lookups)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run addr2line ({e}): install binutils to symbolize"))?;
    if !out.status.success() {
        return Err(format!("addr2line failed: {}", out.status));
    }
    Ok(format_addr2line(
        addrs,
        &String::from_utf8_lossy(&out.stdout),
    ))
}

/// `addr2line -a -f -i` output: per address a `0x…` line, then (function, file:line) pairs.
fn format_addr2line(addrs: &[u64], text: &str) -> Vec<String> {
    let mut blocks: Vec<Vec<(String, String)>> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("0x") {
            blocks.push(Vec::new());
            continue;
        }
        let location = lines.next().unwrap_or("??:0");
        if let Some(block) = blocks.last_mut() {
            block.push((line.to_string(), shorten(location)));
        }
    }
    let mut shown = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let frames = blocks.get(i).cloned().unwrap_or_default();
        let mut frames = frames.into_iter();
        let (func, at) = frames.next().unwrap_or(("??".into(), "??:0".into()));
        shown.push(format!("{i:>3}: {addr:#018x} {func} at {at}"));
        for (func, at) in frames {
            shown.push(format!("     {:18} inlined into {func} at {at}", ""));
        }
    }
    shown
}

/// Paths inside the workspace or cargo's registry, made short.
fn shorten(location: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../");
    let location = location.strip_prefix(root).unwrap_or(location);
    match location.find("/.cargo/registry/src/") {
        Some(at) => {
            let rest = &location[at + "/.cargo/registry/src/".len()..];
            rest.split_once('/').map_or(rest, |(_, r)| r).to_string()
        }
        None => location.to_string(),
    }
}

/// The symbolized backtrace of a run's COM2 output, if it has one; `Err` says why not.
pub fn vigil_backtrace(com2: &[&str], vigil: &Path) -> Option<Result<Vec<String>, String>> {
    let addrs = backtrace_addresses(com2);
    if addrs.is_empty() {
        return None;
    }
    Some(symbolize(vigil, &addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtrace_block() {
        let lines = [
            "==== Vigil panic: at vigil/src/x.rs:3",
            "backtrace:",
            "  0: 0x0000000004008c56",
            "  1: 0x0000000004003a10",
            "(symbolize with: addr2line ...)",
        ];
        assert_eq!(backtrace_addresses(&lines), vec![0x4008c56, 0x4003a10]);
        assert!(backtrace_addresses(&["no backtrace here"]).is_empty());
    }

    #[test]
    fn addr2line_output_with_inlining() {
        let text = "0x0000000004008c56\nvigil::a\n/x/vigil/src/a.rs:10\nvigil::b\n\
                    /x/vigil/src/b.rs:20\n0x0000000004003a0f\n??\n??:0\n";
        let shown = format_addr2line(&[0x4008c56, 0x4003a10], text);
        assert_eq!(shown.len(), 3);
        assert_eq!(
            shown[0],
            "  0: 0x0000000004008c56 vigil::a at /x/vigil/src/a.rs:10"
        );
        assert!(shown[1].ends_with("inlined into vigil::b at /x/vigil/src/b.rs:20"));
        assert_eq!(shown[2], "  1: 0x0000000004003a10 ?? at ??:0");
    }

    #[test]
    fn symbolizes_an_elf_entry_point() {
        // This test's own executable: its ELF entry point is `_start` (when binutils is there).
        let exe = std::env::current_exe().unwrap();
        let image = std::fs::read(&exe).unwrap();
        let entry = u64::from_le_bytes(image[24..32].try_into().unwrap());
        match symbolize(&exe, &[entry]) {
            Ok(lines) => assert!(lines[0].contains(" _start at "), "{lines:?}"),
            Err(e) => assert!(e.contains("binutils"), "{e}"),
        }
    }
}
