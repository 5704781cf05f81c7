//! Virtual-time scenarios: the `cases` guest under each `tsc=` mode, compared with the same guest
//! run bare in the same invocation. Every case must still pass; on top of that each mode's own
//! promise is checked from the values the guest measured:
//! - `hide`: the pafish probe (`rdtsc; cpuid; rdtsc`) reads as bare (never less, at most two
//!   ticks more), and a 16 M-tick hold inside Vigil is invisible;
//! - `frozen`: a 16 M-tick hold inside Vigil is invisible (`tsc-hold` d1 = d0);
//! - `scale:3/2`: the TSC rate against the PIT is 3/2 of bare's within 1 %;
//! - default policy: the exit table holds only exits the architecture or Vigil's own duties make
//!   unavoidable.

use crate::outcome::{Mode, Outcome};
use crate::report::{self, CaseLine, Status};
use crate::scenarios::{Check, Scenario};

const SKYLAKE: &str = crate::bochs::DEFAULT_CPU_MODEL;

fn scenario(
    name: &'static str,
    options: &'static str,
    check: fn(&Check) -> Result<(), String>,
) -> Scenario {
    Scenario {
        name,
        guest: "cases",
        guest_args: "",
        mode: Mode::Vigil,
        vigil_options: options,
        cpu_model: SKYLAKE,
        timeout_secs: 180,
        baseline: Some("cases-bare"),
        check,
    }
}

pub fn all() -> Vec<Scenario> {
    vec![
        scenario("time-hide", "tsc=hide hypercall=on", hide),
        scenario("time-frozen", "tsc=frozen hypercall=on", frozen),
        scenario("time-scale", "tsc=scale:3/2 hypercall=on", scale),
        scenario("cases-default-policy", "", default_policy),
    ]
}

/// The guest's case lines, after checking the run ended normally with nothing failed.
pub(crate) fn passed_cases(o: &Outcome) -> Result<Vec<CaseLine>, String> {
    o.normal_end()?;
    let lines = report::cases(o.capture.com1());
    if let Some(f) = lines.iter().find(|c| c.status == Status::Fail) {
        return Err(format!("case {} failed: {}", f.name, f.why));
    }
    if lines.is_empty() {
        return Err("the guest printed no case lines".into());
    }
    Ok(lines)
}

pub(crate) fn case<'a>(lines: &'a [CaseLine], name: &str) -> Result<&'a CaseLine, String> {
    lines
        .iter()
        .find(|c| c.name == name && c.status == Status::Pass)
        .ok_or_else(|| format!("case {name} did not PASS"))
}

pub(crate) fn number(c: &CaseLine, key: &str) -> Result<u64, String> {
    c.field(key)
        .and_then(report::parse_u64)
        .ok_or_else(|| format!("case {} has no numeric `{key}=`", c.name))
}

fn baseline(c: &Check) -> Result<Vec<CaseLine>, String> {
    let b = c.baseline.ok_or("the bare baseline did not run")?;
    passed_cases(b).map_err(|e| format!("bare baseline: {e}"))
}

fn mode_is(c: &CaseLine, mode: &str) -> Result<(), String> {
    match c.field("mode") {
        Some(m) if m == mode => Ok(()),
        other => Err(format!(
            "case {} reports mode {other:?}, expected {mode}",
            c.name
        )),
    }
}

fn hide(c: &Check) -> Result<(), String> {
    hide_within(c, 1)
}

/// `hide` on SVM: no timer, so the repayment rate changes at the guest's own exits, and a change
/// at the hold's exit rounds it up by at most 4 ticks (`vigil_core::time::Time::plan`).
pub(crate) fn hide_svm(c: &Check) -> Result<(), String> {
    hide_within(c, 4)
}

/// pafish as bare reads it, and a 16 M-tick hold within `slack` ticks of a hold of 0.
fn hide_within(c: &Check, slack: u64) -> Result<(), String> {
    let vigil = passed_cases(c.outcome)?;
    let bare = baseline(c)?;
    let (v, b) = (case(&vigil, "pafish")?, case(&bare, "pafish")?);
    // As bare metal reads them: never less, at most two ticks more (while the debt is repaid
    // the scaled counter may round an exit up by a tick).
    for key in ["avg_cpuid", "avg_rdtsc"] {
        let (under, bare) = (number(v, key)?, number(b, key)?);
        if under < bare || under > bare + 2 {
            return Err(format!(
                "pafish {key}: {under} under Vigil vs {bare} bare (undetectable means {bare} to {})",
                bare + 2
            ));
        }
    }
    let hold = case(&vigil, "tsc-hold")?;
    mode_is(hold, "hide")?;
    hold_hidden(hold, slack)
}

/// A 16 M-tick hold reads like a hold of 0: exactly (`frozen`), or within `slack` ticks
/// (`hide`, whose clock may be running 1/2048 fast, rounding the two reads differently).
fn hold_hidden(hold: &CaseLine, slack: u64) -> Result<(), String> {
    let (d0, d1) = (number(hold, "d0")?, number(hold, "d1")?);
    if d0.abs_diff(d1) > slack {
        return Err(format!("a hold inside Vigil was visible: d0={d0} d1={d1}"));
    }
    Ok(())
}

fn frozen(c: &Check) -> Result<(), String> {
    let vigil = passed_cases(c.outcome)?;
    baseline(c)?;
    let hold = case(&vigil, "tsc-hold")?;
    mode_is(hold, "frozen")?;
    hold_hidden(hold, 0)
}

fn scale(c: &Check) -> Result<(), String> {
    let vigil = passed_cases(c.outcome)?;
    let bare = baseline(c)?;
    let (v, b) = (case(&vigil, "tsc-rate")?, case(&bare, "tsc-rate")?);
    let (under, bare) = (
        number(v, "tsc_per_pit_x1000")? as f64,
        number(b, "tsc_per_pit_x1000")? as f64,
    );
    let ratio = under / bare;
    if (ratio - 1.5).abs() > 1.5 * 0.01 {
        return Err(format!(
            "TSC rate {ratio:.4} of bare, expected 1.5 within 1 %"
        ));
    }
    Ok(())
}

/// With no options, only these exits may appear, each for a stated reason.
const UNAVOIDABLE: &[(&str, &str)] = &[
    ("CPUID", "always exits"),
    ("XSETBV", "always exits"),
    ("hypercall", "VMCALL always exits (the guest's hypercalls)"),
    ("INVD", "always exits"),
    ("task switch", "always exits (the task-switch case)"),
    ("triple fault", "always exits"),
    (
        "I/O instruction",
        "Vigil's ports: COM2, shutdown, and the platform it owns (PCI configuration, resets, \
         A20, ACPI PM1 control, the SMI command port, the IDE bus master)",
    ),
    (
        "RDMSR",
        "MSRs not on the pass-through list (denied by default), Vigil's own (VMX, APIC base, \
         MTRRs)",
    ),
    (
        "WRMSR",
        "MSRs not on the pass-through list (denied by default), Vigil's own (VMX, APIC base, \
         MTRRs, x2APIC ICR)",
    ),
    (
        "control-register access",
        "CR0/CR4 bits VMX pins (NE, VMXE)",
    ),
    (
        "nested page fault",
        "accesses to Vigil's memory (the isolation case)",
    ),
];

fn default_policy(c: &Check) -> Result<(), String> {
    passed_cases(c.outcome)?;
    baseline(c)?;
    let stats = report::exit_stats(&c.outcome.capture.com2())?;
    for (reason, row) in &stats.rows {
        if row.count > 0 && !UNAVOIDABLE.iter().any(|(r, _)| r == reason) {
            return Err(format!(
                "{} {reason} exit(s) under the default policy, which asks for none",
                row.count
            ));
        }
    }
    for asked_only in ["RDTSC", "RDTSCP", "HLT", "INVLPG", "RDPMC", "MOV DR"] {
        if stats.count(asked_only) != 0 {
            return Err(format!("{asked_only} exited although nothing asked for it"));
        }
    }
    if stats.count("CPUID") == 0 {
        return Err("no CPUID exits: the table is not counting".into());
    }
    Ok(())
}
