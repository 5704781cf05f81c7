//! The AMD-V scenarios: Vigil's SVM backend on Bochs' `ryzen` model (SVM with nested paging,
//! NRIP save and flush-by-ASID; no decode assists, TSC ratio or VMCB clean bits).
//!
//! Most are the Intel scenarios run again on `ryzen` with the same guest, options and check
//! ([`MIRRORED`]; the name gets [`SUFFIX`], and a baseline its `ryzen` twin), because Vigil
//! promises the guest the same things under both backends. Where the backends differ by nature
//! the AMD scenario has its own check: the triple-fault report names SVM's SHUTDOWN exit, the
//! default policy's unavoidable exits are SVM's, and the VMRUN consistency checks replace the
//! VM-entry checks. The set is chosen for the suite's time: each mirrored scenario exercises a
//! different part of the backend (the world switch and events, the permission maps, nested
//! paging and isolation, time, the debugger, Linux).
//!
//! A few run on QEMU's TCG too ([`ON_QEMU`], `crate::qemu`): the same backend without NRIP
//! save or decode assists, on a second implementation of SVM.

use crate::outcome::{Mode, Outcome};
use crate::report::{self, Status};
use crate::scenarios::{Check, Scenario};
use crate::stream::Port;

pub const RYZEN: &str = "ryzen";
/// What a mirrored scenario's name ends with.
pub const SUFFIX: &str = "-ryzen";

/// Bochs' AMD CPU models (`bochs --help cpu`).
pub fn is_amd_model(model: &str) -> bool {
    matches!(
        model,
        "ryzen"
            | crate::qemu::MODEL
            | "zambezi"
            | "trinity_apu"
            | "phenom_8650_toliman"
            | "athlon64_clawhammer"
            | "athlon64_venice"
            | "turion64_tyler"
            | "athlon_xp"
            | "amd_k6_2_chomper"
    )
}

/// An AMD scenario runs on one processor whatever `--cpus` says, unless its name gives a count:
/// Vigil's SVM backend runs the guest on one (`smp-2cpu-refused-ryzen` checks the refusal).
pub fn one_processor(name: &str) -> bool {
    name.ends_with(SUFFIX) || name.ends_with("-qemu")
}

/// The scenario a `ryzen` scenario mirrors (its name without [`SUFFIX`]), or the name itself:
/// what name-keyed set-up (gdb scripts, machine sizes, modules) looks up.
pub fn intel_name(name: &str) -> &str {
    name.strip_suffix(SUFFIX).unwrap_or(name)
}

/// Intel scenarios that run unchanged on `ryzen`.
const MIRRORED: &[&str] = &[
    "demo-vigil",
    "demo-bare",
    "cases-bare",
    "cases-vigil",
    "cases-vigil-trap",
    "cases-trap-everything",
    "time-frozen",
    "linux-bare",
    "linux-vigil",
    "linux-offset",
    "hostile-bare",
    "hostile-vigil",
    "hostile-trap-everything",
    "hostile-triple-fault-trapped",
    "hostile-platform-bare",
    "hostile-platform-vigil",
    "hostile-msr-efer-reserved-bare",
    "hostile-msr-efer-reserved-vigil",
    "hostile-nmi-around-exits-bare",
    "hostile-nmi-around-exits-vigil",
    "hostile-reset-cf9-hard-bare",
    "hostile-reset-cf9-hard-vigil",
    "hostile-sleep-moved-pm-s5-bare",
    "hostile-sleep-moved-pm-s5-vigil",
    "gdb-debuggee-bare",
    "gdb-session-skylake",
    "gdb-debuggee32-bare",
    "gdb-session-i386",
    "gdb-attach-running",
];

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// `s` on `ryzen`: same guest, options and check, the baseline its own `ryzen` twin.
fn mirror(s: &Scenario) -> Scenario {
    let name = match s.name.strip_suffix("-skylake") {
        Some(stem) => leak(format!("{stem}{SUFFIX}")),
        None => leak(format!("{}{SUFFIX}", s.name)),
    };
    Scenario {
        name,
        guest: s.guest,
        guest_args: s.guest_args,
        mode: s.mode,
        vigil_options: s.vigil_options,
        cpu_model: RYZEN,
        timeout_secs: s.timeout_secs,
        baseline: s.baseline.map(|b| leak(format!("{b}{SUFFIX}"))),
        check: s.check,
    }
}

type CheckFn = fn(&Check) -> Result<(), String>;

/// Intel scenarios that run on QEMU's TCG (named with `-qemu`, the baseline the QEMU twin, the
/// check QEMU's): the cases bare and under Vigil with RDTSC/RDTSCP trapped, every length and
/// operand decoded.
const ON_QEMU: &[(&str, CheckFn)] = &[
    ("cases-bare", qemu_cases_bare),
    ("cases-vigil-trap", qemu_cases_vigil),
    ("linux-bare", crate::linux_checks::check_bare),
    ("linux-vigil", crate::linux_checks::check_vigil),
];

/// `s` on QEMU, the baseline its own QEMU twin.
fn on_qemu(s: &Scenario, check: CheckFn) -> Scenario {
    Scenario {
        name: leak(format!("{}-qemu", s.name)),
        cpu_model: crate::qemu::MODEL,
        baseline: s.baseline.map(|b| leak(format!("{b}-qemu"))),
        check,
        ..*s
    }
}

fn amd(
    name: &'static str,
    guest: &'static str,
    mode: Mode,
    vigil_options: &'static str,
    baseline: Option<&'static str>,
    check: fn(&Check) -> Result<(), String>,
) -> Scenario {
    Scenario {
        name,
        guest,
        guest_args: "",
        mode,
        vigil_options,
        cpu_model: RYZEN,
        timeout_secs: 180,
        baseline,
        check,
    }
}

/// The `ryzen` scenarios, given the Intel ones they mirror.
pub fn all(intel: &[Scenario]) -> Vec<Scenario> {
    let mut out: Vec<Scenario> = MIRRORED
        .iter()
        .map(|name| {
            let s = intel
                .iter()
                .find(|s| s.name == *name)
                .unwrap_or_else(|| panic!("scenarios_amd: no Intel scenario {name}"));
            mirror(s)
        })
        .collect();
    out.extend(ON_QEMU.iter().map(|&(name, check)| {
        on_qemu(
            intel
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("scenarios_amd: no Intel scenario {name}")),
            check,
        )
    }));
    out.extend([
        // `tsc=hide` on SVM scales the TSC in software, so every RDTSC exits
        // (docs/architecture.md, "Virtual time"). In Bochs an exit costs some 20 µs of
        // emulated time, so the bounded mode's 250 µs budget holds about six of the kit's timing
        // probes (two RDTSC exits each) before exits show, as that mode documents; the
        // unbounded mode hides every one of them and repays afterwards, and the timing cases
        // are held to bare metal's values exactly as `time-hide` holds VMX's.
        amd(
            "time-hide-unbounded-ryzen",
            "cases",
            Mode::Vigil,
            "tsc=hide:unbounded hypercall=on",
            Some("cases-bare-ryzen"),
            crate::scenarios_time::hide_svm,
        ),
        // NRIP save ignored: every instruction length decoded from the guest's bytes, the
        // fallback for processors without it (QEMU's TCG). The decoding costs ticks at every
        // exit (the exit table shows how many), which `tsc=hide:unbounded` hides like any exit
        // time, so the timing cases pass as bare too.
        amd(
            "cases-no-nrips-ryzen",
            "cases",
            Mode::Vigil,
            "tsc=hide:unbounded hypercall=on test-nrips=off trap=hlt,io:0x80",
            Some("cases-bare-ryzen"),
            no_nrips,
        ),
        // `ryzen` has no TSC ratio MSR: tsc=scale is emulated by intercepting RDTSC/RDTSCP.
        amd(
            "time-scale-ryzen",
            "cases",
            Mode::Vigil,
            "tsc=scale:3/2 hypercall=on",
            Some("cases-bare-ryzen"),
            scale_emulated,
        ),
        amd(
            "cases-default-policy-ryzen",
            "cases",
            Mode::Vigil,
            "",
            Some("cases-bare-ryzen"),
            default_policy,
        ),
        Scenario {
            guest_args: "case=triple-fault",
            timeout_secs: 90,
            ..amd(
                "hostile-triple-fault-ryzen",
                "hostile",
                Mode::Vigil,
                "",
                None,
                triple_fault,
            )
        },
        Scenario {
            timeout_secs: 90,
            ..amd(
                "vmrun-checks-clean-ryzen",
                "demo",
                Mode::Vigil,
                "check-entry=on",
                None,
                clean,
            )
        },
        // ASID 0 is the host's: a control-area rule (15.5.1).
        Scenario {
            timeout_secs: 90,
            ..amd(
                "vmrun-failure-asid-ryzen",
                "demo",
                Mode::Vigil,
                "test-vmcb=0x58:0",
                None,
                failure_asid,
            )
        },
        // QEMU's TCG: SVM with nested paging and nothing else, so every instruction length is
        // decoded; the demo passes with its exit table (SKIP where QEMU is not installed).
        Scenario {
            cpu_model: crate::qemu::MODEL,
            timeout_secs: 120,
            ..amd(
                "demo-vigil-qemu",
                "demo",
                Mode::Vigil,
                crate::cli::DEMO_VIGIL_OPTIONS,
                None,
                qemu_demo,
            )
        },
        // Two processors: SVM runs the guest on one, and says so before the guest runs.
        Scenario {
            timeout_secs: 120,
            ..amd(
                "smp-2cpu-refused-ryzen",
                "demo",
                Mode::Vigil,
                "",
                None,
                smp_refused,
            )
        },
        // EFER without SVME: a guest-state rule (15.5.1).
        Scenario {
            timeout_secs: 90,
            ..amd(
                "vmrun-failure-efer-ryzen",
                "demo",
                Mode::Vigil,
                "test-vmcb=0x4d0:0",
                None,
                failure_efer,
            )
        },
    ]);
    out
}

/// The cases pass as bare, with the lengths decoded (the log says so) and the exits the traps
/// ask for counted.
fn no_nrips(c: &Check) -> Result<(), String> {
    crate::scenarios::cases_bare(c)?;
    let bare = c.baseline.ok_or("the bare baseline did not run")?;
    let passed = |o: &Outcome| -> Vec<String> {
        report::cases(o.capture.com1())
            .into_iter()
            .filter(|l| l.status == Status::Pass)
            .map(|l| l.name)
            .collect()
    };
    let here = passed(c.outcome);
    if let Some(lost) = passed(bare).into_iter().find(|n| !here.contains(n)) {
        return Err(format!("{lost} passed bare but not with decoded lengths"));
    }
    let com2 = c.outcome.capture.com2();
    if !com2
        .iter()
        .any(|l| l.contains("instruction lengths decoded"))
    {
        return Err("Vigil did not say it decodes instruction lengths".into());
    }
    let stats = report::exit_stats(&com2)?;
    for reason in ["RDTSC", "HLT", "CPUID", "hypercall"] {
        if stats.count(reason) == 0 {
            return Err(format!("no {reason} exits"));
        }
    }
    Ok(())
}

/// Emulated TSC scaling: the rate is 3/2 of bare's (within 1 %, as with hardware scaling) and
/// every case passes as bare, except that pafish may see the RDTSC exits emulation costs (a
/// measured fallback: every read exits, and `scale` hides no exit time) — no other case may
/// fail.
fn scale_emulated(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    o.normal_end()?;
    let com2 = o.capture.com2();
    if !com2
        .iter()
        .any(|l| l.starts_with("tsc=scale: RDTSC and RDTSCP are intercepted and emulated"))
    {
        return Err("Vigil did not say it emulates the scaled TSC".into());
    }
    let cases = report::cases(o.capture.com1());
    if let Some(f) = cases
        .iter()
        .find(|l| l.status == Status::Fail && l.name != "pafish")
    {
        return Err(format!("case {} failed: {}", f.name, f.why));
    }
    let rate = |o: &Outcome| -> Result<f64, String> {
        report::cases(o.capture.com1())
            .into_iter()
            .find(|l| l.name == "tsc-rate" && l.status == Status::Pass)
            .and_then(|l| l.field("tsc_per_pit_x1000").and_then(report::parse_u64))
            .map(|v| v as f64)
            .ok_or_else(|| "no passing tsc-rate case".to_string())
    };
    let bare = c.baseline.ok_or("the bare baseline did not run")?;
    let ratio = rate(o)? / rate(bare)?;
    if (ratio - 1.5).abs() > 1.5 * 0.01 {
        return Err(format!(
            "TSC rate {ratio:.4} of bare, expected 1.5 within 1 %"
        ));
    }
    let stats = report::exit_stats(&com2)?;
    if stats.count("RDTSC") == 0 {
        return Err("no RDTSC exits: the scaled TSC was not emulated".into());
    }
    Ok(())
}

/// QEMU ended by the write of the shutdown sequence to the exit port (Vigil's, or bare the
/// guest's).
fn qemu_exit_port(o: &Outcome) -> Result<(), String> {
    match o.end {
        crate::outcome::End::Exited(status)
            if status.code() == Some(crate::qemu::SHUTDOWN_STATUS) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "QEMU did not end through the exit port ({})",
            o.end_phrase()
        )),
    }
}

/// Vigil runs on a processor without NRIP save and said so.
pub fn decodes_lengths(o: &Outcome) -> bool {
    o.capture
        .com2()
        .iter()
        .any(|l| l.contains("SVM: no NRIP save"))
}

/// The cases under Vigil on an SVM processor without NRIP save: every case that passed bare
/// passes, but pafish may see the exits. Fetching each intercepted instruction to learn its
/// length is the measured fallback (about 600 host ticks an exit, docs/platform.md), which
/// only `tsc=hide` takes out of the guest's time; no other case may fail, the TSC offset and
/// the isolation case must pass.
pub fn cases_decoded(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    o.normal_end()?;
    let cases = report::cases(o.capture.com1());
    if let Some(f) = cases.iter().find(|l| {
        l.status == Status::Fail && !(l.name == "pafish" && l.why.starts_with("looks-virtualized"))
    }) {
        return Err(format!("case {} failed: {}", f.name, f.why));
    }
    let here = passed_cases(o);
    let bare = c.baseline.ok_or("the bare baseline did not run")?;
    if let Some(lost) = passed_cases(bare)
        .into_iter()
        .find(|n| !here.contains(n) && n != "pafish")
    {
        return Err(format!("{lost} passed bare but not under Vigil"));
    }
    for must in ["isolation", "tsc-offset"] {
        if !here.iter().any(|n| n == must) {
            return Err(format!("case {must} did not pass under Vigil"));
        }
    }
    Ok(())
}

/// Two processors under SVM: refused before the guest runs, with the reason.
fn smp_refused(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    if !o.exited_by_itself() {
        return Err(format!(
            "{}: Bochs should have exited by itself",
            o.end_phrase()
        ));
    }
    let com2 = o.capture.com2();
    let why = com2
        .iter()
        .find(|l| l.starts_with("error: this machine has 2 processors"))
        .ok_or("Vigil printed no `error: this machine has 2 processors …` line")?;
    if !why.contains("SVM backend runs the guest on one") {
        return Err(format!("the refusal does not say why: {why}"));
    }
    if !o.capture.com1().is_empty() {
        return Err("the guest ran".into());
    }
    match o.capture.last_line(Port::Vigil) {
        Some(l) if l.starts_with("run ended: failed:") => Ok(()),
        other => Err(format!(
            "expected `run ended: failed: …` last, got {other:?}"
        )),
    }
}

/// Vigil said it runs without NRIP save, decoding lengths.
fn says_decoded(o: &Outcome) -> Result<(), String> {
    let com2 = o.capture.com2();
    for want in ["SVM: no NRIP save", "instruction lengths decoded"] {
        if !com2.iter().any(|l| l.contains(want)) {
            return Err(format!("Vigil did not say `{want}`"));
        }
    }
    Ok(())
}

/// The demo's own check, on a processor without NRIP save (QEMU's TCG says so at start and
/// Vigil decodes), and QEMU ended by Vigil's write to the exit port.
fn qemu_demo(c: &Check) -> Result<(), String> {
    crate::scenarios::demo_vigil(c)?;
    says_decoded(c.outcome)?;
    qemu_exit_port(c.outcome)
}

/// Cases whose verdict on QEMU follows the host's clock: TCG's TSC is the host's time, so the
/// rate against the PIT varies between runs, and an exit (TCG emulating VMRUN and #VMEXIT)
/// costs a hundred thousand host cycles, which pafish sees unless `tsc=hide` hides them.
const QEMU_TIMING: &[&str] = &["tsc-rate", "pafish"];

fn passed_cases(o: &Outcome) -> Vec<String> {
    report::cases(o.capture.com1())
        .into_iter()
        .filter(|l| l.status == Status::Pass)
        .map(|l| l.name)
        .collect()
}

/// Bare on QEMU the reference is whatever QEMU does: the cases ran to their summary and the
/// guest ended QEMU through the exit port. (TCG fails some bare: its IA32_TSC reads as 0, and
/// the TSC rate follows the host.)
fn qemu_cases_bare(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    if report::summary(o.capture.port(Port::Guest)).is_none() {
        return Err("no `guest-kit: N passed, N failed, …` line on COM1".into());
    }
    qemu_exit_port(o)
}

/// Under Vigil on QEMU: every case that passed bare passes (but the timing ones, see
/// [`QEMU_TIMING`]); isolation and the TSC offset pass; RDTSCP exits are RDTSCP's although
/// QEMU reports them with RDTSC's code; lengths were decoded.
fn qemu_cases_vigil(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    o.normal_end()?;
    qemu_exit_port(o)?;
    says_decoded(o)?;
    let bare = c.baseline.ok_or("the bare baseline did not run")?;
    let here = passed_cases(o);
    if let Some(lost) = passed_cases(bare)
        .into_iter()
        .find(|n| !here.contains(n) && !QEMU_TIMING.contains(&n.as_str()))
    {
        return Err(format!("{lost} passed bare on QEMU but not under Vigil"));
    }
    for must in ["isolation", "tsc-offset", "rdtscp-aux"] {
        if !here.iter().any(|n| n == must) {
            return Err(format!("case {must} did not pass under Vigil"));
        }
    }
    let stats = report::exit_stats(&o.capture.com2())?;
    for reason in ["RDTSC", "RDTSCP", "CPUID", "hypercall"] {
        if stats.count(reason) == 0 {
            return Err(format!("no {reason} exits"));
        }
    }
    Ok(())
}

/// With no options, the exits SVM makes unavoidable: CPUID (SVM is hidden), VMMCALL, INVD (it
/// would drop Vigil's dirty cache lines), Vigil's ports, MSRs outside the permission map and
/// Vigil's own (EFER, whose SVME bit is Vigil's; the SVM MSRs), nested page faults on Vigil's
/// memory, a triple fault. Unlike VMX there is no CR exit (SVM pins no CR0/CR4 bit) and no
/// XSETBV exit.
const UNAVOIDABLE: &[&str] = &[
    "CPUID",
    "hypercall",
    "INVD",
    "triple fault",
    "I/O instruction",
    "RDMSR",
    "WRMSR",
    "nested page fault",
];

fn default_policy(c: &Check) -> Result<(), String> {
    crate::scenarios::cases_bare(c)?;
    let stats = report::exit_stats(&c.outcome.capture.com2())?;
    for (reason, row) in &stats.rows {
        if row.count > 0 && !UNAVOIDABLE.contains(&reason.as_str()) {
            return Err(format!(
                "{} {reason} exit(s) under the default policy, which asks for none",
                row.count
            ));
        }
    }
    if stats.count("CPUID") == 0 {
        return Err("no CPUID exits: the table is not counting".into());
    }
    Ok(())
}

/// A triple fault: SVM's SHUTDOWN intercept (exit code 0x7f), a full report, a clean stop.
fn triple_fault(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    if !o.exited_by_itself() {
        return Err(format!(
            "{}: Bochs should have exited by itself",
            o.end_phrase()
        ));
    }
    let reports = report::exit_reports(&o.capture.com2());
    if !reports
        .iter()
        .any(|r| r.reason == "SHUTDOWN" && r.number == 0x7F)
    {
        return Err(format!(
            "no exit report with exit code 0x7f (SHUTDOWN) (reports: {:?})",
            reports
        ));
    }
    match o.capture.last_line(Port::Vigil) {
        Some("run ended: failed: guest triple fault") => Ok(()),
        other => Err(format!(
            "expected `run ended: failed: guest triple fault` last, got {other:?}"
        )),
    }
}

fn clean(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    o.normal_end()?;
    let com2 = o.capture.com2();
    let rules = com2
        .iter()
        .find_map(|l| {
            l.strip_prefix("VMRUN checks: ")?
                .strip_suffix(" rules, no violation")
        })
        .ok_or("no `VMRUN checks: N rules, no violation` line")?;
    let n: u32 = rules
        .parse()
        .map_err(|_| format!("bad rule count {rules:?}"))?;
    if n < 20 {
        return Err(format!("only {n} rules were checked"));
    }
    if let Some(v) = com2.iter().find(|l| l.starts_with("VMRUN check failed")) {
        return Err(format!("a valid VMCB was flagged: {v}"));
    }
    zero_failed(o)
}

fn zero_failed(o: &Outcome) -> Result<(), String> {
    let cases = report::cases(o.capture.com1());
    match cases.iter().find(|l| l.status == Status::Fail) {
        Some(f) => Err(format!("case {} failed: {}", f.name, f.why)),
        None => Ok(()),
    }
}

/// The processor refused the VMCB (VMEXIT_INVALID), Vigil named `rule` alone, said the
/// processor reports it that way and that the two agree, and stopped cleanly.
fn failure(o: &Outcome, rule: &str) -> Result<(), String> {
    let com2 = o.capture.com2();
    if !com2
        .iter()
        .any(|l| l.starts_with("exit code -1 (VMEXIT_INVALID)"))
    {
        return Err("Vigil did not report the processor's VMEXIT_INVALID".into());
    }
    let named: Vec<(&str, &str)> = com2
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("VMRUN check failed: [")?;
            let (rule, tail) = rest.split_once(']')?;
            let reported = tail.rsplit_once("(reported as ")?.1.trim_end_matches(')');
            Some((rule, reported))
        })
        .collect();
    match named.as_slice() {
        [(r, reported)] if *r == rule => {
            if !reported.starts_with("#VMEXIT with VMEXIT_INVALID") {
                return Err(format!(
                    "rule {rule} is said to be reported as {reported:?}"
                ));
            }
        }
        other => return Err(format!("expected rule {rule} alone, Vigil named {other:?}")),
    }
    let agree = "VMRUN checks agree with the processor: #VMEXIT with VMEXIT_INVALID";
    if !com2.iter().any(|l| l.starts_with(agree)) {
        return Err(format!("no `{agree}` line"));
    }
    if com2
        .iter()
        .any(|l| l.to_ascii_lowercase().contains("panic"))
    {
        return Err("Vigil panicked".into());
    }
    match o.capture.last_line(Port::Vigil) {
        Some("run ended: failed: VMRUN failed") => Ok(()),
        other => Err(format!(
            "expected `run ended: failed: VMRUN failed` last, got {other:?}"
        )),
    }
}

fn failure_asid(c: &Check) -> Result<(), String> {
    failure(c.outcome, "control.asid.zero")
}

fn failure_efer(c: &Check) -> Result<(), String> {
    failure(c.outcome, "guest.efer.svme")
}
