//! Transparency on the processors users have: every CPUID feature Vigil shows must work in the
//! guest (bare and under Vigil alike), on a model with the newer gated instructions
//! (`sapphire_rapids`: RDPID, WAITPKG's UMONITOR/UMWAIT/TPAUSE), with and without RDTSC
//! exiting; and the 32-bit task-switch case on the same machine.

use std::collections::BTreeSet;

use crate::outcome::Mode;
use crate::report::{self, Status};
use crate::scenarios::{Check, Scenario};
use crate::stream::Port;

/// A model with WAITPKG and RDPID, whose instructions VMX must enable for the guest.
const SAPPHIRE_RAPIDS: &str = "sapphire_rapids";
const FEATURE_CASES: &str = "case=cpuid-features,task-switch";

pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "features-sapphire-rapids-bare",
            guest: "cases",
            guest_args: FEATURE_CASES,
            mode: Mode::Bare,
            vigil_options: "",
            cpu_model: SAPPHIRE_RAPIDS,
            timeout_secs: 120,
            baseline: None,
            check: crate::scenarios::cases_bare,
        },
        Scenario {
            name: "features-sapphire-rapids-vigil",
            guest: "cases",
            guest_args: FEATURE_CASES,
            mode: Mode::Vigil,
            vigil_options: "",
            cpu_model: SAPPHIRE_RAPIDS,
            timeout_secs: 120,
            baseline: Some("features-sapphire-rapids-bare"),
            check: same_features,
        },
        // RDTSC exiting would make UMWAIT and TPAUSE exit: Vigil hides WAITPKG instead.
        Scenario {
            name: "features-sapphire-rapids-hide",
            guest: "cases",
            guest_args: FEATURE_CASES,
            mode: Mode::Vigil,
            vigil_options: "tsc=hide",
            cpu_model: SAPPHIRE_RAPIDS,
            timeout_secs: 120,
            baseline: Some("features-sapphire-rapids-bare"),
            check: waitpkg_hidden,
        },
    ]
}

/// The `shown=` list of the guest's cpuid-features line (the instructions it ran).
fn shown(lines: impl IntoIterator<Item = impl AsRef<str>>) -> Result<BTreeSet<String>, String> {
    let lines: Vec<String> = lines.into_iter().map(|l| l.as_ref().to_string()).collect();
    let case = report::cases(lines.iter().map(String::as_str))
        .into_iter()
        .find(|l| l.name == "cpuid-features")
        .ok_or("no cpuid-features line")?;
    if case.status != Status::Pass {
        return Err(format!("cpuid-features: {:?} {}", case.status, case.why));
    }
    let list = case.field("shown").ok_or("cpuid-features has no shown=")?;
    Ok(list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

/// Both runs passed every case; returns (bare, under Vigil) shown features.
fn compare(c: &Check) -> Result<(BTreeSet<String>, BTreeSet<String>), String> {
    crate::scenarios::cases_bare(c)?;
    let bare = c
        .baseline
        .ok_or("the bare run this check compares with is missing")?;
    crate::scenarios::cases_bare(&Check {
        scenario: c.scenario,
        outcome: bare,
        baseline: None,
    })?;
    let vigil = shown(c.outcome.capture.port(Port::Guest))?;
    let bare = shown(bare.capture.port(Port::Guest))?;
    if !bare.contains("tpause") || !bare.contains("rdpid") {
        return Err(format!(
            "the bare run shows no WAITPKG or RDPID ({bare:?}): not the model this scenario needs"
        ));
    }
    Ok((bare, vigil))
}

fn same_features(c: &Check) -> Result<(), String> {
    let (bare, vigil) = compare(c)?;
    if bare != vigil {
        return Err(format!(
            "CPUID shows other instructions under Vigil: bare {bare:?}, Vigil {vigil:?}"
        ));
    }
    Ok(())
}

fn waitpkg_hidden(c: &Check) -> Result<(), String> {
    let (bare, vigil) = compare(c)?;
    let waitpkg: BTreeSet<String> = ["umonitor", "umwait", "tpause"]
        .into_iter()
        .map(str::to_string)
        .collect();
    let expected: BTreeSet<String> = bare.difference(&waitpkg).cloned().collect();
    if vigil != expected {
        return Err(format!(
            "under tsc=hide the guest should see everything but WAITPKG: expected {expected:?}, got {vigil:?}"
        ));
    }
    if !c
        .outcome
        .capture
        .port(Port::Vigil)
        .any(|l| l.starts_with("CPUID hides WAITPKG"))
    {
        return Err("Vigil did not say that CPUID hides WAITPKG".into());
    }
    Ok(())
}
