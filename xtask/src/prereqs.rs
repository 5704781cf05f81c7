//! Prerequisites, checked at the start of every command: the Debian packages for Bochs (Debian's
//! 2.7 with the BIOS ROMs both emulators use, and what building the reference 3.0 needs), the
//! GRUB ISO, and the rustup target for the bare-metal crates. Missing Debian packages are
//! installed when running as root; otherwise the command to run is printed.

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::layout::{Layout, BARE_TARGET};
use crate::sys;

/// Debian packages xtask needs (Bochs with its ROMs; grub-mkrescue and what it calls).
pub const PACKAGES: &[&str] = &[
    "bochs",
    "bochsbios",
    "vgabios",
    "grub-pc-bin",
    "grub-common",
    "xorriso",
    "mtools",
    // The Linux guest's initramfs (`cpio -o -H newc`).
    "cpio",
    // The debugger scenarios drive a real gdb against Vigil's stub.
    "gdb",
    // A guest users bring: /boot/memtest86+x64.bin, a non-relocatable bzImage (memtest scenarios).
    "memtest86+",
    // QEMU's TCG, the second AMD platform (`qemu.rs`: SVM without NRIP save).
    "qemu-system-x86",
];

/// [`PACKAGES`] and what building the reference Bochs needs (`bochs_build::BUILD_PACKAGES`).
fn all_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .chain(crate::bochs_build::BUILD_PACKAGES)
        .copied()
        .collect()
}

pub fn ensure(layout: &Layout) -> Result<(), String> {
    let start = Instant::now();
    let missing = missing_packages()?;
    if !missing.is_empty() {
        let list = missing.join(" ");
        if sys::is_root() {
            eprintln!("xtask: installing Debian packages: {list}");
            run_checked(Command::new("apt-get").arg("update"), "apt-get update")?;
            run_checked(
                Command::new("apt-get")
                    .args(["install", "-y"])
                    .args(&missing)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                "apt-get install",
            )?;
            let still = missing_packages()?;
            if !still.is_empty() {
                return Err(format!("still missing after apt-get: {}", still.join(" ")));
            }
        } else {
            return Err(format!(
                "missing Debian packages: {list}\n  install them with:\n    sudo apt-get update && \
                 sudo DEBIAN_FRONTEND=noninteractive apt-get install -y {list}"
            ));
        }
    }

    let targets = installed_targets(layout)?;
    if !targets.iter().any(|t| t == BARE_TARGET) {
        // The target goes into the user's own toolchain (no root needed): add it idempotently.
        eprintln!("xtask: adding rustup target {BARE_TARGET}");
        run_checked(
            Command::new("rustup")
                .args(["target", "add", BARE_TARGET])
                .current_dir(&layout.root),
            "rustup target add",
        )
        .map_err(|e| format!("{e}\n  run: rustup target add {BARE_TARGET}"))?;
    }
    crate::step(&format!(
        "prerequisites ok ({})",
        crate::secs(start.elapsed())
    ));
    Ok(())
}

/// Packages from [`all_packages`] that dpkg does not report as `install ok installed`.
fn missing_packages() -> Result<Vec<String>, String> {
    let packages = all_packages();
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${Status}\\n")
        .args(&packages)
        .stderr(Stdio::null())
        .output();
    let out = match out {
        Ok(out) => out,
        // No dpkg (not Debian): settle for the programs and ROMs being there.
        Err(_) => return Ok(missing_without_dpkg()),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(packages
        .iter()
        .filter(|pkg| {
            !text.lines().any(|line| {
                let mut words = line.splitn(2, ' ');
                words.next() == Some(**pkg) && words.next() == Some("install ok installed")
            })
        })
        .map(|pkg| pkg.to_string())
        .collect())
}

fn missing_without_dpkg() -> Vec<String> {
    let needs: &[(&str, &str)] = &[
        ("bochs", "/usr/bin/bochs"),
        ("bochsbios", "/usr/share/bochs/BIOS-bochs-latest"),
        ("vgabios", "/usr/share/bochs/VGABIOS-lgpl-latest"),
        ("grub-pc-bin", "/usr/lib/grub/i386-pc"),
        ("grub-common", "/usr/bin/grub-mkrescue"),
        ("xorriso", "/usr/bin/xorriso"),
        ("mtools", "/usr/bin/mformat"),
        ("cpio", "/usr/bin/cpio"),
        ("g++", "/usr/bin/g++"),
        ("make", "/usr/bin/make"),
        ("xz-utils", "/usr/bin/xz"),
        ("memtest86+", "/boot/memtest86+x64.bin"),
        ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ];
    needs
        .iter()
        .filter(|(_, path)| !std::path::Path::new(path).exists())
        .map(|(pkg, _)| pkg.to_string())
        .collect()
}

fn installed_targets(layout: &Layout) -> Result<Vec<String>, String> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(&layout.root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| {
            format!(
                "cannot run rustup ({e}): install rustup, or add the {BARE_TARGET} target to \
                 your toolchain"
            )
        })?;
    if !out.status.success() {
        return Err(format!("rustup target list --installed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect())
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {status}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bochs_build_packages_are_prerequisites() {
        let all = super::all_packages();
        for p in crate::bochs_build::BUILD_PACKAGES
            .iter()
            .chain(super::PACKAGES)
        {
            assert!(all.contains(p), "{p}");
        }
    }
}
