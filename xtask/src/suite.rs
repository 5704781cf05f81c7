//! `cargo xtask test`: the host tests, then the Bochs scenarios (several at once), ending with
//! the line `N passed, N failed`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::bochs::{self, Machine, RunSpec};
use crate::build::{self, GUEST_KIT, VIGIL};
use crate::cli::TestArgs;
use crate::iso::{self, IsoSpec};
use crate::layout::{Layout, RunDir};
use crate::outcome::{Mode, Outcome};
use crate::scenarios::{self, Check, Scenario};
use crate::stream::Echo;
use crate::sys;

/// Lines of serial output shown with a failing scenario.
const FAIL_TAIL: usize = 30;

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    /// Scenarios not run because the emulator lacks a feature they need (each printed as
    /// `SKIP name: …`; never with the reference Bochs).
    skipped: u64,
}

impl Tally {
    /// The closing line: `N passed, N failed`, with `, N skipped` when any was skipped.
    fn line(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            line.push_str(&format!(", {} skipped", self.skipped));
        }
        line
    }
}

pub fn list() {
    for s in scenarios::all() {
        let how = match s.mode {
            Mode::Vigil if s.vigil_options.is_empty() => "under Vigil (no options)".to_string(),
            Mode::Vigil => format!("under Vigil `{}`", s.vigil_options),
            Mode::Bare => "bare".to_string(),
        };
        let guest = [s.guest, s.guest_args].join(" ");
        let needs: String = scenarios::needs(s.name)
            .iter()
            .map(|f| format!(", needs Bochs {}+: {}", f.since(), f.describe()))
            .collect();
        let cpus = match crate::scenarios_smp::cpus(s.name) {
            1 => String::new(),
            n => format!(" × {n}"),
        };
        println!(
            "{:<22} {} {how}, {}{cpus}, timeout {} s{needs}",
            s.name,
            guest.trim(),
            s.cpu_model,
            s.timeout_secs
        );
    }
    for args in HOST_TESTS {
        println!("{:<22} cargo {}", "host", args.join(" "));
    }
}

pub fn test(layout: &Layout, args: &TestArgs) -> Result<bool, String> {
    if let Some(n) = args.cpus {
        crate::scenarios_smp::set_default_cpus(n);
    }
    let all = scenarios::all();
    let filters: Vec<&str> = args.filters.iter().map(String::as_str).collect();
    let (host, selected) = select(&all, &filters)?;
    let mut tally = Tally::default();
    if host {
        host_tests(layout, &mut tally);
    }
    let mut emulator = None;
    if !selected.is_empty() && !sys::interrupted() {
        let choice = crate::emulator::Choice::resolve(args.bochs.as_deref())?;
        let emu = crate::emulator::select(layout, &choice)?;
        emulator = Some(emu);
        let selected = runnable(&all, &selected, emu, &mut tally);
        let builds = builds(layout, &all, &selected, args.no_build);
        let jobs = args
            .jobs
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
        run_scenarios(
            layout,
            &all,
            &selected,
            &builds,
            jobs,
            args.verbose,
            &mut tally,
        );
    }
    if let Some(emu) = emulator {
        crate::step(&format!("the scenarios ran on {}", emu.describe()));
    }
    if tally.skipped > 0 {
        crate::step(&format!(
            "{} scenario(s) skipped: this Bochs lacks what they test (see SKIP above); \
             the reference emulator runs them (`--bochs 3.0`)",
            tally.skipped
        ));
    }
    println!("{}", tally.line());
    Ok(tally.failed == 0)
}

/// The selected scenarios this emulator can run; the others are reported as SKIP with the
/// feature they need, and counted. A baseline is kept as long as anything selected needs it.
fn runnable(
    all: &[Scenario],
    selected: &[usize],
    emulator: &crate::emulator::Emulator,
    tally: &mut Tally,
) -> Vec<usize> {
    let mut keep = Vec::new();
    for &i in selected {
        if crate::qemu::is_qemu_model(all[i].cpu_model) {
            match crate::qemu::missing() {
                None => keep.push(i),
                Some(why) => {
                    println!("SKIP {}: {why}", all[i].name);
                    tally.skipped += 1;
                }
            }
            continue;
        }
        let lacks = emulator.lacks(scenarios::needs(all[i].name));
        if lacks.is_empty() {
            keep.push(i);
            continue;
        }
        let what: Vec<&str> = lacks.iter().map(|f| f.describe()).collect();
        println!(
            "SKIP {}: needs {}; this is Bochs {}",
            all[i].name,
            what.join(", "),
            emulator.version
        );
        tally.skipped += 1;
    }
    keep
}

/// Whether to run the host tests, and which scenarios (indices into `all`, baselines first).
/// No filter selects everything; `host` the host tests; any other word the scenarios whose
/// name contains it (several words: the union).
fn select(all: &[Scenario], filters: &[&str]) -> Result<(bool, Vec<usize>), String> {
    if filters.is_empty() {
        return Ok((true, (0..all.len()).collect()));
    }
    let host = filters.contains(&"host");
    let mut chosen: Vec<usize> = Vec::new();
    for &filter in filters.iter().filter(|f| **f != "host") {
        let matching: Vec<usize> = (0..all.len())
            .filter(|&i| all[i].name.contains(filter))
            .collect();
        if matching.is_empty() {
            let names: Vec<&str> = all.iter().map(|s| s.name).collect();
            return Err(format!(
                "no scenario matches {filter:?}; scenarios: {}, or `host`",
                names.join(", ")
            ));
        }
        for i in matching {
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
    }
    for i in chosen.clone() {
        if let Some(base) = all[i].baseline {
            let b = all
                .iter()
                .position(|s| s.name == base)
                .expect("baseline exists");
            if !chosen.contains(&b) {
                crate::step(&format!(
                    "also running {base}: {} compares with it",
                    all[i].name
                ));
                chosen.push(b);
            }
        }
    }
    chosen.sort_unstable();
    Ok((host, chosen))
}

/// The host test runs: the pure crates, and the host-tested boot logic inside the hypervisor
/// crate (its binary is bare-metal, so only `--lib`; `--lib` cannot go with the bin-only xtask).
pub const HOST_TESTS: &[&[&str]] = &[
    &[
        "test",
        "--no-fail-fast",
        "-p",
        "x86-arch",
        "-p",
        "vmx",
        "-p",
        "svm",
        "-p",
        "vigil-core",
        "-p",
        "xtask",
    ],
    &["test", "--no-fail-fast", "-p", "vigil", "--lib"],
];

/// Each of [`HOST_TESTS`], streamed, counting every `test result:` line.
fn host_tests(layout: &Layout, tally: &mut Tally) {
    for args in HOST_TESTS {
        if sys::interrupted() {
            return;
        }
        host_test_run(layout, args, tally);
    }
}

fn host_test_run(layout: &Layout, args: &[&str], tally: &mut Tally) {
    let start = Instant::now();
    let line = format!("cargo {}", args.join(" "));
    crate::step(&format!("host tests: {line}"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let child = Command::new(cargo)
        .args(args)
        .current_dir(&layout.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL host tests ({line}): cannot run cargo: {e}");
            tally.failed += 1;
            return;
        }
    };
    let (mut passed, mut failed) = (0, 0);
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some((p, f)) = parse_test_result(&line) {
                passed += p;
                failed += f;
            }
        }
    }
    let status = child.wait();
    tally.passed += passed;
    tally.failed += failed;
    let ok = status.as_ref().is_ok_and(|s| s.success());
    if !ok && failed == 0 {
        // A build error, or a crashed test binary: count it once.
        let why = match status {
            Ok(s) => format!("failed ({s}) without a failing test"),
            Err(e) => format!("{e}"),
        };
        println!("FAIL host tests ({line}): {why}");
        tally.failed += 1;
    }
    crate::step(&format!(
        "host tests ({line}): {passed} passed, {failed} failed ({})",
        crate::secs(start.elapsed())
    ));
}

/// `test result: ok. 12 passed; 0 failed; 0 ignored; ...` → (12, 0).
pub fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_, counts) = rest.split_once(". ")?;
    let mut passed = None;
    let mut failed = None;
    for part in counts.split(';') {
        let mut words = part.split_whitespace();
        let n = words.next().and_then(|n| n.parse::<u64>().ok());
        match words.next() {
            Some("passed") => passed = n,
            Some("failed") => failed = n,
            _ => {}
        }
    }
    Some((passed?, failed?))
}

/// Build results by package: `Err(why)` for one that did not build.
type Builds = BTreeMap<&'static str, Result<(), String>>;

fn builds(layout: &Layout, all: &[Scenario], selected: &[usize], no_build: bool) -> Builds {
    let mut builds = Builds::new();
    let needs_vigil = selected.iter().any(|&i| all[i].mode == Mode::Vigil);
    let packages: &[&'static str] = if needs_vigil {
        &[VIGIL, GUEST_KIT]
    } else {
        &[GUEST_KIT]
    };
    for &package in packages {
        let result = if no_build {
            Ok(())
        } else {
            build::build(layout, package)
        };
        if let Err(e) = &result {
            crate::step(&format!("{e}; scenarios that need {package} will fail"));
        }
        builds.insert(package, result);
    }
    builds
}

fn run_scenarios(
    layout: &Layout,
    all: &[Scenario],
    selected: &[usize],
    builds: &Builds,
    jobs: usize,
    verbose: bool,
    tally: &mut Tally,
) {
    let jobs = jobs.clamp(1, selected.len().max(1));
    crate::step(&format!(
        "{} Bochs scenario(s), {jobs} at a time",
        selected.len()
    ));
    let queue = Mutex::new(selected.iter().copied().collect::<VecDeque<_>>());
    let (tx, rx) = mpsc::channel::<(usize, Result<Outcome, String>, Duration)>();
    thread::scope(|scope| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let queue = &queue;
            scope.spawn(move || loop {
                let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                let Some(i) = next else { break };
                if sys::interrupted() {
                    break;
                }
                let start = Instant::now();
                let result = run_one(layout, &all[i], builds, verbose);
                if let Ok(o) = &result {
                    let first = o.first_byte.map_or("no serial output".to_string(), |t| {
                        format!("first serial byte after {}", crate::secs(t))
                    });
                    crate::step(&format!(
                        "finished {}: Bochs ran {}, {first}",
                        all[i].name,
                        crate::secs(o.elapsed)
                    ));
                }
                if tx.send((i, result, start.elapsed())).is_err() {
                    break;
                }
            });
        }
        drop(tx);

        // Report each scenario as soon as it and its baseline are done.
        let mut done: BTreeMap<usize, (Result<Outcome, String>, Duration)> = BTreeMap::new();
        let mut reported = Vec::new();
        for (i, result, took) in rx {
            done.insert(i, (result, took));
            for &j in selected {
                if reported.contains(&j) || !done.contains_key(&j) {
                    continue;
                }
                let base = all[j]
                    .baseline
                    .and_then(|b| all.iter().position(|s| s.name == b));
                if base.is_some_and(|b| selected.contains(&b) && !done.contains_key(&b)) {
                    continue;
                }
                let baseline = base
                    .and_then(|b| done.get(&b))
                    .and_then(|(r, _)| r.as_ref().ok());
                let (result, took) = &done[&j];
                report(
                    &all[j],
                    result,
                    baseline,
                    *took,
                    &layout.bare_bin(VIGIL),
                    tally,
                );
                reported.push(j);
            }
        }
        for &j in selected {
            if !reported.contains(&j) {
                println!("FAIL {}: not run (interrupted)", all[j].name);
                tally.failed += 1;
            }
        }
    });
}

fn run_one(
    layout: &Layout,
    s: &Scenario,
    builds: &Builds,
    verbose: bool,
) -> Result<Outcome, String> {
    let mut needs = vec![GUEST_KIT];
    if s.mode == Mode::Vigil {
        needs.push(VIGIL);
    }
    for package in needs {
        if let Some(Err(e)) = builds.get(package) {
            return Err(format!("{package} did not build: {e}"));
        }
    }
    if s.guest == crate::linux::GUEST {
        return crate::linux::run_scenario(layout, s, verbose);
    }
    if s.guest == crate::scenarios_guests::MEMTEST {
        return crate::scenarios_guests::run_memtest(layout, s, verbose);
    }
    if s.guest == crate::scenarios_guests::LOWLOAD {
        return crate::scenarios_guests::run_lowload(layout, s, verbose);
    }
    let guest = layout.bare_bin(s.guest);
    if !guest.is_file() {
        return Err(format!("no guest binary at {}", guest.display()));
    }
    let vigil = match s.mode {
        Mode::Vigil => {
            let bin = layout.bare_bin(VIGIL);
            if !bin.is_file() {
                return Err(format!("no Vigil binary at {}", bin.display()));
            }
            Some((bin, s.vigil_options.to_string()))
        }
        Mode::Bare => None,
    };
    let spec = IsoSpec {
        guest,
        guest_args: s.guest_args.to_string(),
        vigil,
        modules: crate::scenarios_guests::modules_for(s.name),
    };
    boot(layout, s, verbose, |dir| Ok(iso::make(dir, &spec)?.0))
}

/// Boot one scenario in Bochs: claim its run directory, have `make_iso` stage and make the ISO
/// in it, hook up gdb if the scenario has a session, and run Bochs on the scenario's machine
/// (echoing the serial lines under the scenario's name with `-v`).
pub fn boot(
    layout: &Layout,
    s: &Scenario,
    verbose: bool,
    make_iso: impl FnOnce(&RunDir) -> Result<PathBuf, String>,
) -> Result<Outcome, String> {
    let dir = RunDir::claim(layout, s.name).map_err(|e| format!("run directory: {e}"))?;
    let iso = make_iso(&dir)?;
    let echo = if verbose {
        Echo::Labelled(s.name.to_string())
    } else {
        Echo::Quiet
    };
    if crate::qemu::is_qemu_model(s.cpu_model) {
        crate::step(&format!("started {} (QEMU)", s.name));
        return crate::qemu::run(
            &dir,
            &iso,
            crate::scenarios_guests::megs(s.name),
            s.mode,
            Duration::from_secs(s.timeout_secs),
            &echo,
        );
    }
    crate::step(&format!("started {}", s.name));
    crate::gdb_tests::register(&dir.path, s.name, &layout.bare_bin(s.guest));
    crate::scenarios_guests::claimed(&dir.path, s.name);
    crate::oracle::register_for(layout, s, &dir.path);
    bochs::run(&RunSpec {
        dir: &dir,
        iso,
        machine: Machine {
            megs: crate::scenarios_guests::megs(s.name),
            cpu_model: s.cpu_model.to_string(),
            cpus: crate::scenarios_smp::cpus_for(s.name, s.vigil_options),
        },
        mode: s.mode,
        timeout: Duration::from_secs(s.timeout_secs),
        echo,
    })
}

fn report(
    s: &Scenario,
    result: &Result<Outcome, String>,
    baseline: Option<&Outcome>,
    took: Duration,
    vigil: &std::path::Path,
    tally: &mut Tally,
) {
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            println!("FAIL {}: {e}", s.name);
            tally.failed += 1;
            return;
        }
    };
    match (s.check)(&Check {
        scenario: s,
        outcome,
        baseline,
    }) {
        Ok(()) => {
            println!("PASS {} ({})", s.name, crate::secs(took));
            tally.passed += 1;
        }
        Err(why) => {
            println!("FAIL {}: {}", s.name, outcome.explain(&why));
            println!(
                "  ({}; run files in {})",
                outcome.end_phrase(),
                outcome.dir.display()
            );
            let tail = outcome.capture.tail(FAIL_TAIL);
            if tail.is_empty() {
                println!("  (no serial output)");
            }
            for line in tail {
                println!("  {line}");
            }
            if s.mode == Mode::Vigil {
                crate::run::show_backtrace(&outcome.capture.com2(), vigil);
            }
            tally.failed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_result_lines() {
        let ok = "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; \
                  finished in 0.01s";
        assert_eq!(parse_test_result(ok), Some((12, 0)));
        let bad = "test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out";
        assert_eq!(parse_test_result(bad), Some((3, 2)));
        assert_eq!(parse_test_result("test foo ... ok"), None);
    }

    #[test]
    fn the_closing_line_counts_skipped_scenarios_only_when_there_are_any() {
        let mut t = Tally {
            passed: 24,
            failed: 0,
            skipped: 0,
        };
        assert_eq!(t.line(), "24 passed, 0 failed");
        t.skipped = 1;
        assert_eq!(t.line(), "24 passed, 0 failed, 1 skipped");
    }

    #[test]
    fn scenarios_an_older_bochs_cannot_run_are_skipped_and_counted() {
        let all = scenarios::all();
        let (_, gdb) = select(&all, &["gdb-step"]).unwrap();
        let emulator = |major, minor| crate::emulator::Emulator {
            program: "bochs".into(),
            version: crate::emulator::Version(major, minor),
            origin: String::new(),
            sound: false,
        };
        let mut tally = Tally::default();
        let kept = runnable(&all, &gdb, &emulator(2, 7), &mut tally);
        let names: Vec<&str> = kept.iter().map(|&i| all[i].name).collect();
        assert_eq!(names, vec!["gdb-step-bare"]);
        assert_eq!(tally.skipped, 1);
        let mut tally = Tally::default();
        assert_eq!(runnable(&all, &gdb, &emulator(3, 0), &mut tally), gdb);
        assert_eq!(tally.skipped, 0);
    }

    #[test]
    fn selection() {
        let all = scenarios::all();
        let names = |v: &[usize]| v.iter().map(|&i| all[i].name).collect::<Vec<_>>();
        let (host, every) = select(&all, &[]).unwrap();
        assert!(host);
        assert_eq!(every.len(), all.len());
        assert_eq!(select(&all, &["host"]).unwrap(), (true, vec![]));
        let (host, bare) = select(&all, &["bare"]).unwrap();
        assert!(!host);
        assert_eq!(
            names(&bare),
            vec![
                "demo-bare",
                "cases-bare",
                "linux-bare",
                "linux-watchdog-bare",
                "detect-bare",
                "hostile-bare",
                "hostile-platform-bare",
                "hostile-apic-over-vigil-pages-bare",
                "hostile-msr-misc-enable-xd-bare",
                "hostile-msr-efer-reserved-bare",
                "hostile-msr-pat-reserved-bare",
                "hostile-nmi-around-exits-bare",
                "hostile-reset-cf9-soft-bare",
                "hostile-reset-cf9-hard-bare",
                "hostile-reset-port92-bare",
                "hostile-reset-kbc-pulse-bare",
                "hostile-reset-kbc-output-port-bare",
                "hostile-sleep-s3-bare",
                "hostile-sleep-moved-pm-s5-bare",
                "gdb-debuggee-bare",
                "gdb-debuggee32-bare",
                "gdb-step-bare",
                "demo-32m-bare",
                "demo-64m-bare",
                "demo-5g-bare",
                "cases-32m-bare",
                "cases-64m-bare",
                "cases-5g-bare",
                "linux-128m-bare",
                "linux-5g-bare",
                "memtest-bare",
                "lowload-bare",
                "modules-bare",
                "smp-2cpu-bare",
                "smp-4cpu-bare",
                "cases-2cpu-bare",
                "linux-2cpu-bare",
                "linux-2cpu-watchdog-bare",
                "linux-4cpu-bare",
                "features-sapphire-rapids-bare",
                "linux-lynnfield-bare",
                "real-mode-bare",
                "models-phenom_8650_toliman-cases-bare",
                "models-corei5_lynnfield_750-cases-bare",
                "models-corei5_arrandale_m520-cases-bare",
                "models-corei7_sandy_bridge_2600k-cases-bare",
                "models-zambezi-cases-bare",
                "models-trinity_apu-cases-bare",
                "models-ryzen-cases-bare",
                "models-corei7_ivy_bridge_3770k-cases-bare",
                "models-corei7_haswell_4770-cases-bare",
                "models-broadwell_ult-cases-bare",
                "models-corei7_skylake_x-cases-bare",
                "models-corei3_cnl-cases-bare",
                "models-corei7_icelake_u-cases-bare",
                "models-tigerlake-cases-bare",
                "models-sapphire_rapids-cases-bare",
                "models-arrow_lake-cases-bare",
                "demo-bare-ryzen",
                "cases-bare-ryzen",
                "linux-bare-ryzen",
                "hostile-bare-ryzen",
                "hostile-platform-bare-ryzen",
                "hostile-msr-efer-reserved-bare-ryzen",
                "hostile-nmi-around-exits-bare-ryzen",
                "hostile-reset-cf9-hard-bare-ryzen",
                "hostile-sleep-moved-pm-s5-bare-ryzen",
                "gdb-debuggee-bare-ryzen",
                "gdb-debuggee32-bare-ryzen",
                "cases-bare-qemu",
                "linux-bare-qemu",
            ]
        );
        // cases-vigil brings its baseline along, which runs first.
        let (_, cv) = select(&all, &["cases-vigil"]).unwrap();
        assert_eq!(
            names(&cv),
            vec![
                "cases-bare",
                "cases-vigil",
                "cases-vigil-trap",
                "cases-bare-ryzen",
                "cases-vigil-ryzen",
                "cases-vigil-trap-ryzen",
                "cases-bare-qemu",
                "cases-vigil-trap-qemu"
            ]
        );
        assert!(select(&all, &["nope"]).is_err());
        assert!(select(&all, &["demo", "nope"]).is_err());
        // Several words: the union, each scenario once, with the host tests if named.
        let (host, some) = select(&all, &["demo-vigil", "demo-bare", "demo-bare", "host"]).unwrap();
        assert!(host);
        assert_eq!(
            names(&some),
            vec![
                "demo-vigil",
                "demo-bare",
                "demo-vigil-ryzen",
                "demo-bare-ryzen",
                "demo-vigil-qemu"
            ]
        );
    }
}
