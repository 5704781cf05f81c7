//! The boot ISO of one run: `boot/vigil`, `boot/guest.elf`, `boot/grub/grub.cfg`, made into a
//! BIOS-bootable image by `grub-mkrescue`. GRUB stays on the VGA console: COM1 is the guest's.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::layout::RunDir;

/// What GRUB boots.
#[derive(Clone, Debug)]
pub struct IsoSpec {
    /// The guest ELF (multiboot1).
    pub guest: PathBuf,
    /// The guest's command line.
    pub guest_args: String,
    /// Vigil's ELF and its command line; `None` boots the guest bare.
    pub vigil: Option<(PathBuf, String)>,
}

/// The grub.cfg for a run.
pub fn grub_cfg(vigil_options: Option<&str>, guest_args: &str) -> String {
    match vigil_options {
        Some(options) => grub_entry(
            "vigil",
            &[
                ("multiboot2 /boot/vigil", options),
                ("module2 /boot/guest.elf guest", guest_args),
            ],
        ),
        None => grub_entry("bare", &[("multiboot /boot/guest.elf", guest_args)]),
    }
}

/// A grub.cfg with no menu delay and one entry, `title`, that runs `commands` and boots. Each
/// command is a head, written as it is, and arguments, whose words are quoted for GRUB.
pub fn grub_entry(title: &str, commands: &[(&str, &str)]) -> String {
    let mut cfg = format!("set timeout=0\nset default=0\n\nmenuentry \"{title}\" {{\n");
    for (head, args) in commands {
        cfg.push_str(&format!("    {}\n", command(head, args)));
    }
    cfg.push_str("    boot\n}\n");
    cfg
}

/// `head` followed by the words of `args`, each quoted for GRUB's shell-like parser if needed.
fn command(head: &str, args: &str) -> String {
    let mut line = head.to_string();
    for word in args.split_whitespace() {
        line.push(' ');
        line.push_str(&grub_quote(word));
    }
    line
}

/// Quote one word for grub.cfg: plain words stay as they are; anything else goes in single
/// quotes (inside which GRUB takes every character literally, except `'` itself).
fn grub_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.,:=/+@%^~".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Stage the ISO tree under `<run dir>/iso` and make `<run dir>/vigil.iso`; returns its path
/// and how long that took.
pub fn make(dir: &RunDir, spec: &IsoSpec) -> Result<(PathBuf, Duration), String> {
    let start = Instant::now();
    let tree = dir.file("iso");
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(|e| format!("cannot clear {}: {e}", tree.display()))?;
    }
    let grub = tree.join("boot/grub");
    fs::create_dir_all(&grub).map_err(|e| format!("cannot create {}: {e}", grub.display()))?;

    // The guest goes on as given: its bytes are the user's (and where GRUB places a module
    // depends on its size).
    fs::copy(&spec.guest, tree.join("boot/guest.elf"))
        .map_err(|e| format!("cannot copy {}: {e}", spec.guest.display()))?;
    if let Some((vigil, _)) = &spec.vigil {
        copy_stripped(vigil, &tree.join("boot/vigil"))?;
    }
    let cfg = grub_cfg(
        spec.vigil.as_ref().map(|(_, o)| o.as_str()),
        &spec.guest_args,
    );
    write(&grub.join("grub.cfg"), &cfg)?;

    let iso = mkrescue(dir, &tree)?;
    Ok((iso, start.elapsed()))
}

/// `grub-mkrescue` over a staged tree; returns the path of `<run dir>/vigil.iso`.
pub fn mkrescue(dir: &RunDir, tree: &Path) -> Result<PathBuf, String> {
    let iso = dir.file("vigil.iso");
    let _ = fs::remove_file(&iso);
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(tree)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run grub-mkrescue: {e}"))?;
    if !out.status.success() || !iso.exists() {
        return Err(format!(
            "grub-mkrescue failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(iso)
}

/// Whether Vigil goes on the ISO without its debug information (about 1 s less per boot; the
/// unstripped binary stays in the target directory for symbolizing backtraces).
const STRIP_VIGIL: bool = true;

/// Copy Vigil onto the ISO tree, without its debug information if [`STRIP_VIGIL`] (see `elf`).
pub fn copy_stripped(from: &Path, to: &Path) -> Result<(), String> {
    let data = fs::read(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    if !STRIP_VIGIL {
        return fs::write(to, data).map_err(|e| format!("cannot write {}: {e}", to.display()));
    }
    let data = match crate::elf::strip_debug(&data) {
        Ok(Some(stripped)) => stripped,
        Ok(None) => data,
        Err(e) => {
            crate::step(&format!("{}: {e}; copied as is", from.display()));
            data
        }
    };
    fs::write(to, data).map_err(|e| format!("cannot write {}: {e}", to.display()))
}

pub fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vigil_entry_loads_vigil_and_the_guest_module() {
        let cfg = grub_cfg(Some("trap=rdtsc,io:0x80 tsc=offset:0x1000"), "case=all");
        assert!(cfg.starts_with("set timeout=0\nset default=0\n"));
        assert!(cfg.contains("    multiboot2 /boot/vigil trap=rdtsc,io:0x80 tsc=offset:0x1000\n"));
        assert!(cfg.contains("    module2 /boot/guest.elf guest case=all\n"));
        assert_eq!(cfg.matches("menuentry").count(), 1);
        assert!(!cfg.contains("serial"), "GRUB must stay off COM1");
        assert!(!cfg.contains("terminal"));
    }

    #[test]
    fn bare_entry_is_multiboot1_without_trailing_space() {
        let cfg = grub_cfg(None, "");
        assert!(cfg.contains("    multiboot /boot/guest.elf\n"));
        assert!(!cfg.contains("multiboot2"));
        assert!(!cfg.contains("module"));
    }

    #[test]
    fn empty_vigil_options_give_a_bare_multiboot2_line() {
        let cfg = grub_cfg(Some("  "), "");
        assert!(cfg.contains("    multiboot2 /boot/vigil\n"));
        assert!(cfg.contains("    module2 /boot/guest.elf guest\n"));
    }

    #[test]
    fn odd_words_are_quoted() {
        assert_eq!(grub_quote("log=info"), "log=info");
        assert_eq!(grub_quote("a;b"), "'a;b'");
        assert_eq!(grub_quote("$x"), "'$x'");
        assert_eq!(grub_quote("it's"), "'it'\\''s'");
    }
}
