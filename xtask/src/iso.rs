//! The boot ISO of one run: `boot/vigil`, `boot/guest.elf`, `boot/grub/grub.cfg`, made into a
//! BIOS-bootable image by `grub-mkrescue`. GRUB stays on the VGA console: COM1 is the guest's,
//! COM2 Vigil's. Only when GRUB cannot load the boot files (too little RAM, a file it refuses)
//! does it switch to COM2, say why, and end the run through Bochs' shutdown port, so the reason
//! reaches the user instead of a silent timeout.

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
    /// The guest's own boot modules (a multiboot guest reads them from its boot information).
    pub modules: Vec<IsoModule>,
}

/// A boot module for the guest: `boot/moduleN` on the ISO with these bytes, loaded by GRUB's
/// `module` bare and `module2 … module STRING` under Vigil.
#[derive(Clone, Debug)]
pub struct IsoModule {
    pub bytes: Vec<u8>,
    pub string: String,
}

/// The grub.cfg for a run without boot modules.
#[cfg(test)]
pub fn grub_cfg(vigil_options: Option<&str>, guest_args: &str) -> String {
    grub_cfg_with_modules(vigil_options, guest_args, &[])
}

/// The grub.cfg for a run whose guest has boot modules (`boot/module0` … with these strings).
pub fn grub_cfg_with_modules(
    vigil_options: Option<&str>,
    guest_args: &str,
    module_strings: &[&str],
) -> String {
    let heads: Vec<String> = (0..module_strings.len())
        .map(|i| match vigil_options {
            Some(_) => format!("module2 /boot/module{i} module"),
            None => format!("module /boot/module{i}"),
        })
        .collect();
    let mut commands: Vec<(&str, &str)> = match vigil_options {
        Some(options) => vec![
            ("multiboot2 /boot/vigil", options),
            ("module2 /boot/guest.elf guest", guest_args),
        ],
        None => vec![("multiboot /boot/guest.elf", guest_args)],
    };
    for (head, string) in heads.iter().zip(module_strings) {
        commands.push((head, string));
    }
    let title = if vigil_options.is_some() {
        "vigil"
    } else {
        "bare"
    };
    grub_entry(title, &commands)
}

/// The line GRUB prints on COM2 before the error of a boot file it could not load.
pub const GRUB_FAILED: &str = "GRUB could not load the boot files:";

/// A grub.cfg with no menu delay and one entry, `title`, that runs `commands` and boots. Each
/// command is a head, written as it is, and arguments, whose words are quoted for GRUB.
///
/// The commands run as the conditions of nested `if`s, and `boot` (which does not return) at
/// the innermost. If one fails (GRUB prints its error on the console nobody sees), they run
/// again with GRUB's terminal on COM2, so that its error message goes there after
/// [`GRUB_FAILED`], and the bytes of `Shutdown` to port 0x8900 end Bochs. No command beyond
/// the loaders' runs on the way to `boot`: each one GRUB has not loaded yet is a module read from
/// the emulated CD.
pub fn grub_entry(title: &str, commands: &[(&str, &str)]) -> String {
    let mut cfg = format!("set timeout=0\nset default=0\n\nmenuentry \"{title}\" {{\n");
    let mut indent = String::from("    ");
    for (head, args) in commands {
        cfg.push_str(&format!("{indent}if {}; then\n", command(head, args)));
        indent.push_str("    ");
    }
    cfg.push_str(&format!("{indent}boot\n"));
    for _ in commands {
        indent.truncate(indent.len() - 4);
        cfg.push_str(&format!("{indent}fi\n"));
    }
    cfg.push_str("    serial --unit=1 --speed=115200\n");
    cfg.push_str("    terminal_output serial\n");
    cfg.push_str(&format!("    echo \"{GRUB_FAILED}\"\n"));
    for (head, args) in commands {
        cfg.push_str(&format!("    {}\n", command(head, args)));
    }
    cfg.push_str("    insmod iorw\n");
    for b in b"Shutdown" {
        cfg.push_str(&format!("    outb 0x8900 {b:#04x}\n"));
    }
    cfg.push_str("}\n");
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
    for (i, m) in spec.modules.iter().enumerate() {
        let path = tree.join(format!("boot/module{i}"));
        fs::write(&path, &m.bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let strings: Vec<&str> = spec.modules.iter().map(|m| m.string.as_str()).collect();
    let cfg = grub_cfg_with_modules(
        spec.vigil.as_ref().map(|(_, o)| o.as_str()),
        &spec.guest_args,
        &strings,
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
        assert!(!cfg.contains("--unit=0"), "GRUB must stay off COM1");
        // GRUB goes to COM2 only after `boot`, which does not return, when a file did not load.
        let boot = cfg.find("            boot\n        fi\n    fi\n").unwrap();
        assert!(cfg.find("serial --unit=1").unwrap() > boot);
        assert!(cfg.find("terminal_output serial").unwrap() > boot);
        assert!(cfg.contains(
            "    if multiboot2 /boot/vigil trap=rdtsc,io:0x80 tsc=offset:0x1000; then\n"
        ));
        assert!(cfg.contains("        if module2 /boot/guest.elf guest case=all; then\n"));
        assert_eq!(cfg.matches("outb 0x8900 ").count(), 8);
        assert!(!cfg.contains("[ "), "no `test` module on the way to boot");
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
    fn modules_are_module2_under_vigil_and_module_bare() {
        let vigil = grub_cfg_with_modules(Some(""), "case=modules", &["env a=1", ""]);
        assert!(vigil.contains("if module2 /boot/module0 module env a=1; then"));
        assert!(vigil.contains("if module2 /boot/module1 module; then"));
        let bare = grub_cfg_with_modules(None, "case=modules", &["env a=1"]);
        assert!(bare.contains("if module /boot/module0 env a=1; then"));
    }

    #[test]
    fn odd_words_are_quoted() {
        assert_eq!(grub_quote("log=info"), "log=info");
        assert_eq!(grub_quote("a;b"), "'a;b'");
        assert_eq!(grub_quote("$x"), "'$x'");
        assert_eq!(grub_quote("it's"), "'it'\\''s'");
    }
}
