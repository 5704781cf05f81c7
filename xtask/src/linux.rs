//! The Linux guest: Debian's cloud kernel and busybox-static (downloaded as Debian packages and
//! cached under `<target>/linux-cache/`), the initramfs of [`crate::initramfs`], the GRUB entry
//! that boots them bare or under Vigil, the verdict on a run, and the checks of the Linux
//! scenarios.
//!
//! GRUB entries (docs/architecture.md):
//! ```text
//! under Vigil: multiboot2 /boot/vigil <vigil options>
//!              module2 /boot/vmlinuz guest <kernel command line>
//!              module2 --nounzip /boot/initrd.gz initrd
//! bare:        linux /boot/vmlinuz <kernel command line>
//!              initrd /boot/initrd.gz
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::build::VIGIL;
use crate::initramfs::{self, BANNER, DONE, MARKER};
use crate::iso;
use crate::layout::{Layout, RunDir};
use crate::outcome::{Mode, Outcome};
use crate::report;
use crate::scenarios::{Check, Scenario};
use crate::stream::Port;

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
/// The Debian metapackage that names the current cloud kernel package.
const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
const BUSYBOX_PACKAGE: &str = "busybox-static";

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

    pub fn cmdline(&self) -> String {
        let mut line = BASE_CMDLINE.to_string();
        for word in self.append.split_whitespace() {
            line.push(' ');
            line.push_str(word);
        }
        line
    }
}

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

/// The verdict on a Linux run: Bochs exited by itself; under Vigil its last line is
/// `run ended: ok`; with our initramfs, `/init` got to its last line. `Ok` carries the deciding
/// line.
pub fn verdict(outcome: &Outcome, our_initrd: bool) -> Result<String, String> {
    let line = match outcome.mode {
        Mode::Vigil => outcome.normal_end()?,
        Mode::Bare if outcome.exited_by_itself() => "Bochs exited".to_string(),
        Mode::Bare => return Err(outcome.end_phrase()),
    };
    if !our_initrd {
        return Ok(line);
    }
    let init = InitReport::parse(outcome.capture.port(Port::Guest));
    if !init.banner {
        return Err(format!("the initramfs never started: no `{BANNER}` line"));
    }
    if !init.done {
        return Err(format!("/init did not get to its last line `{DONE}`"));
    }
    Ok(format!("{DONE}; {line}"))
}

/// What our `/init` printed: the banner, the sections by name, the last line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitReport {
    pub banner: bool,
    pub done: bool,
    pub sections: BTreeMap<String, Vec<String>>,
}

impl InitReport {
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> InitReport {
        let mut report = InitReport::default();
        let mut open: Option<String> = None;
        for line in lines {
            let trimmed = line.trim();
            if let Some(rest) = trimmed.strip_prefix(MARKER) {
                let rest = rest.trim();
                if let Some(name) = rest.strip_prefix("begin ") {
                    report.sections.insert(name.to_string(), Vec::new());
                    open = Some(name.to_string());
                } else if rest.starts_with("end ") {
                    open = None;
                } else if trimmed == BANNER {
                    report.banner = true;
                } else if trimmed == DONE {
                    report.done = true;
                }
                continue;
            }
            if let Some(name) = &open {
                if let Some(section) = report.sections.get_mut(name) {
                    section.push(line.to_string());
                }
            }
        }
        report
    }

    pub fn section(&self, name: &str) -> Result<&[String], String> {
        self.sections
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("/init printed no `{name}` section"))
    }

    /// `uname -a` → (kernel name, release, machine).
    pub fn uname(&self) -> Result<(String, String, String), String> {
        let line = self
            .section("uname")?
            .first()
            .ok_or("the uname section is empty")?;
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 4 {
            return Err(format!("uname -a printed {line:?}"));
        }
        let machine = words
            .iter()
            .rev()
            .find(|w| w.starts_with("x86_64") || w.starts_with("i686"))
            .ok_or(format!("uname -a names no machine: {line:?}"))?;
        Ok((words[0].into(), words[2].into(), machine.to_string()))
    }

    /// A `key : value` line of the cpuinfo section.
    pub fn cpuinfo(&self, key: &str) -> Result<String, String> {
        self.section("cpuinfo")?
            .iter()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .ok_or_else(|| format!("/proc/cpuinfo has no `{key}` line"))
    }

    /// The total of `free`'s `Mem:` line, in KiB.
    pub fn mem_total_kib(&self) -> Result<u64, String> {
        let line = self
            .section("free")?
            .iter()
            .find(|l| l.trim_start().starts_with("Mem:"))
            .ok_or("free printed no `Mem:` line")?;
        line.split_whitespace()
            .nth(1)
            .and_then(report::parse_u64)
            .ok_or_else(|| format!("cannot read the total of {line:?}"))
    }

    /// (current clocksource, available clocksources).
    pub fn clocksource(&self) -> Result<(String, Vec<String>), String> {
        let lines = self.section("clocksource")?;
        let current = lines
            .first()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .ok_or("the clocksource section is empty")?;
        let available = lines
            .get(1)
            .map(|l| l.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        Ok((current, available))
    }
}

/// Every clocksource the kernel switched to (`clocksource: Switched to clocksource X`), in order.
pub fn clocksource_switches<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    lines
        .into_iter()
        .filter_map(|l| l.split("Switched to clocksource ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// Lines that report the TSC as unreliable.
pub fn tsc_trouble<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            // "Marking clocksource 'tsc' as unstable", "Marking TSC unstable due to …",
            // "TSC found unstable after boot".
            l.contains("unstable")
        })
        .map(String::from)
        .collect()
}

fn tsc_family(clocksource: &str) -> bool {
    clocksource == "tsc" || clocksource == "tsc-early"
}

// ---- checks of the Linux scenarios ----

/// Both modes: Bochs exited by itself after our `/init` ran every section; `uname -a` says
/// Linux on x86_64, cpuinfo names Intel's vendor, `free` reports a plausible total.
fn common(c: &Check) -> Result<InitReport, String> {
    verdict(c.outcome, true)?;
    let init = InitReport::parse(c.outcome.capture.port(Port::Guest));
    for name in initramfs::SECTIONS {
        if init.section(name)?.is_empty() {
            return Err(format!("/init's `{name}` section is empty"));
        }
    }
    let (kernel, release, machine) = init.uname()?;
    if kernel != "Linux" {
        return Err(format!("uname -a names the kernel {kernel:?}, not Linux"));
    }
    if !release.starts_with(|ch: char| ch.is_ascii_digit()) {
        return Err(format!("uname -a: release {release:?} is not a version"));
    }
    if machine != "x86_64" {
        return Err(format!("uname -a: machine {machine:?}, not x86_64"));
    }
    let vendor = init.cpuinfo("vendor_id")?;
    if vendor != "GenuineIntel" {
        return Err(format!("cpuinfo vendor_id is {vendor:?}, not GenuineIntel"));
    }
    let megs = crate::bochs::DEFAULT_MEGS as u64;
    let total = init.mem_total_kib()?;
    if total < megs * 1024 / 2 || total > megs * 1024 {
        return Err(format!(
            "free: Mem total {total} KiB is not between half and all of the machine's {megs} MiB"
        ));
    }
    let (current, _) = init.clocksource()?;
    if current.is_empty() {
        return Err("no current clocksource".into());
    }
    let dmesg = init.section("dmesg-time")?;
    if !dmesg.iter().any(|l| l.contains("tsc:")) {
        return Err("dmesg has no `tsc:` line".into());
    }
    Ok(init)
}

/// `linux-bare`: the reference the Vigil scenarios compare with.
pub fn check_bare(c: &Check) -> Result<(), String> {
    common(c)?;
    if let Some(line) = c.outcome.capture.com2().first() {
        return Err(format!("COM2 should be silent bare, it printed {line:?}"));
    }
    Ok(())
}

/// Under Vigil: everything of [`common`], `run ended: ok`, an exit table with CPUID exits whose
/// rows add up, and (against bare) the guest has less memory by at least Vigil's pool.
pub fn check_vigil(c: &Check) -> Result<(), String> {
    let init = common(c)?;
    let stats = report::exit_stats(&c.outcome.capture.com2())?;
    if stats.total.count == 0 {
        return Err("the exit table counts no exits".into());
    }
    if stats.count("CPUID") == 0 {
        let rows: Vec<String> = stats
            .rows
            .iter()
            .map(|(r, row)| format!("{r}={}", row.count))
            .collect();
        return Err(format!("no CPUID exits (rows: {})", rows.join(", ")));
    }
    let sum: u64 = stats.rows.values().map(|r| r.count).sum();
    if sum != stats.total.count {
        return Err(format!(
            "the exit rows add up to {sum}, the total row says {}",
            stats.total.count
        ));
    }
    if let Some(bare) = c.baseline {
        let bare = InitReport::parse(bare.capture.port(Port::Guest));
        if let (Ok(mine), Ok(theirs)) = (init.mem_total_kib(), bare.mem_total_kib()) {
            // Vigil's 16 MiB pool and its image are not the guest's.
            if mine + 16 * 1024 > theirs {
                return Err(format!(
                    "the guest has {mine} KiB under Vigil, {theirs} KiB bare: Vigil's 16 MiB \
                     pool should be missing from it"
                ));
            }
        }
    }
    Ok(())
}

/// Under a `tsc=` policy: [`check_vigil`], and the kernel's time keeping is as bare: dmesg
/// printed its TSC and clocksource lines, nothing calls the TSC unstable, and the clocksource
/// (and every switch) is the one bare Linux uses, or both are TSC clocksources (`tsc-early`
/// becomes `tsc` once its calibration is refined, which depends on how long the boot took).
pub fn check_time(c: &Check) -> Result<(), String> {
    check_vigil(c)?;
    let com1 = c.outcome.capture.com1();
    let init = InitReport::parse(com1.iter().copied());
    let dmesg = init.section("dmesg-time")?;
    if !dmesg.iter().any(|l| l.contains("clocksource:")) {
        return Err("dmesg has no `clocksource:` line".into());
    }
    if let Some(line) = tsc_trouble(com1.iter().copied()).first() {
        return Err(format!("the TSC is in trouble: {line}"));
    }
    let bare = c
        .baseline
        .ok_or("the linux-bare outcome this check compares with is missing")?;
    let bare = InitReport::parse(bare.capture.port(Port::Guest));
    let (current, _) = init.clocksource()?;
    let (bare_current, _) = bare.clocksource()?;
    let same = |a: &str, b: &str| a == b || (tsc_family(a) && tsc_family(b));
    if !same(&current, &bare_current) {
        return Err(format!(
            "the clocksource is {current}, bare Linux uses {bare_current}"
        ));
    }
    let bare_switches =
        clocksource_switches(bare.section("dmesg-time")?.iter().map(String::as_str));
    for to in clocksource_switches(dmesg.iter().map(String::as_str)) {
        if !bare_switches.iter().any(|b| same(&to, b)) {
            return Err(format!(
                "Linux switched to clocksource {to}; bare it switched to {}",
                if bare_switches.is_empty() {
                    "nothing".to_string()
                } else {
                    bare_switches.join(", ")
                }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "linux_tests.rs"]
mod tests;
