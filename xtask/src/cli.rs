//! The command line of `cargo xtask` (hand-rolled: a handful of flags do not need a parser
//! crate).

use std::path::PathBuf;
use std::time::Duration;

use crate::bochs::{DEFAULT_CPU_MODEL, DEFAULT_MEGS};
use crate::build::GUEST_KIT_BINS;

/// Vigil's options for the `demo` guest when none are given after `--`.
pub const DEMO_VIGIL_OPTIONS: &str =
    "trap=rdtsc,rdtscp,hlt,io:0x80,msr:0x10 tsc=offset:0x100000000000 hypercall=on";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

pub const HELP: &str = "\
cargo xtask: build Vigil, make its boot ISO, run it in Bochs, test it

USAGE:
    cargo xtask run   [OPTIONS] [-- VIGIL OPTIONS...]
    cargo xtask build [OPTIONS] [-- VIGIL OPTIONS...]
    cargo xtask test  [FILTER...] [TEST OPTIONS]
    cargo xtask bench [LINUX OPTIONS] [--cpu-model M] [--megs N] [--cpus N] [--timeout S] [--no-build]
                      [--bochs 3.0|2.7|PATH] [-- VIGIL OPTIONS...]
    cargo xtask help

COMMANDS:
    run     Build Vigil and the guest kit, make the ISO, boot it in Bochs and show the serial
            ports live: COM1 (the guest's) as `guest| ...`, COM2 (Vigil's) as `vigil| ...`.
            Exit status 0 only for a normal end: under Vigil, COM2's last line is
            `run ended: ok`; bare, the guest printed `guest-kit: N passed, 0 failed, ...`.
            Either way Bochs must exit by itself before the timeout.
    build   Build and make the ISO only (same options as run).
    bench   Boot Linux bare and under Vigil (the options after `--`) with identical Bochs
            settings, both at once, and print the emulated ticks to power-off of each with
            their ratio (Vigil / bare) and Vigil's exits by reason with their median cost.
    test    Host tests (cargo test -p x86-arch -p vmx -p vigil-core -p xtask; cargo test
            -p vigil --lib), then the Bochs scenarios (`cargo xtask test --list` shows
            them). FILTER selects scenarios whose name contains it (several: all they
            match); `host` selects the host tests; no FILTER runs everything. Ends with the
            line `N passed, N failed`, and `, N skipped` when the emulator lacks a feature
            some selected scenarios need (they are listed as SKIP with the feature; only
            with an older Bochs, never with the default).

EMULATOR (run, build, test, bench):
    --bochs 3.0          Bochs 3.0 built from Debian trixie's source package (the default).
                         The first use fetches, verifies and builds it (about 2 minutes on
                         2 cores) into ~/.cache/vigil/ ($XDG_CACHE_HOME/vigil, or
                         $VIGIL_BOCHS_CACHE); later runs, other checkouts and `cargo clean`
                         reuse it
    --bochs 2.7          Debian's bochs package (`bochs` on PATH)
    --bochs PATH         Any Bochs binary
    VIGIL_BOCHS=3.0|2.7|PATH in the environment does the same when --bochs is not given.
    Every command prints which Bochs it uses (version and path).

OPTIONS (run, build):
    --guest NAME|PATH    Guest to boot: demo (default), cases, hostile, debuggee, debuggee32
                         (made for gdb), linux, or the path of any multiboot1 ELF
    --guest-args \"ARGS\"  The guest's command line (e.g. \"case=triple-fault\")
    --bare               Boot the guest directly, without Vigil
    --cpu-model MODEL    Bochs CPU model (default corei7_skylake_x; see `bochs --help cpu`;
                         tigerlake adds the monitor trap flag)
    --timeout SECONDS    Kill Bochs after this many seconds (default 120; 600 for linux)
    --megs N             Machine RAM in MiB (default 256, at most 8192; RAM below 4 GiB
                         ends at 3072, what is beyond 4096 is above 4 GiB)
    --cpus N             Processors (Bochs `cpu: count=N`, 1 to 8, default 1). The firmware's
                         MADT lists them all; under Vigil every one runs in VMX and the
                         guest starts the others with INIT and start-up IPIs, as on bare
                         metal. Bochs runs several times slower with more than one
    --no-build           Use the binaries already built instead of running cargo build
    --gdb PORT           Vigil's GDB stub (gdb=com2): COM2 becomes a socket that xtask relays
                         to TCP PORT (`target remote localhost:PORT`); Vigil's log still
                         shows as `vigil| ...` (docs/debugging.md)
    --gdb-wait           With --gdb: hold the guest before its first instruction until gdb
                         attaches and continues (gdb-wait=on)
    --bochs 3.0|2.7|PATH The emulator (see EMULATOR)
    --debug-vigil        Bochs' own debugger on Vigil: interactive, Vigil's symbols loaded,
                         stopped at Vigil's entry point (then e.g. `vmexitbp`, `c`)
    -- VIGIL OPTIONS     Everything after `--` is Vigil's command line (key=value words).
                         For the demo guest the default is `{DEMO}`;
                         a bare `--` gives Vigil an empty command line.

LINUX OPTIONS (run, build, bench; --kernel, --initrd and --append imply --guest linux):
    --guest linux        Debian's cloud kernel and a busybox initramfs whose /init prints
                         `vigil-linux: initramfs up`, uname -a, the start of /proc/cpuinfo,
                         free, the clocksource and dmesg's TSC/clocksource lines, then
                         `vigil-linux: done`, and powers off. The packages are downloaded
                         once (apt-get download) into target/linux-cache/. A Linux run
                         ends normally when Bochs exits after that line (and, under
                         Vigil, `run ended: ok`).
    --kernel PATH        Boot this bzImage instead of Debian's kernel
    --initrd PATH        Use this initrd (gzip'd cpio) instead of the busybox initramfs
    --append \"ARGS\"      Words added to the kernel command line
                         `console=ttyS0,115200 panic=-1 clearcpuid=580`

TEST OPTIONS:
    -j, --jobs N         Bochs scenarios run at once (default: the number of CPUs)
    --cpus N             Processors of every scenario that does not choose its own (the SMP
                         scenarios do; default 1). The tsc=hide and tsc=frozen scenarios
                         keep one: Vigil refuses those modes with several
    -v, --verbose        Show every scenario's serial lines live, labelled with its name
    --list               List the scenarios and exit
    --no-build           Use the binaries already built
    --bochs 3.0|2.7|PATH The emulator (see EMULATOR)

FILES:
    Each run works in target/xtask/<run-name>/: iso/ (the ISO tree), vigil.iso, bochsrc,
    bochs.cmds, com1.txt, com2.txt, bochs.log (Bochs' log) and bochs.out (its stdout/stderr).
    The Linux guest's packages, unpacked kernel and busybox, and initramfs are cached in
    target/linux-cache/ (delete it to fetch them again).
";

/// The help text, with the demo's default Vigil options as the run uses them.
pub fn help() -> String {
    HELP.replace("{DEMO}", DEMO_VIGIL_OPTIONS)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guest {
    /// A guest-kit binary.
    Kit(&'static str),
    /// Any multiboot1 ELF.
    Path(PathBuf),
    /// A Linux kernel with an initrd (`--guest linux`, see `linux.rs`).
    Linux,
}

impl Guest {
    pub fn name(&self) -> String {
        match self {
            Guest::Kit(name) => name.to_string(),
            Guest::Linux => crate::linux::GUEST.to_string(),
            Guest::Path(path) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "guest".into()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunArgs {
    pub guest: Guest,
    pub guest_args: String,
    pub bare: bool,
    pub cpu_model: String,
    pub timeout: Duration,
    pub megs: u32,
    /// `--cpus N`: processors of the emulated machine.
    pub cpus: u32,
    /// Words after `--`; `None` when there was no `--`.
    pub vigil_options: Option<String>,
    pub no_build: bool,
    /// `--kernel`, `--initrd`, `--append` (Linux guests).
    pub linux: crate::linux::LinuxArgs,
    /// `--gdb PORT`, `--gdb-wait`, `--debug-vigil`.
    pub debug: crate::gdb::DebugArgs,
    /// `--bochs 3.0|2.7|PATH` (`None`: `$VIGIL_BOCHS` or the default).
    pub bochs: Option<String>,
}

impl RunArgs {
    /// Vigil's command line for this run (`None` when bare).
    pub fn effective_vigil_options(&self) -> Option<String> {
        if self.bare {
            return None;
        }
        let mut options = match (&self.vigil_options, &self.guest) {
            (Some(options), _) => options.clone(),
            (None, Guest::Kit("demo")) => DEMO_VIGIL_OPTIONS.to_string(),
            (None, _) => String::new(),
        };
        self.debug.add_vigil_options(&mut options);
        Some(options)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestArgs {
    /// Scenario name filters (`host`: the host tests); none: everything.
    pub filters: Vec<String>,
    pub jobs: Option<usize>,
    pub verbose: bool,
    pub list: bool,
    pub no_build: bool,
    /// `--bochs 3.0|2.7|PATH`.
    pub bochs: Option<String>,
    /// `--cpus N`: processors of the scenarios that do not choose their own (`None`: 1).
    pub cpus: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(RunArgs),
    Build(RunArgs),
    Test(TestArgs),
    Bench(RunArgs),
    Help,
}

pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    match command.as_str() {
        "run" => parse_run(rest).map(|a| a.map_or(Command::Help, Command::Run)),
        "build" => parse_run(rest).map(|a| a.map_or(Command::Help, Command::Build)),
        "test" => parse_test(rest),
        "bench" => parse_bench(rest),
        "help" | "-h" | "--help" => Ok(Command::Help),
        other => Err(format!(
            "unknown command {other:?} (try `cargo xtask help`)"
        )),
    }
}

/// Splits `--flag=value` and takes `--flag value`.
struct Args<'a> {
    items: std::slice::Iter<'a, String>,
}

impl<'a> Args<'a> {
    fn value(&mut self, flag: &str, inline: Option<&'a str>) -> Result<&'a str, String> {
        match inline {
            Some(v) => Ok(v),
            None => self
                .items
                .next()
                .map(String::as_str)
                .ok_or_else(|| format!("{flag} needs a value")),
        }
    }
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag}: {text:?} is not a number"))
}

/// `--cpus N`: 1 to [`crate::bochs::MAX_CPUS`].
fn cpus(text: &str) -> Result<u32, String> {
    let n: u32 = number("--cpus", text)?;
    if !(1..=crate::bochs::MAX_CPUS).contains(&n) {
        return Err(format!(
            "--cpus must be between 1 and {} (Vigil's per-CPU blocks)",
            crate::bochs::MAX_CPUS
        ));
    }
    Ok(n)
}

/// `Ok(None)` means help was asked for.
fn parse_run(rest: &[String]) -> Result<Option<RunArgs>, String> {
    let mut run = RunArgs {
        guest: Guest::Kit("demo"),
        guest_args: String::new(),
        bare: false,
        cpu_model: DEFAULT_CPU_MODEL.to_string(),
        timeout: crate::cli::DEFAULT_TIMEOUT,
        megs: DEFAULT_MEGS,
        cpus: crate::bochs::DEFAULT_CPUS,
        vigil_options: None,
        no_build: false,
        linux: Default::default(),
        debug: Default::default(),
        bochs: None,
    };
    let (mut guest_given, mut timeout_given) = (false, false);
    let mut args = Args { items: rest.iter() };
    while let Some(arg) = args.items.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (arg.as_str(), None),
        };
        match flag {
            "--" => {
                let words: Vec<&str> = args.items.by_ref().map(String::as_str).collect();
                run.vigil_options = Some(words.join(" "));
            }
            "-h" | "--help" => return Ok(None),
            "--guest" => {
                let v = args.value(flag, inline)?;
                run.guest = match GUEST_KIT_BINS.iter().find(|b| **b == v) {
                    Some(name) => Guest::Kit(name),
                    None if v == crate::linux::GUEST => Guest::Linux,
                    None => Guest::Path(PathBuf::from(v)),
                };
                guest_given = true;
            }
            "--guest-args" => run.guest_args = args.value(flag, inline)?.to_string(),
            "--bare" => run.bare = true,
            "--cpu-model" => run.cpu_model = args.value(flag, inline)?.to_string(),
            "--timeout" => {
                let secs: f64 = number(flag, args.value(flag, inline)?)?;
                if !(secs > 0.0 && secs.is_finite()) {
                    return Err("--timeout must be positive".into());
                }
                run.timeout = Duration::from_secs_f64(secs);
                timeout_given = true;
            }
            "--megs" => {
                run.megs = number(flag, args.value(flag, inline)?)?;
                if !(4..=crate::bochs::MAX_MEGS).contains(&run.megs) {
                    return Err(format!(
                        "--megs must be between 4 and {} (Bochs' limit)",
                        crate::bochs::MAX_MEGS
                    ));
                }
            }
            "--cpus" => run.cpus = cpus(args.value(flag, inline)?)?,
            "--no-build" => run.no_build = true,
            "--gdb" => run.debug.gdb_port = Some(number(flag, args.value(flag, inline)?)?),
            "--gdb-wait" => run.debug.gdb_wait = true,
            "--debug-vigil" => run.debug.debug_vigil = true,
            "--bochs" => {
                let v = args.value(flag, inline)?;
                crate::emulator::Choice::parse(v)?;
                run.bochs = Some(v.to_string());
            }
            "--kernel" => run.linux.kernel = Some(args.value(flag, inline)?.into()),
            "--initrd" => run.linux.initrd = Some(args.value(flag, inline)?.into()),
            "--append" => run.linux.append = args.value(flag, inline)?.to_string(),
            other => {
                return Err(format!(
                    "unknown option {other:?} (try `cargo xtask run --help`)"
                ))
            }
        }
    }
    if run.bare && run.vigil_options.as_deref().is_some_and(|o| !o.is_empty()) {
        return Err("Vigil options (after `--`) make no sense with --bare".into());
    }
    if run.linux != crate::linux::LinuxArgs::default() {
        match run.guest {
            Guest::Linux => {}
            _ if !guest_given => run.guest = Guest::Linux,
            _ => return Err("--kernel, --initrd and --append are for --guest linux".into()),
        }
    }
    if run.guest == Guest::Linux && !timeout_given {
        run.timeout = crate::linux::DEFAULT_TIMEOUT;
    }
    Ok(Some(run))
}

/// `bench` takes the options of `run` for a Linux guest, without `--bare` (it runs both).
fn parse_bench(rest: &[String]) -> Result<Command, String> {
    let mut words = vec!["--guest".to_string(), crate::linux::GUEST.to_string()];
    words.extend_from_slice(rest);
    let Some(run) = parse_run(&words)? else {
        return Ok(Command::Help);
    };
    if run.guest != Guest::Linux {
        return Err("bench boots Linux only (--guest linux, the default)".into());
    }
    if run.bare {
        return Err("bench runs both bare and under Vigil: drop --bare".into());
    }
    Ok(Command::Bench(run))
}

fn parse_test(rest: &[String]) -> Result<Command, String> {
    let mut test = TestArgs::default();
    let mut args = Args { items: rest.iter() };
    while let Some(arg) = args.items.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (arg.as_str(), None),
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "-j" | "--jobs" => {
                let jobs: usize = number(flag, args.value(flag, inline)?)?;
                test.jobs = Some(jobs.max(1));
            }
            "-v" | "--verbose" => test.verbose = true,
            "--list" => test.list = true,
            "--no-build" => test.no_build = true,
            "--cpus" => test.cpus = Some(cpus(args.value(flag, inline)?)?),
            "--bochs" => {
                let v = args.value(flag, inline)?;
                crate::emulator::Choice::parse(v)?;
                test.bochs = Some(v.to_string());
            }
            f if f.starts_with('-') => {
                return Err(format!(
                    "unknown option {f:?} (try `cargo xtask test --help`)"
                ))
            }
            filter => test.filters.push(filter.to_string()),
        }
    }
    Ok(Command::Test(test))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn run(line: &str) -> RunArgs {
        match parse(&args(line)).unwrap() {
            Command::Run(r) | Command::Build(r) | Command::Bench(r) => r,
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn run_defaults_to_demo_under_vigil_with_demo_options() {
        let r = run("run");
        assert_eq!(r.guest, Guest::Kit("demo"));
        assert!(!r.bare);
        assert_eq!(r.timeout, Duration::from_secs(120));
        assert_eq!(r.megs, 256);
        assert_eq!(r.cpu_model, "corei7_skylake_x");
        assert_eq!(r.cpus, 1);
        assert_eq!(
            r.effective_vigil_options().as_deref(),
            Some(DEMO_VIGIL_OPTIONS)
        );
    }

    #[test]
    fn cpus_on_run_test_and_bench() {
        assert_eq!(run("run --cpus 4").cpus, 4);
        assert_eq!(run("bench --cpus=2").cpus, 2);
        match parse(&args("test smp --cpus 2")).unwrap() {
            Command::Test(t) => assert_eq!(t.cpus, Some(2)),
            _ => unreachable!(),
        }
        for bad in [
            "run --cpus 0",
            "run --cpus 9",
            "run --cpus two",
            "test --cpus",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_after_double_dash_replace_the_defaults() {
        let r = run("run --guest cases -- log=debug trap=cpuid");
        assert_eq!(r.guest, Guest::Kit("cases"));
        assert_eq!(
            r.effective_vigil_options().as_deref(),
            Some("log=debug trap=cpuid")
        );
        assert_eq!(run("run --").effective_vigil_options().as_deref(), Some(""));
        assert_eq!(
            run("run --guest hostile")
                .effective_vigil_options()
                .as_deref(),
            Some("")
        );
    }

    #[test]
    fn flags_take_values_both_ways() {
        let r =
            run("build --guest=/tmp/k.elf --bare --timeout 9.5 --megs=64 --cpu-model tigerlake");
        assert_eq!(r.guest, Guest::Path("/tmp/k.elf".into()));
        assert_eq!(r.guest.name(), "k");
        assert!(r.bare);
        assert_eq!(r.effective_vigil_options(), None);
        assert_eq!(r.timeout, Duration::from_secs_f64(9.5));
        assert_eq!(r.megs, 64);
        assert_eq!(r.cpu_model, "tigerlake");
        let with_spaces = vec!["run".into(), "--guest-args".into(), "case=a x=1".into()];
        match parse(&with_spaces).unwrap() {
            Command::Run(r) => assert_eq!(r.guest_args, "case=a x=1"),
            _ => unreachable!(),
        }
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert!(parse(&args("run --timeout")).is_err());
        assert!(parse(&args("run --timeout 0")).is_err());
        assert!(parse(&args("run --megs lots")).is_err());
        assert!(parse(&args("run --bare -- log=info")).is_err());
        assert!(parse(&args("run --frobnicate")).is_err());
        assert!(parse(&args("launch")).is_err());
        assert!(parse(&args("run --guest demo --kernel /k")).is_err());
        assert!(parse(&args("bench --bare")).is_err());
        assert!(parse(&args("bench --guest cases")).is_err());
        assert!(parse(&args("run --bochs 2.6")).is_err());
        assert!(parse(&args("test --bochs")).is_err());
    }

    #[test]
    fn linux_guest_options() {
        let r = run("run --guest linux --cpu-model tigerlake");
        assert_eq!(r.guest, Guest::Linux);
        assert_eq!(r.guest.name(), "linux");
        assert_eq!(r.timeout, crate::linux::DEFAULT_TIMEOUT);
        assert_eq!(r.linux, crate::linux::LinuxArgs::default());
        assert_eq!(r.effective_vigil_options().as_deref(), Some(""));
        let r = run("run --kernel /k/bzImage --initrd=/k/initrd.gz --timeout 60 -- tsc=hide");
        assert_eq!(r.guest, Guest::Linux, "--kernel implies --guest linux");
        assert_eq!(
            r.linux.kernel.as_deref(),
            Some(std::path::Path::new("/k/bzImage"))
        );
        assert_eq!(
            r.linux.initrd.as_deref(),
            Some(std::path::Path::new("/k/initrd.gz"))
        );
        assert_eq!(r.timeout, Duration::from_secs(60));
        assert_eq!(r.effective_vigil_options().as_deref(), Some("tsc=hide"));
        let with_spaces = vec!["run".into(), "--append".into(), "loglevel=4 quiet".into()];
        match parse(&with_spaces).unwrap() {
            Command::Run(r) => {
                assert_eq!(r.guest, Guest::Linux);
                assert_eq!(r.linux.append, "loglevel=4 quiet");
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn bench_arguments() {
        let b = match parse(&args("bench --cpu-model tigerlake -- tsc=hide")).unwrap() {
            Command::Bench(b) => b,
            other => panic!("not a bench: {other:?}"),
        };
        assert_eq!(b.guest, Guest::Linux);
        assert!(!b.bare);
        assert_eq!(b.cpu_model, "tigerlake");
        assert_eq!(b.timeout, crate::linux::DEFAULT_TIMEOUT);
        assert_eq!(b.effective_vigil_options().as_deref(), Some("tsc=hide"));
        match parse(&args("bench")).unwrap() {
            Command::Bench(b) => assert_eq!(b.effective_vigil_options().as_deref(), Some("")),
            other => panic!("not a bench: {other:?}"),
        }
        assert_eq!(parse(&args("bench --help")).unwrap(), Command::Help);
    }

    #[test]
    fn test_arguments() {
        assert_eq!(
            parse(&args("test")).unwrap(),
            Command::Test(TestArgs::default())
        );
        let t = match parse(&args("test cases -j 1 -v --no-build")).unwrap() {
            Command::Test(t) => t,
            _ => unreachable!(),
        };
        assert_eq!(t.filters, vec!["cases"]);
        assert_eq!(t.bochs, None);
        match parse(&args("test gdb --bochs 2.7")).unwrap() {
            Command::Test(t) => assert_eq!(t.bochs.as_deref(), Some("2.7")),
            _ => unreachable!(),
        }
        assert_eq!(
            run("run --bochs=/opt/b/bochs").bochs.as_deref(),
            Some("/opt/b/bochs")
        );
        assert_eq!(run("bench --bochs 3.0").bochs.as_deref(), Some("3.0"));
        assert_eq!(t.jobs, Some(1));
        assert!(t.verbose && t.no_build && !t.list);
        assert_eq!(parse(&args("run --help")).unwrap(), Command::Help);
        assert_eq!(parse(&[]).unwrap(), Command::Help);
    }
}
