//! The kernel and initrd of a Linux run: the user's files (checked), or Debian's cloud kernel
//! and busybox-static, downloaded as Debian packages and cached under
//! `<target>/linux-cache/`, with the initramfs of [`crate::initramfs`] built around busybox.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use crate::initramfs;
use crate::layout::Layout;
use crate::linux::LinuxArgs;

/// The Debian metapackage that names the current cloud kernel package.
const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
const BUSYBOX_PACKAGE: &str = "busybox-static";

/// What GRUB boots.
#[derive(Clone, Debug)]
pub struct Material {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// Material is prepared by one thread at a time (the test suite starts scenarios in parallel).
static PREPARING: Mutex<()> = Mutex::new(());

/// The kernel and initrd of a run: the user's (checked), else Debian's kernel and our initramfs,
/// fetched and built only when missing.
pub fn material(layout: &Layout, args: &LinuxArgs) -> Result<Material, String> {
    let _one_at_a_time = PREPARING.lock().unwrap_or_else(|e| e.into_inner());
    let kernel = match &args.kernel {
        Some(path) => user_file(path, "--kernel")?,
        None => debian_kernel(layout)?,
    };
    let initrd = match &args.initrd {
        Some(path) => user_file(path, "--initrd")?,
        None => {
            let busybox = debian_busybox(layout)?;
            let (initrd, built) = initramfs::build(&cache_dir(layout), &busybox)?;
            if built {
                crate::step(&format!("built the initramfs {}", layout.show(&initrd)));
            }
            initrd
        }
    };
    Ok(Material {
        kernel,
        initrd,
        cmdline: args.cmdline(),
    })
}

/// A file the user named: it must exist, be a regular file and not be empty.
pub fn user_file(path: &Path, flag: &str) -> Result<PathBuf, String> {
    match fs::metadata(path) {
        Err(e) => Err(format!("{flag} {}: {e}", path.display())),
        Ok(m) if !m.is_file() => Err(format!("{flag} {}: not a regular file", path.display())),
        Ok(m) if m.len() == 0 => Err(format!("{flag} {}: the file is empty", path.display())),
        Ok(_) => Ok(path.to_path_buf()),
    }
}

pub fn cache_dir(layout: &Layout) -> PathBuf {
    layout.target.join("linux-cache")
}

/// `<cache>/kernel/boot/vmlinuz-*`, unpacked from the current `linux-image-*-cloud-amd64`.
fn debian_kernel(layout: &Layout) -> Result<PathBuf, String> {
    let dir = cache_dir(layout).join("kernel");
    if let Some(found) = find_vmlinuz(&dir) {
        return Ok(found);
    }
    let package = kernel_package()?;
    fetch_and_unpack(layout, &package, &dir)?;
    find_vmlinuz(&dir).ok_or_else(|| {
        format!(
            "the package {package} holds no boot/vmlinuz-* (unpacked in {})",
            dir.display()
        )
    })
}

fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir.join("boot"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// `<cache>/busybox/bin/busybox`, unpacked from `busybox-static`.
fn debian_busybox(layout: &Layout) -> Result<PathBuf, String> {
    let dir = cache_dir(layout).join("busybox");
    let bin = dir.join("bin/busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    fetch_and_unpack(layout, BUSYBOX_PACKAGE, &dir)?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "the package {BUSYBOX_PACKAGE} holds no bin/busybox"
        ))
    }
}

/// The kernel package the metapackage depends on (`apt-cache depends linux-image-cloud-amd64`),
/// after `apt-get update` when apt does not know the metapackage yet.
fn kernel_package() -> Result<String, String> {
    let ask = || -> Result<Option<String>, String> {
        let out = Command::new("apt-cache")
            .args(["depends", KERNEL_METAPACKAGE])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run apt-cache: {e}"))?;
        Ok(parse_depends(&String::from_utf8_lossy(&out.stdout)))
    };
    if let Some(package) = ask()? {
        return Ok(package);
    }
    apt_update()?;
    ask()?.ok_or_else(|| {
        format!("apt-cache depends {KERNEL_METAPACKAGE} names no linux-image-*-cloud-amd64 package")
    })
}

/// The `linux-image-…-cloud-amd64` package among `apt-cache depends` output.
pub fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| {
            p.starts_with("linux-image-") && p.ends_with("-cloud-amd64") && *p != KERNEL_METAPACKAGE
        })
        .map(str::to_string)
}

/// `apt-get update`, once per xtask process (needs root: otherwise the command to run).
fn apt_update() -> Result<(), String> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return Ok(());
    }
    if !crate::sys::is_root() {
        return Err(
            "apt does not know the Linux guest's packages yet; run: sudo apt-get update".into(),
        );
    }
    crate::step("apt-get update (the package lists do not know the Linux guest's packages)");
    let status = Command::new("apt-get")
        .arg("update")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !status.success() {
        return Err(format!("apt-get update failed ({status})"));
    }
    *done = true;
    Ok(())
}

/// `apt-get download PACKAGE` into `<cache>/debs/`, then `dpkg-deb -x` into `dest` (through a
/// temporary directory, so an interrupted unpack is never taken for a complete one).
fn fetch_and_unpack(layout: &Layout, package: &str, dest: &Path) -> Result<(), String> {
    let start = Instant::now();
    let debs = cache_dir(layout).join("debs");
    fs::create_dir_all(&debs).map_err(|e| format!("cannot create {}: {e}", debs.display()))?;
    let deb = match find_deb(&debs, package) {
        Some(deb) => deb,
        None => {
            crate::step(&format!("apt-get download {package}"));
            if apt_download(package, &debs).is_err() {
                // A fresh machine's apt may not know the package yet.
                apt_update()?;
                apt_download(package, &debs)?;
            }
            find_deb(&debs, package)
                .ok_or_else(|| format!("apt-get download {package} left no {package}_*.deb"))?
        }
    };
    let tmp = dest.with_extension("unpacking");
    let _ = fs::remove_dir_all(&tmp);
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tmp)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "dpkg-deb -x {} failed ({}): {}",
            deb.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let _ = fs::remove_dir_all(dest);
    fs::rename(&tmp, dest).map_err(|e| format!("cannot rename {}: {e}", tmp.display()))?;
    crate::step(&format!(
        "{package} unpacked in {} ({})",
        layout.show(dest),
        crate::secs(start.elapsed())
    ));
    Ok(())
}

fn apt_download(package: &str, dir: &Path) -> Result<(), String> {
    let mut cmd = Command::new("apt-get");
    cmd.arg("download");
    if crate::sys::is_root() {
        // apt drops to its `_apt` user to download, which may not be able to write here; as
        // root there is nothing to gain from that (and it only warns).
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    let out = cmd
        .arg(package)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "apt-get download {package} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The newest `<package>_*.deb` in `dir`.
fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}
