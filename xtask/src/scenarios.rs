//! The Bochs scenarios of `cargo xtask test`: what to boot, and a check over what the serial
//! ports printed. Checks parse values (the line formats of docs/architecture.md); they do not
//! just look for text.

use std::collections::BTreeSet;

use crate::cli::DEMO_VIGIL_OPTIONS;
use crate::emulator::Feature;
use crate::outcome::{Mode, Outcome};
use crate::report::{self, Status, Summary};
use crate::stream::Port;

pub struct Scenario {
    pub name: &'static str,
    /// A guest-kit binary.
    pub guest: &'static str,
    pub guest_args: &'static str,
    pub mode: Mode,
    /// Vigil's command line (ignored when bare).
    pub vigil_options: &'static str,
    pub cpu_model: &'static str,
    pub timeout_secs: u64,
    /// A scenario whose outcome the check compares with (run too when this one is selected).
    pub baseline: Option<&'static str>,
    pub check: fn(&Check) -> Result<(), String>,
}

/// What a check looks at.
pub struct Check<'a> {
    pub scenario: &'a Scenario,
    pub outcome: &'a Outcome,
    /// The baseline scenario's outcome, when it has one and it ran.
    pub baseline: Option<&'a Outcome>,
}

const SKYLAKE: &str = crate::bochs::DEFAULT_CPU_MODEL;

/// Emulator features a scenario needs, by scenario name; a scenario not listed needs none.
/// `cargo xtask test` reports a scenario the chosen Bochs cannot run as SKIP with the feature,
/// and counts it in its closing line.
const NEEDS: &[(&str, &[Feature])] =
    &[(crate::gdb_tests::STEP_SCENARIO, &[Feature::MonitorTrapFlag])];

pub fn needs(scenario: &str) -> &'static [Feature] {
    if scenario.starts_with("models-") || scenario.starts_with("features-sapphire-rapids") {
        return &[Feature::CpuModels3];
    }
    if scenario.ends_with(crate::scenarios_amd::SUFFIX) {
        if scenario.starts_with("linux-") {
            return &[Feature::LinuxOnAmd];
        }
        if scenario.contains("triple-fault") && !scenario.contains("trapped") {
            return &[Feature::SvmShutdown];
        }
    }
    NEEDS
        .iter()
        .find(|(name, _)| *name == scenario)
        .map_or_else(|| crate::scenarios_smp::needs(scenario), |(_, f)| f)
}
/// The guest kit's Vigil-specific cases talk to Vigil through hypercalls, which are off unless
/// asked for.
const CASES_VIGIL_OPTIONS: &str = "tsc=offset:0x100000000000 hypercall=on";
const CASES_VIGIL_TRAP_OPTIONS: &str = "trap=rdtsc,rdtscp tsc=offset:0x100000000000 hypercall=on";

pub fn all() -> Vec<Scenario> {
    let mut all: Vec<Scenario> = vec![
        Scenario {
            name: "demo-vigil",
            guest: "demo",
            guest_args: "",
            mode: Mode::Vigil,
            vigil_options: DEMO_VIGIL_OPTIONS,
            cpu_model: SKYLAKE,
            timeout_secs: 120,
            baseline: None,
            check: demo_vigil,
        },
        Scenario {
            name: "demo-bare",
            guest: "demo",
            guest_args: "",
            mode: Mode::Bare,
            vigil_options: "",
            cpu_model: SKYLAKE,
            timeout_secs: 120,
            baseline: None,
            check: demo_bare,
        },
        Scenario {
            name: "cases-bare",
            guest: "cases",
            guest_args: "",
            mode: Mode::Bare,
            vigil_options: "",
            cpu_model: SKYLAKE,
            timeout_secs: 180,
            baseline: None,
            check: cases_bare,
        },
        Scenario {
            name: "cases-vigil",
            guest: "cases",
            guest_args: "",
            mode: Mode::Vigil,
            vigil_options: CASES_VIGIL_OPTIONS,
            cpu_model: SKYLAKE,
            timeout_secs: 180,
            baseline: Some("cases-bare"),
            check: cases_vigil,
        },
        Scenario {
            name: "cases-vigil-trap",
            guest: "cases",
            guest_args: "",
            mode: Mode::Vigil,
            vigil_options: CASES_VIGIL_TRAP_OPTIONS,
            cpu_model: SKYLAKE,
            timeout_secs: 180,
            baseline: Some("cases-bare"),
            check: cases_vigil,
        },
        // Linux (Debian's cloud kernel, the busybox initramfs of initramfs.rs): bare as the
        // reference, under Vigil's default policy, and under the two TSC policies Linux must
        // not notice. About 30 s of Bochs each bare, more under Vigil.
        Scenario {
            name: "linux-bare",
            guest: crate::linux::GUEST,
            guest_args: "",
            mode: Mode::Bare,
            vigil_options: "",
            cpu_model: SKYLAKE,
            timeout_secs: 600,
            baseline: None,
            check: crate::linux_checks::check_bare,
        },
        Scenario {
            name: "linux-vigil",
            guest: crate::linux::GUEST,
            guest_args: "",
            mode: Mode::Vigil,
            vigil_options: "",
            cpu_model: SKYLAKE,
            timeout_secs: 600,
            baseline: Some("linux-bare"),
            check: crate::linux_checks::check_vigil,
        },
        // The kernel's clocksource watchdog kept on the TSC, and 4 s of quiet after boot.
        Scenario {
            name: "linux-watchdog-bare",
            guest: crate::linux::GUEST,
            guest_args: crate::linux_checks::WATCHDOG_ARGS,
            mode: Mode::Bare,
            vigil_options: "",
            cpu_model: SKYLAKE,
            timeout_secs: 600,
            baseline: None,
            check: crate::linux_checks::check_bare,
        },
        Scenario {
            name: "linux-hide",
            guest: crate::linux::GUEST,
            guest_args: crate::linux_checks::WATCHDOG_ARGS,
            mode: Mode::Vigil,
            vigil_options: "tsc=hide",
            cpu_model: SKYLAKE,
            timeout_secs: 900,
            baseline: Some("linux-watchdog-bare"),
            check: crate::linux_checks::check_watchdog,
        },
        Scenario {
            name: "linux-offset",
            guest: crate::linux::GUEST,
            guest_args: "",
            mode: Mode::Vigil,
            vigil_options: "tsc=offset:0x100000000000",
            cpu_model: SKYLAKE,
            timeout_secs: 600,
            baseline: Some("linux-bare"),
            check: crate::linux_checks::check_time,
        },
        Scenario {
            name: "hostile-triple-fault",
            guest: "hostile",
            guest_args: "case=triple-fault",
            mode: Mode::Vigil,
            vigil_options: "",
            cpu_model: SKYLAKE,
            timeout_secs: 90,
            baseline: None,
            check: hostile_triple_fault,
        },
    ]
    .into_iter()
    .chain(crate::scenarios_entry::all())
    .chain(crate::scenarios_time::all())
    .chain(crate::scenarios_detect::all())
    .chain(crate::scenarios_hostile::all())
    .chain(crate::scenarios_traps::all())
    .chain(crate::gdb_tests::all())
    .chain(crate::scenarios_guests::all())
    .chain(crate::scenarios_smp::all())
    .chain(crate::scenarios_transparent::all())
    .collect();
    // The AMD-V scenarios, many of which mirror the ones above on `ryzen`.
    let amd = crate::scenarios_amd::all(&all);
    all.extend(amd);
    all
}

pub(crate) fn demo_vigil(c: &Check) -> Result<(), String> {
    c.outcome.normal_end()?;
    no_panic(c.outcome, &[Port::Vigil])?;
    zero_failed(c.outcome)?;
    let stats = report::exit_stats(&c.outcome.capture.com2())?;
    for reason in ["CPUID", "RDTSC", "RDTSCP", "hypercall"] {
        if stats.count(reason) == 0 {
            let seen: Vec<String> = stats
                .rows
                .iter()
                .map(|(r, row)| format!("{r}={}", row.count))
                .collect();
            return Err(format!(
                "exit statistics: no {reason} exits (rows: {})",
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            ));
        }
    }
    let sum: u64 = stats.rows.values().map(|r| r.count).sum();
    if sum != stats.total.count {
        return Err(format!(
            "exit statistics: the rows add up to {sum} exits, the total row says {}",
            stats.total.count
        ));
    }
    Ok(())
}

pub(crate) fn demo_bare(c: &Check) -> Result<(), String> {
    c.outcome.normal_end()?;
    if c.outcome.capture.com1().is_empty() {
        return Err("the guest printed nothing on COM1".into());
    }
    if let Some(line) = c.outcome.capture.com2().first() {
        return Err(format!("COM2 should be silent bare, it printed {line:?}"));
    }
    zero_failed(c.outcome)?;
    Ok(())
}

pub(crate) fn cases_bare(c: &Check) -> Result<(), String> {
    cases_common(c.outcome).map(|_| ())
}

pub(crate) fn cases_vigil(c: &Check) -> Result<(), String> {
    cases_common(c.outcome)?;
    no_panic(c.outcome, &[Port::Vigil])?;
    let cases = report::cases(c.outcome.capture.port(Port::Guest));

    // TSC offsetting: the guest saw at least the configured offset.
    let tsc = cases
        .iter()
        .rev()
        .find(|l| l.name == "tsc-offset")
        .ok_or("no tsc-offset case line")?;
    if tsc.status != Status::Pass {
        return Err(format!(
            "tsc-offset did not pass under Vigil: {:?} {}",
            tsc.status, tsc.why
        ));
    }
    let hex = |key: &str| -> Result<u64, String> {
        let text = tsc
            .field(key)
            .ok_or(format!("tsc-offset has no {key}= field"))?;
        report::parse_hex(text).ok_or(format!("tsc-offset {key}={text} is not 0x-hex"))
    };
    let (observed, offset) = (hex("observed")?, hex("offset")?);
    let configured = tsc_offset_option(c.scenario.vigil_options)
        .ok_or("the scenario configures no tsc=offset:")?;
    if offset != configured {
        return Err(format!(
            "tsc-offset reports offset={offset:#x}, Vigil was given {configured:#x}"
        ));
    }
    if observed < offset {
        return Err(format!(
            "tsc-offset observed={observed:#x} is below offset={offset:#x}"
        ));
    }
    // RDTSC is either trapped (Vigil emulates it and confirms the value the guest read) or
    // offset by the processor (no exits, nothing to confirm): what the guest reports, Vigil's
    // statistics and its command line must agree.
    let trapped = traps_rdtsc(c.scenario.vigil_options);
    let stats = report::exit_stats(&c.outcome.capture.com2())?;
    let rdtsc_exits = stats.count("RDTSC") + stats.count("RDTSCP");
    let confirmed = report::confirmed_tsc_values(c.outcome.capture.port(Port::Vigil));
    match (tsc.field("intercepted"), trapped) {
        (Some("no"), false) => {
            if rdtsc_exits != 0 {
                return Err(format!(
                    "RDTSC is not trapped, yet {rdtsc_exits} RDTSC/RDTSCP exits"
                ));
            }
        }
        // A guest that does not say is held to the confirmation.
        (Some("yes") | None, true) | (None, false) => {
            if !confirmed.contains(&observed) {
                let seen: Vec<String> = confirmed.iter().map(|v| format!("{v:#x}")).collect();
                return Err(format!(
                    "Vigil did not print `hypercall: confirm-tsc {observed:#x} matches` \
                     (confirmed: {})",
                    if seen.is_empty() {
                        "none".to_string()
                    } else {
                        seen.join(", ")
                    }
                ));
            }
            if trapped && rdtsc_exits == 0 {
                return Err("RDTSC is trapped, yet no RDTSC/RDTSCP exits".into());
            }
        }
        (other, _) => {
            return Err(format!(
                "tsc-offset says intercepted={}, Vigil's options `{}` say {}",
                other.unwrap_or("?"),
                c.scenario.vigil_options,
                if trapped { "trapped" } else { "not trapped" }
            ))
        }
    }

    // Transparency: everything that passed bare passes under Vigil.
    let bare = c
        .baseline
        .ok_or("the cases-bare outcome this check compares with is missing")?;
    let passed = |o: &Outcome| -> BTreeSet<String> {
        report::cases(o.capture.port(Port::Guest))
            .into_iter()
            .filter(|l| l.status == Status::Pass)
            .map(|l| l.name)
            .collect()
    };
    let under_vigil = passed(c.outcome);
    let lost: Vec<String> = passed(bare).difference(&under_vigil).cloned().collect();
    if !lost.is_empty() {
        return Err(format!(
            "passed bare but not under Vigil: {}",
            lost.join(", ")
        ));
    }
    Ok(())
}

fn hostile_triple_fault(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    if !o.exited_by_itself() {
        return Err(format!(
            "{}: Bochs should have exited by itself",
            o.end_phrase()
        ));
    }
    no_panic(o, &[Port::Guest, Port::Vigil])?;
    let reports = report::exit_reports(&o.capture.com2());
    if !reports
        .iter()
        .any(|r| r.reason == "triple fault" && r.number == 2)
    {
        let seen: Vec<String> = reports
            .iter()
            .map(|r| format!("{} ({})", r.number, r.reason))
            .collect();
        return Err(format!(
            "no exit report with reason 2 (triple fault) (reports: {})",
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        ));
    }
    match o.capture.last_line(Port::Vigil) {
        Some(line) if line.starts_with("run ended: failed:") => Ok(()),
        Some(line) => Err(format!(
            "expected `run ended: failed: …` last, got {line:?}"
        )),
        None => Err("Vigil printed nothing".into()),
    }
}

/// Shared by both cases scenarios: a normal end, N > 0 passed, 0 failed, and the summary agrees
/// with the case lines.
fn cases_common(o: &Outcome) -> Result<Summary, String> {
    o.normal_end()?;
    let summary = zero_failed(o)?;
    if summary.passed == 0 {
        return Err(format!("no case passed: {}", summary.line));
    }
    let cases = report::cases(o.capture.port(Port::Guest));
    if let Some(fail) = cases.iter().find(|l| l.status == Status::Fail) {
        return Err(format!("FAIL {} {}", fail.name, fail.why));
    }
    let pass_lines = cases.iter().filter(|l| l.status == Status::Pass).count() as u64;
    if pass_lines != summary.passed {
        return Err(format!(
            "{pass_lines} PASS lines, but the summary says {} passed",
            summary.passed
        ));
    }
    Ok(summary)
}

/// The guest-kit summary, which must report 0 failed.
fn zero_failed(o: &Outcome) -> Result<Summary, String> {
    let summary = report::summary(o.capture.port(Port::Guest))
        .ok_or("no `guest-kit: N passed, N failed, N skipped` line")?;
    if summary.failed != 0 {
        let first = o
            .capture
            .port(Port::Guest)
            .find(|l| report::case_line(l).is_some_and(|c| c.status == Status::Fail));
        return Err(match first {
            Some(line) => format!("guest: {} (first: {line})", summary.line),
            None => format!("guest: {}", summary.line),
        });
    }
    Ok(summary)
}

fn no_panic(o: &Outcome, ports: &[Port]) -> Result<(), String> {
    for (port, line) in &o.capture.lines {
        if ports.contains(port) && line.to_ascii_lowercase().contains("panic") {
            return Err(format!("{}{line}", port.prefix()));
        }
    }
    Ok(())
}

/// Whether a Vigil command line traps RDTSC (`trap=…,rdtsc,…`).
pub fn traps_rdtsc(options: &str) -> bool {
    options
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("trap="))
        .any(|list| list.split(',').any(|t| t == "rdtsc"))
}

/// The offset of a `tsc=offset:0x…` word in a Vigil command line.
pub fn tsc_offset_option(options: &str) -> Option<u64> {
    options
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tsc=offset:"))
        .and_then(report::parse_u64)
}

#[cfg(test)]
#[path = "scenarios_tests.rs"]
mod tests;
