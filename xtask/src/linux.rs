//! The Linux guest: the kernel command line, the GRUB entry that boots the kernel and initrd
//! bare or under Vigil, the ISO, and a Linux run or scenario. The kernel and initrd come from
//! [`crate::linux_material`] (Debian's packages, cached, and the initramfs of
//! [`crate::initramfs`]); the verdict on a run and the scenarios' checks are in
//! [`crate::linux_checks`].
//!
//! GRUB entries (docs/architecture.md):
//! ```text
//! under Vigil: multiboot2 /boot/vigil <vigil options>
//!              module2 /boot/vmlinuz guest <kernel command line>
//!              module2 --nounzip /boot/initrd.gz initrd
//! bare:        linux /boot/vmlinuz <kernel command line>
//!              initrd /boot/initrd.gz
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::build::VIGIL;
use crate::iso;
use crate::layout::{Layout, RunDir};
use crate::linux_material::{material, Material};
use crate::outcome::{Mode, Outcome};
use crate::scenarios::Scenario;

/// `--guest linux`, and the `guest` of the Linux scenarios.
pub const GUEST: &str = "linux";
/// The kernel command line before the user's `--append`. The console runs at 115200 baud like
/// Vigil's: Bochs models the line speed, and at the kernel's default 9600 a boot spends most of
/// its time printing. `clearcpuid=580` hides FSRM, which Bochs' tigerlake model mishandles
/// even bare (harmless elsewhere).
pub const BASE_CMDLINE: &str = "console=ttyS0,115200 panic=-1 clearcpuid=580";
/// The default timeout of a Linux run (a boot takes well under a minute bare; some Vigil
/// policies make it several times slower).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// `--kernel`, `--initrd`, `--append` of `cargo xtask run --guest linux` and `bench`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinuxArgs {
    /// The user's bzImage instead of Debian's cloud kernel.
    pub kernel: Option<PathBuf>,
    /// The user's initrd instead of the busybox initramfs.
    pub initrd: Option<PathBuf>,
    /// Words appended to [`BASE_CMDLINE`].
    pub append: String,
}

impl LinuxArgs {
    /// Whether the initrd is ours (its `/init` prints the marker lines).
    pub fn our_initrd(&self) -> bool {
        self.initrd.is_none()
    }

    /// [`BASE_CMDLINE`] and the appended words. Linux reads only the first `clearcpuid=` (its
    /// early parameter parser stops at the first match), so the values of an appended one join
    /// the base's.
    pub fn cmdline(&self) -> String {
        let mut words: Vec<String> = BASE_CMDLINE.split(' ').map(String::from).collect();
        for word in self.append.split_whitespace() {
            let base = words.iter_mut().find(|w| w.starts_with("clearcpuid="));
            match (word.strip_prefix("clearcpuid="), base) {
                (Some(more), Some(base)) => {
                    base.push(',');
                    base.push_str(more);
                }
                _ => words.push(word.to_string()),
            }
        }
        words.join(" ")
    }
}

/// The grub.cfg of a Linux run (Vigil's options, or `None` for bare).
pub fn grub_cfg(vigil_options: Option<&str>, cmdline: &str) -> String {
    match vigil_options {
        Some(options) => iso::grub_entry(
            "vigil linux",
            &[
                ("multiboot2 /boot/vigil", options),
                ("module2 /boot/vmlinuz guest", cmdline),
                // --nounzip: GRUB would otherwise hand over the gunzipped archive.
                ("module2 --nounzip /boot/initrd.gz initrd", ""),
            ],
        ),
        None => iso::grub_entry(
            "linux",
            &[
                ("linux /boot/vmlinuz", cmdline),
                ("initrd /boot/initrd.gz", ""),
            ],
        ),
    }
}

/// Stage `<run dir>/iso` (vmlinuz, initrd.gz, Vigil when given, grub.cfg) and make the ISO.
pub fn make_iso(
    dir: &RunDir,
    material: &Material,
    vigil: Option<(&Path, &str)>,
) -> Result<(PathBuf, Duration), String> {
    let start = Instant::now();
    let tree = dir.file("iso");
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(|e| format!("cannot clear {}: {e}", tree.display()))?;
    }
    let boot = tree.join("boot");
    fs::create_dir_all(boot.join("grub"))
        .map_err(|e| format!("cannot create {}: {e}", boot.display()))?;
    for (from, name) in [
        (&material.kernel, "vmlinuz"),
        (&material.initrd, "initrd.gz"),
    ] {
        fs::copy(from, boot.join(name))
            .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
    }
    if let Some((bin, _)) = vigil {
        iso::copy_stripped(bin, &boot.join("vigil"))?;
    }
    iso::write(
        &boot.join("grub/grub.cfg"),
        &grub_cfg(vigil.map(|(_, o)| o), &material.cmdline),
    )?;
    let iso = iso::mkrescue(dir, &tree)?;
    Ok((iso, start.elapsed()))
}

/// What `run` needs for a Linux run: the material, the run directory and the ISO.
pub fn prepare(layout: &Layout, args: &crate::cli::RunArgs) -> Result<(RunDir, PathBuf), String> {
    let material = material(layout, &args.linux)?;
    let mode = if args.bare { Mode::Bare } else { Mode::Vigil };
    let vigil = vigil_bin(layout, mode)?;
    let options = args.effective_vigil_options().unwrap_or_default();
    let dir = RunDir::claim(layout, &format!("run-linux-{}", mode.name()))
        .map_err(|e| format!("cannot make the run directory: {e}"))?;
    let (iso, took) = make_iso(
        &dir,
        &material,
        vigil.as_deref().map(|b| (b, options.as_str())),
    )?;
    crate::step(&format!(
        "ISO {} with {} ({})",
        layout.show(&iso),
        layout.show(&material.kernel),
        crate::secs(took)
    ));
    Ok((dir, iso))
}

/// Vigil's binary for a run under Vigil (`None` bare).
pub fn vigil_bin(layout: &Layout, mode: Mode) -> Result<Option<PathBuf>, String> {
    if mode == Mode::Bare {
        return Ok(None);
    }
    let bin = layout.bare_bin(VIGIL);
    if bin.is_file() {
        Ok(Some(bin))
    } else {
        Err(format!("no Vigil binary at {}", bin.display()))
    }
}

/// A Linux scenario of `cargo xtask test` (its `guest_args` are appended to the kernel's
/// command line).
pub fn run_scenario(layout: &Layout, s: &Scenario, verbose: bool) -> Result<Outcome, String> {
    let args = LinuxArgs {
        append: s.guest_args.to_string(),
        ..LinuxArgs::default()
    };
    let material = material(layout, &args)?;
    let vigil = vigil_bin(layout, s.mode)?;
    crate::suite::boot(layout, s, verbose, |dir| {
        let with_vigil = vigil.as_deref().map(|b| (b, s.vigil_options));
        Ok(make_iso(dir, &material, with_vigil)?.0)
    })
}

#[cfg(test)]
#[path = "linux_tests.rs"]
mod tests;
