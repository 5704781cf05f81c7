//! The reference emulator: Bochs 3.0 from Debian's source package, fetched, verified, built
//! and cached once per machine, outside any checkout (a fresh clone and `cargo clean` reuse it).
//!
//! - **Fetch**: apt's own source download from Debian trixie, with a private sources list,
//!   lists and cache directory (the system's apt configuration is neither read for sources nor
//!   changed). The mirror is the one the system's apt uses for its Debian release
//!   (`apt-cache policy`), or `VIGIL_DEBIAN_MIRROR`. Only the upstream tarball
//!   (`bochs_3.0+dfsg.orig.tar.xz`) is used: Debian's patches change paths, documentation and
//!   the BIOS build, nothing the emulation depends on. The `.dsc` has answered 404, so apt may
//!   exit non-zero; what counts is the tarball.
//! - **Verify**: the tarball's SHA-256 must equal both the `Checksums-Sha256` of the signed
//!   Sources index (apt checks the index against the release's signature) and the hash pinned
//!   here ([`ORIG_SHA256`]). The pin makes the reference platform reproducible: a new upstream
//!   tarball in Debian (a rebuilt or re-packed 3.0, or a compromised mirror together with a
//!   stale signing key) is refused instead of silently changing the emulator every figure and
//!   scenario was measured on. Debian revisions (-2, -3) reuse the same tarball and still pass.
//! - **Fix**: the few emulator defects the project cannot work around in Vigil, its guests or
//!   its scenarios are fixed in the unpacked source ([`FIXES`]: each inserts lines after one
//!   line that must occur exactly once, or the build stops). docs/platform.md says why each.
//! - **Build**: `configure` with [`CONFIGURE`], `make -jN`, `make install` into a staging
//!   directory, a version check of the result, then one `rename` into place: the cache
//!   directory exists only when complete, so an interrupted build is never used (its leftovers
//!   are removed by the next build). A lock file serializes builds of concurrent xtask runs;
//!   the second waits and then uses the first one's result.
//! - **Where**: `$VIGIL_BOCHS_CACHE`, else `$XDG_CACHE_HOME/vigil`, else `~/.cache/vigil`, in a
//!   directory named after the version and a hash of the tarball, the fixes and the configure
//!   line, so that a changed fix or configure line builds anew next to the old one.
//!
//! The BIOS and VGA ROMs are Debian's `bochsbios` and `vgabios` packages (the dfsg tarball has
//! no ROM images); the bochsrc names them.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::emulator::{Emulator, Version};
use crate::layout::Layout;

/// The Debian release whose source package is built.
pub const SUITE: &str = "trixie";
pub const SOURCE_PACKAGE: &str = "bochs";
/// Upstream version of the source package (any Debian revision of it).
pub const UPSTREAM_VERSION: &str = "3.0+dfsg";
pub const VERSION: Version = Version(3, 0);
pub const ORIG: &str = "bochs_3.0+dfsg.orig.tar.xz";
/// SHA-256 of [`ORIG`] as Debian trixie's signed Sources index lists it.
pub const ORIG_SHA256: &str = "78f6c73d4a6472d5130a87ab9dc306d02c7c71ed8e25b3a8ef642e2a7acd282b";
/// The directory the tarball unpacks into.
const SOURCE_DIR: &str = "bochs-3.0";

/// Bochs' configure line: headless (RFB), the x86-64 CPU with VMX (with EPT, VPID,
/// preemption timer, MTF, …), SVM, AVX/EVEX/CET for the newer models, SMP, the internal
/// debugger (`--debug-vigil`, and how every run is started), PCI and the i440FX devices, the
/// CD-ROM GRUB boots from, and the A20 pin. No sound (then no `sound:` bochsrc line, see
/// `Emulator::sound_line`), no plugins (faster). `--enable-idle-hack` does not build with nogui.
///
/// Not `--enable-all-optimizations`: it turns on handler chaining, with which Bochs advances
/// its clock, and so the TSC, once per trace instead of once per instruction (`cpu_loop` in
/// `cpu/cpu.cc` synchronizes time after a whole trace). Every RDTSC inside a trace then reads
/// the same stale time, single-instruction costs depend on where traces end, and Vigil's exact
/// time accounting (`tsc=hide`, `tsc=frozen`) has no exact clock to be measured against:
/// docs/platform.md. The two speedups that keep time per instruction stay on; a Linux boot
/// took 15 s of Bochs either way.
pub const CONFIGURE: &[&str] = &[
    "--with-nogui",
    "--with-rfb",
    "--with-term",
    "--enable-x86-64",
    "--enable-smp",
    "--enable-vmx=2",
    "--enable-svm",
    "--enable-avx",
    "--enable-evex",
    "--enable-cet",
    "--enable-debugger",
    "--enable-pci",
    "--enable-cdrom",
    "--enable-a20-pin",
    "--enable-repeat-speedups",
    "--enable-fast-function-calls",
    "--enable-fpu",
    "--enable-usb",
    "--enable-e1000",
];
/// Compiler flags: optimized, without debug information (a third faster to build).
const CXXFLAGS: &str = "-O2 -pipe";

/// A change to one file of the unpacked source: `insert` goes on the lines after the one line
/// of `file` that reads `after` (surrounding blanks aside), which must occur exactly once.
struct Fix {
    /// What it fixes, for `VIGIL-BUILD.txt` (docs/platform.md has the whole story).
    name: &'static str,
    file: &'static str,
    after: &'static str,
    insert: &'static str,
}

/// The emulator defects fixed in the reference build (docs/platform.md, "Emulator defects").
const FIXES: &[Fix] = &[Fix {
    // With several processors and without its debugger, Bochs runs them in turn from the loop
    // in `main.cc`; an exception (`longjmp` from `exception()`) lands in that loop's `setjmp`,
    // which, unlike `cpu_loop`'s, does not commit the new RIP. `prev_rip` still names the
    // interrupted instruction, and the next boundary checks the instruction breakpoints there
    // (`handleAsyncEvent`, `cpu/event.cc`), RF already cleared by the delivery: a #DB delivered
    // at an instruction with an execute breakpoint is raised again before the handler's first
    // instruction, on top of the previous frame, until the stack runs into the page tables.
    name: "several processors: commit RIP after an exception, as the one-processor loop does",
    file: "main.cc",
    after: "BX_CPU(processor)->icount++;",
    insert: concat!(
        "          // Vigil's fix (docs/platform.md): commit the new RIP and drop a speculative\n",
        "          // RSP after an exception, as cpu_loop does after its own setjmp.\n",
        "          BX_CPU(processor)->prev_rip = BX_CPU(processor)->get_instruction_pointer();\n",
        "          BX_CPU(processor)->speculative_rsp = false;\n",
    ),
}];

/// `text` with the fixes of `fixes` that belong to `file` applied.
fn apply_fixes(file: &str, text: &str, fixes: &[Fix]) -> Result<String, String> {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(String::from).collect();
    for fix in fixes.iter().filter(|f| f.file == file) {
        let at: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].trim() == fix.after)
            .collect();
        let [i] = at[..] else {
            return Err(format!(
                "fix \"{}\": {} has {} lines `{}`, expected exactly one",
                fix.name,
                fix.file,
                at.len(),
                fix.after
            ));
        };
        if !lines[i].ends_with('\n') {
            lines[i].push('\n');
        }
        lines.insert(i + 1, fix.insert.to_string());
    }
    Ok(lines.concat())
}

/// Debian packages the build needs: the compiler, make, xz for the tarball, the curses headers
/// of `--with-term` and readline for the debugger's command line.
pub const BUILD_PACKAGES: &[&str] = &[
    "g++",
    "make",
    "xz-utils",
    "libncurses-dev",
    "libreadline-dev",
];

/// The environment variable that moves the cache.
pub const CACHE_ENV: &str = "VIGIL_BOCHS_CACHE";
/// The environment variable that names the Debian mirror (`http://HOST/debian`).
pub const MIRROR_ENV: &str = "VIGIL_DEBIAN_MIRROR";

/// The cache's root directory.
pub fn cache_root() -> Result<PathBuf, String> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(CACHE_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("vigil"));
    }
    match var("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("vigil")),
        None => Err(format!(
            "no HOME, XDG_CACHE_HOME or {CACHE_ENV}: nowhere to cache the Bochs build"
        )),
    }
}

/// The build's directory in the cache: version, then a hash of everything that shapes it.
pub fn build_dir(root: &Path) -> PathBuf {
    root.join(format!("bochs-{UPSTREAM_VERSION}-{:016x}", build_key()))
}

fn build_key() -> u64 {
    // FNV-1a over the tarball's hash, the fixes, the configure line and the flags.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |s: &str| {
        for b in s.bytes().chain([0]) {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(ORIG_SHA256);
    for fix in FIXES {
        [fix.file, fix.after, fix.insert]
            .iter()
            .for_each(|s| eat(s));
    }
    CONFIGURE.iter().for_each(|a| eat(a));
    eat(CXXFLAGS);
    h
}

/// The cached Bochs, built first if needed.
pub fn ensure(_layout: &Layout) -> Result<Emulator, String> {
    let root = cache_root()?;
    let dir = build_dir(&root);
    let program = dir.join("bin").join("bochs");
    if !program.is_file() {
        fs::create_dir_all(&root)
            .map_err(|e| format!("cannot create the cache {}: {e}", root.display()))?;
        // One build at a time on this machine; whoever waited finds it done.
        let lock_path = root.join("bochs-build.lock");
        let lock = File::create(&lock_path)
            .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            crate::step(&format!(
                "another xtask is building Bochs {VERSION}; waiting for it ({})",
                lock_path.display()
            ));
            lock.lock()
                .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
        }
        if !program.is_file() {
            build(&root, &dir)?;
        }
        drop(lock);
    }
    let version = crate::emulator::probe_version(&program)?;
    if version != VERSION {
        return Err(format!(
            "{} reports Bochs {version}, expected {VERSION}: remove {} to build it again",
            program.display(),
            dir.display()
        ));
    }
    Ok(Emulator {
        program,
        version,
        origin: format!(
            "built from Debian's source package {SOURCE_PACKAGE} {UPSTREAM_VERSION}, cached"
        ),
        sound: false,
    })
}

/// Fetch, verify, build and install into `dir` (atomically).
fn build(root: &Path, dir: &Path) -> Result<(), String> {
    let start = Instant::now();
    crate::step(&format!(
        "Bochs {VERSION} is not built yet: fetching Debian's source package {SOURCE_PACKAGE} \
         ({SUITE}), building it into {} (a few minutes, once per machine)",
        dir.display()
    ));
    // Leftovers of interrupted builds (we hold the lock: nobody else is building).
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("build-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let work = root.join(format!("build-{}", std::process::id()));
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let result = build_in(&work, dir);
    match &result {
        Ok(()) => {
            let _ = fs::remove_dir_all(&work);
            crate::step(&format!(
                "Bochs {VERSION} built and cached in {} ({})",
                dir.display(),
                crate::secs(start.elapsed())
            ));
        }
        Err(_) => crate::step(&format!(
            "the Bochs build failed; its files are in {}",
            work.display()
        )),
    }
    result
}

fn build_in(work: &Path, dir: &Path) -> Result<(), String> {
    let t = Instant::now();
    let orig = fetch(work)?;
    crate::step(&format!(
        "fetched and verified {ORIG} (sha256 {ORIG_SHA256}) ({})",
        crate::secs(t.elapsed())
    ));
    if crate::sys::interrupted() {
        return Err("interrupted".into());
    }

    let t = Instant::now();
    run_logged(
        Command::new("tar")
            .arg("-xf")
            .arg(&orig)
            .arg("-C")
            .arg(work),
        &work.join("tar.log"),
        "unpacking the tarball",
    )?;
    let src = work.join(SOURCE_DIR);
    if !src.join("configure").is_file() {
        return Err(format!("{ORIG} did not unpack into {SOURCE_DIR}/"));
    }
    let mut files: Vec<&str> = FIXES.iter().map(|f| f.file).collect();
    files.sort_unstable();
    files.dedup();
    for file in files {
        let path = src.join(file);
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        fs::write(&path, apply_fixes(file, &text, FIXES)?)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    crate::step(&format!(
        "applied {} fix(es) to the source (docs/platform.md)",
        FIXES.len()
    ));
    let mut configure = Command::new("./configure");
    configure
        .arg(format!("--prefix={}", dir.display()))
        .args(CONFIGURE)
        .env("CFLAGS", CXXFLAGS)
        .env("CXXFLAGS", CXXFLAGS)
        .current_dir(&src);
    crate::step(&format!(
        "configuring: ./configure {} (log: {})",
        CONFIGURE.join(" "),
        work.join("configure.log").display()
    ));
    run_logged(&mut configure, &work.join("configure.log"), "configure")?;
    crate::step(&format!("configured ({})", crate::secs(t.elapsed())));

    // How many compilations `make` will run, for the progress line.
    let planned = Command::new("make")
        .arg("-n")
        .current_dir(&src)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| count_compiles(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or(0);
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Instant::now();
    make(&src, jobs, planned, &work.join("make.log"))?;
    crate::step(&format!(
        "compiled with make -j{jobs} ({})",
        crate::secs(t.elapsed())
    ));

    let stage = work.join("stage");
    run_logged(
        Command::new("make")
            .arg("install")
            .arg(format!("DESTDIR={}", stage.display()))
            .current_dir(&src),
        &work.join("install.log"),
        "make install",
    )?;
    let staged = stage.join(dir.strip_prefix("/").unwrap_or(dir));
    let bin = staged.join("bin").join("bochs");
    let version = crate::emulator::probe_version(&bin)?;
    if version != VERSION {
        return Err(format!("the build reports Bochs {version}, not {VERSION}"));
    }
    // What was built, and the logs, go with it.
    let logs = staged.join("build-logs");
    fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    for log in ["configure.log", "make.log", "install.log"] {
        let _ = fs::copy(work.join(log), logs.join(log));
    }
    let fixed: String = FIXES
        .iter()
        .map(|f| format!("fix ({}): {}\n", f.file, f.name))
        .collect();
    let about = format!(
        "Bochs {VERSION}, built by cargo xtask from Debian {SUITE}'s source package \
         {SOURCE_PACKAGE} ({ORIG}, sha256 {ORIG_SHA256}, without Debian's patches).\n\
         {fixed}configure {}\nCFLAGS/CXXFLAGS {CXXFLAGS}\n",
        CONFIGURE.join(" ")
    );
    fs::write(staged.join("VIGIL-BUILD.txt"), about).map_err(|e| e.to_string())?;
    // The one step that makes the build visible.
    fs::rename(&staged, dir)
        .map_err(|e| format!("cannot move {} to {}: {e}", staged.display(), dir.display()))
}

/// `apt-get source --download-only` with a private sources list; returns the verified tarball.
fn fetch(work: &Path) -> Result<PathBuf, String> {
    let apt = work.join("apt");
    let lists = apt.join("lists");
    let cache = apt.join("cache");
    let download = work.join("download");
    for d in [
        lists.join("partial"),
        cache.join("archives/partial"),
        download.clone(),
    ] {
        fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let mirror = mirror()?;
    let sources = apt.join("sources.list");
    fs::write(&sources, format!("deb-src {mirror} {SUITE} main\n"))
        .map_err(|e| format!("cannot write {}: {e}", sources.display()))?;
    let options = apt_options(&sources, &lists, &cache);

    crate::step(&format!(
        "apt-get update for `deb-src {mirror} {SUITE} main` (private lists)"
    ));
    run_logged(
        Command::new("apt-get").args(&options).arg("update"),
        &work.join("apt-update.log"),
        "apt-get update (private sources list)",
    )?;
    let index = Command::new("apt-cache")
        .args(&options)
        .args(["showsrc", SOURCE_PACKAGE])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run apt-cache: {e}"))?;
    let index = String::from_utf8_lossy(&index.stdout).into_owned();
    let (version, listed) = index_entry(&index, ORIG).ok_or_else(|| {
        format!(
            "Debian {SUITE} no longer lists {ORIG} for source package {SOURCE_PACKAGE} \
             (its versions: {}): Vigil's reference Bochs is pinned to {UPSTREAM_VERSION}; \
             building another version means updating the pin in xtask/src/bochs_build.rs \
             after checking it",
            versions(&index).join(", ")
        )
    })?;
    if listed != ORIG_SHA256 {
        return Err(format!(
            "Debian's index lists {ORIG} with sha256 {listed}, but xtask pins {ORIG_SHA256}: \
             the upstream tarball changed; refusing to build it"
        ));
    }

    // The .dsc may answer 404, and then apt exits non-zero after downloading the tarballs.
    let status = Command::new("apt-get")
        .args(&options)
        .args(["source", "--download-only"])
        .arg(format!("{SOURCE_PACKAGE}={version}"))
        .current_dir(&download)
        .stdin(Stdio::null())
        .stdout(log_file(&work.join("apt-source.log"))?)
        .stderr(log_file(&work.join("apt-source.log"))?)
        .status()
        .map_err(|e| format!("cannot run apt-get source: {e}"))?;
    let orig = download.join(ORIG);
    if !orig.is_file() {
        return Err(format!(
            "apt-get source {SOURCE_PACKAGE}={version} did not download {ORIG} ({status}; see {})",
            work.join("apt-source.log").display()
        ));
    }
    let got = sha256(&orig)?;
    if got != ORIG_SHA256 {
        return Err(format!(
            "{} has sha256 {got}; the index and xtask's pin say {ORIG_SHA256}: refusing it",
            orig.display()
        ));
    }
    Ok(orig)
}

fn apt_options(sources: &Path, lists: &Path, cache: &Path) -> Vec<String> {
    let mut o = vec![
        format!("-oDir::Etc::sourcelist={}", sources.display()),
        "-oDir::Etc::sourceparts=-".to_string(),
        format!("-oDir::State::Lists={}", lists.display()),
        format!("-oDir::Cache={}", cache.display()),
        "-oAPT::Get::List-Cleanup=0".to_string(),
        "-qq".to_string(),
    ];
    if crate::sys::is_root() {
        // apt's `_apt` user cannot enter a cache under /root; download as root (what apt
        // falls back to anyway, with a warning).
        o.push("-oAPT::Sandbox::User=root".to_string());
    }
    o
}

/// The Debian mirror: `$VIGIL_DEBIAN_MIRROR`, else the one the system's apt uses for its
/// Debian release.
fn mirror() -> Result<String, String> {
    if let Ok(m) = std::env::var(MIRROR_ENV) {
        if !m.trim().is_empty() {
            return Ok(m.trim().trim_end_matches('/').to_string());
        }
    }
    let out = Command::new("apt-cache")
        .arg("policy")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run apt-cache policy: {e}"))?;
    debian_mirror(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        format!(
            "the system's apt has no Debian main archive to take the mirror from: set \
             {MIRROR_ENV}=http://<mirror>/debian"
        )
    })
}

/// From `apt-cache policy`: the URL of a Debian release's `main` (not `-security`/`-updates`).
fn debian_mirror(policy: &str) -> Option<String> {
    let lines: Vec<&str> = policy.lines().collect();
    lines.windows(2).find_map(|w| {
        let mut words = w[0].split_whitespace();
        let (_prio, url, dist) = (words.next()?, words.next()?, words.next()?);
        let (suite, component) = dist.split_once('/')?;
        let debian = w[1].contains("o=Debian,") && w[1].contains("l=Debian,");
        (url.starts_with("http") && component == "main" && !suite.contains('-') && debian)
            .then(|| url.trim_end_matches('/').to_string())
    })
}

/// In `apt-cache showsrc` output: the version of a record that lists `file`, and its SHA-256.
fn index_entry(showsrc: &str, file: &str) -> Option<(String, String)> {
    for record in showsrc.split("\n\n") {
        let version = record
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .map(str::trim);
        let mut in_sha = false;
        for line in record.lines() {
            if !line.starts_with(' ') {
                in_sha = line.starts_with("Checksums-Sha256:");
                continue;
            }
            if in_sha {
                let w: Vec<&str> = line.split_whitespace().collect();
                if let ([hash, _size, name], Some(v)) = (&w[..], version) {
                    if *name == file {
                        return Some((v.to_string(), hash.to_string()));
                    }
                }
            }
        }
    }
    None
}

fn versions(showsrc: &str) -> Vec<String> {
    showsrc
        .lines()
        .filter_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().to_string())
        .collect()
}

fn sha256(path: &Path) -> Result<String, String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run sha256sum: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .map(String::from)
        .ok_or_else(|| format!("sha256sum {} failed", path.display()))
}

/// Lines of `make` output that compile one file.
fn count_compiles(text: &str) -> usize {
    text.lines().filter(|l| is_compile(l)).count()
}

fn is_compile(line: &str) -> bool {
    (line.starts_with("g++ ") || line.starts_with("gcc ") || line.starts_with("cc "))
        && line.contains(" -c ")
}

/// `make -jN`, its output in `log`, with a progress line (compilations done / planned).
fn make(src: &Path, jobs: usize, planned: usize, log: &Path) -> Result<(), String> {
    let mut out = log_file(log)?;
    let mut child = Command::new("make")
        .arg(format!("-j{jobs}"))
        .current_dir(src)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(log)?)
        .spawn()
        .map_err(|e| format!("cannot run make: {e}"))?;
    let terminal = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last = Instant::now();
    let mut done = 0usize;
    let mut shown_percent = 0;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(out, "{line}");
            if crate::sys::interrupted() {
                let _ = child.kill();
                break;
            }
            if !is_compile(&line) {
                continue;
            }
            done += 1;
            let percent = (done * 100).checked_div(planned).unwrap_or(0).min(100);
            let elapsed = start.elapsed().as_secs();
            let text = format!(
                "building Bochs {VERSION}: compiled {done}/{planned} files ({percent} %), \
                 {}:{:02}",
                elapsed / 60,
                elapsed % 60
            );
            if terminal {
                eprint!("\r\x1b[K{text}");
                let _ = std::io::stderr().flush();
            } else if percent >= shown_percent + 10 || last.elapsed() >= Duration::from_secs(30) {
                crate::step(&text);
                shown_percent = percent - percent % 10;
                last = Instant::now();
            }
        }
    }
    if terminal {
        eprint!("\r\x1b[K");
    }
    let status = child.wait().map_err(|e| format!("make: {e}"))?;
    if crate::sys::interrupted() {
        return Err("interrupted".into());
    }
    if !status.success() {
        return Err(format!(
            "make failed ({status}); the end of {}:\n{}",
            log.display(),
            tail(log, 15)
        ));
    }
    Ok(())
}

fn log_file(path: &Path) -> Result<File, String> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

fn run_logged(cmd: &mut Command, log: &Path, what: &str) -> Result<(), String> {
    let status = cmd
        .stdin(Stdio::null())
        .stdout(log_file(log)?)
        .stderr(log_file(log)?)
        .status()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({status}); the end of {}:\n{}",
            log.display(),
            tail(log, 15)
        ))
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOWSRC: &str = "Package: bochs
Binary: bochs, bochs-doc, bochsbios
Version: 3.0+dfsg-1
Format: 3.0 (quilt)
Files:
 0a1b2c3d4e5f60718293a4b5c6d7e8f9 2554 bochs_3.0+dfsg-1.dsc
Checksums-Sha256:
 6a4edf052e133b241cf22d96cd6816587e9d5d11df20cb92accb2234d8f036d4 2554 bochs_3.0+dfsg-1.dsc
 78f6c73d4a6472d5130a87ab9dc306d02c7c71ed8e25b3a8ef642e2a7acd282b 3896488 bochs_3.0+dfsg.orig.tar.xz
 c68fe1162aa485249467ec93707ccbf5d039b00d12815899fc2c819ec16d00df 30720 bochs_3.0+dfsg-1.debian.tar.xz
Directory: pool/main/b/bochs

Package: bochs
Version: 2.7+dfsg-4
Checksums-Sha256:
 1111111111111111111111111111111111111111111111111111111111111111 100 bochs_2.7+dfsg.orig.tar.xz
";

    #[test]
    fn the_index_gives_the_version_and_hash_of_the_tarball() {
        assert_eq!(
            index_entry(SHOWSRC, ORIG),
            Some(("3.0+dfsg-1".into(), ORIG_SHA256.into()))
        );
        assert_eq!(
            index_entry(SHOWSRC, "bochs_2.7+dfsg.orig.tar.xz").map(|e| e.0),
            Some("2.7+dfsg-4".into())
        );
        // The md5 `Files:` list is not a SHA-256 list.
        assert_eq!(index_entry(SHOWSRC, "bochs_3.1.orig.tar.xz"), None);
        assert_eq!(versions(SHOWSRC), vec!["3.0+dfsg-1", "2.7+dfsg-4"]);
    }

    #[test]
    fn the_mirror_is_the_debian_release_archive() {
        let policy = "Package files:
 100 /var/lib/dpkg/status
     release a=now
 500 http://mirror.example/debian-security bookworm-security/main amd64 Packages
     release v=12,o=Debian,a=oldstable-security,n=bookworm-security,l=Debian-Security,c=main,b=amd64
 500 http://mirror.example/debian bookworm-updates/main amd64 Packages
     release v=12-updates,o=Debian,a=oldstable-updates,n=bookworm-updates,l=Debian,c=main,b=amd64
 500 http://mirror.example/debian/ bookworm/main amd64 Packages
     release v=12.14,o=Debian,a=oldstable,n=bookworm,l=Debian,c=main,b=amd64
";
        assert_eq!(
            debian_mirror(policy).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            debian_mirror("Package files:\n 100 /var/lib/dpkg/status\n"),
            None
        );
    }

    #[test]
    fn compile_lines_are_counted() {
        let make = "g++ -c -I. -O2 ./cpu/cpu.cc -o cpu/cpu.o\n\
                    /bin/bash ./libtool --mode=link --tag CXX g++ -o bochs\n\
                    gcc -c -I. ./misc/bxhub.cc -o misc/bxhub.o\n\
                    make[1]: Entering directory\n";
        assert_eq!(count_compiles(make), 2);
    }

    #[test]
    fn a_fix_goes_after_its_one_line() {
        let fix = Fix {
            name: "t",
            file: "main.cc",
            after: "b();",
            insert: "  fixed();\n",
        };
        let fixes = [fix];
        assert_eq!(
            apply_fixes("main.cc", "a();\n  b();\nc();\n", &fixes).unwrap(),
            "a();\n  b();\n  fixed();\nc();\n"
        );
        // The last line, without its newline.
        assert_eq!(
            apply_fixes("main.cc", "a();\nb();", &fixes).unwrap(),
            "a();\nb();\n  fixed();\n"
        );
        // Other files are left alone.
        assert_eq!(apply_fixes("cpu.cc", "b();\n", &fixes).unwrap(), "b();\n");
        // No line, two lines, or a line that only contains it: the source is not the one the
        // fix was written for, and the build stops.
        for text in ["a();\n", "b();\nb();\n", "bb();\n"] {
            let err = apply_fixes("main.cc", text, &fixes).unwrap_err();
            assert!(err.contains("expected exactly one"), "{err}");
        }
    }

    #[test]
    fn the_reference_fixes_name_one_line_each() {
        for fix in FIXES {
            assert!(!fix.after.contains('\n') && !fix.after.trim().is_empty());
            assert!(fix.insert.ends_with('\n'), "{}", fix.name);
        }
    }

    #[test]
    fn the_cache_is_keyed_by_what_shapes_the_build() {
        let dir = build_dir(Path::new("/c"));
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("bochs-3.0+dfsg-"), "{name}");
        assert_eq!(dir, build_dir(Path::new("/c")));
        assert!(CONFIGURE.contains(&"--enable-vmx=2") && !CONFIGURE.contains(&"--enable-sb16"));
    }
}
