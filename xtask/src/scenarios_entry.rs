//! VM-entry check scenarios: Vigil's checks run on the real VMCS before the first entry and find
//! nothing, and a field broken on purpose (`test-vmwrite=`) makes the processor refuse the entry
//! while Vigil names the rule and confirms that the rule explains what the processor reported.

use crate::outcome::{Mode, Outcome};
use crate::scenarios::{Check, Scenario};
use crate::stream::Port;

const SKYLAKE: &str = crate::bochs::DEFAULT_CPU_MODEL;

pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "entry-checks-clean",
            guest: "demo",
            guest_args: "",
            mode: Mode::Vigil,
            vigil_options: "check-entry=on",
            cpu_model: SKYLAKE,
            timeout_secs: 90,
            baseline: None,
            check: clean,
        },
        Scenario {
            name: "entry-failure-guest-state",
            guest: "demo",
            guest_args: "",
            mode: Mode::Vigil,
            // Guest TR access rights: "unusable" (bit 16). TR must be usable (SDM 27.3.1.2).
            vigil_options: "test-vmwrite=0x4822:0x10000",
            cpu_model: SKYLAKE,
            timeout_secs: 90,
            baseline: None,
            check: guest_state,
        },
        Scenario {
            name: "entry-failure-control",
            guest: "demo",
            guest_args: "",
            mode: Mode::Vigil,
            // Pin-based controls 0: clears bits the capability MSR requires (SDM 27.2.1.1).
            vigil_options: "test-vmwrite=0x4000:0",
            cpu_model: SKYLAKE,
            timeout_secs: 90,
            baseline: None,
            check: control,
        },
    ]
}

fn clean(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    o.normal_end()?;
    let com2 = o.capture.com2();
    let rules = com2
        .iter()
        .find_map(|l| {
            l.strip_prefix("entry checks: ")?
                .strip_suffix(" rules, no violation")
        })
        .ok_or("no `entry checks: N rules, no violation` line")?;
    let n: u32 = rules
        .parse()
        .map_err(|_| format!("bad rule count {rules:?}"))?;
    if n < 50 {
        return Err(format!("only {n} rules were checked"));
    }
    if let Some(v) = com2.iter().find(|l| l.starts_with("entry check failed")) {
        return Err(format!("a valid VMCS was flagged: {v}"));
    }
    Ok(())
}

/// The rule ids Vigil named, each with how it says the processor reports that rule.
fn violations(o: &Outcome) -> Vec<(String, String)> {
    o.capture
        .com2()
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("entry check failed: [")?;
            let (rule, tail) = rest.split_once(']')?;
            let reported = tail.rsplit_once("(reported as ")?.1.trim_end_matches(')');
            Some((rule.to_string(), reported.to_string()))
        })
        .collect()
}

/// Common to both failures: the processor's report, the named rule, agreement, a clean stop.
fn failure(o: &Outcome, processor: &str, rule: &str, reported_as: &str) -> Result<(), String> {
    let com2 = o.capture.com2();
    if !com2.iter().any(|l| l.starts_with(processor)) {
        return Err(format!(
            "Vigil did not report the processor's `{processor}`"
        ));
    }
    let found = violations(o);
    let named = found.iter().find(|(r, _)| r == rule).ok_or_else(|| {
        format!(
            "rule {rule} not named (named: {:?})",
            found.iter().map(|(r, _)| r).collect::<Vec<_>>()
        )
    })?;
    if !named.1.starts_with(reported_as) {
        return Err(format!(
            "rule {rule} is said to be reported as {:?}, expected {reported_as}",
            named.1
        ));
    }
    let agree = format!("entry checks agree with the processor: {reported_as}");
    if !com2.iter().any(|l| l.starts_with(&agree)) {
        return Err(format!("no `{agree}` line"));
    }
    if com2
        .iter()
        .chain(o.capture.com1().iter())
        .any(|l| l.contains("panic"))
    {
        return Err("Vigil panicked".into());
    }
    match o.capture.last_line(Port::Vigil) {
        Some(l) if l.starts_with("run ended: failed: VM entry failed") => Ok(()),
        other => Err(format!(
            "expected `run ended: failed: VM entry failed` last, got {other:?}"
        )),
    }
}

fn guest_state(c: &Check) -> Result<(), String> {
    failure(
        c.outcome,
        "exit reason 33 ",
        "guest.tr.unusable",
        "VM exit 33",
    )
}

fn control(c: &Check) -> Result<(), String> {
    failure(
        c.outcome,
        "VM-instruction error 7:",
        "controls.pin.allowed",
        "VM-instruction error 7",
    )
}
