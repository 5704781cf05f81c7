//! The scenario checks against made-up serial output.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use super::*;
use crate::outcome::End;
use crate::stream::Capture;

fn outcome(mode: Mode, com1: &str, com2: &str) -> Outcome {
    let mut lines = Vec::new();
    lines.extend(com1.lines().map(|l| (Port::Guest, l.trim().to_string())));
    lines.extend(com2.lines().map(|l| (Port::Vigil, l.trim().to_string())));
    Outcome {
        mode,
        capture: Capture { lines },
        end: End::Exited(ExitStatus::from_raw(1 << 8)),
        elapsed: Duration::from_secs(5),
        first_byte: Some(Duration::from_secs(1)),
        timeout: Duration::from_secs(120),
        bochs_problems: Vec::new(),
        dir: "/tmp/x".into(),
    }
}

fn scenario(name: &str) -> Scenario {
    all().into_iter().find(|s| s.name == name).unwrap()
}

fn check(name: &str, o: &Outcome, baseline: Option<&Outcome>) -> Result<(), String> {
    let s = scenario(name);
    (s.check)(&Check {
        scenario: &s,
        outcome: o,
        baseline,
    })
}

const STATS: &str = "exit statistics:
    reason           count  total-ticks  median-ticks
    CPUID               10         1000           100
    RDTSC                2          200           100
    RDTSCP               1          100           100
    hypercall            3          300           100
    I/O instruction      4          400           100
    total               20         2000             -";

const DEMO_COM1: &str = "demo: hello
    PASS cpuid
    guest-kit: 1 passed, 0 failed, 0 skipped";

#[test]
fn demo_vigil_passes_and_needs_each_exit_kind() {
    let com2 = format!("vigil: up\n{STATS}\nrun ended: ok");
    assert_eq!(
        check("demo-vigil", &outcome(Mode::Vigil, DEMO_COM1, &com2), None),
        Ok(())
    );

    let no_rdtscp = com2.replace("RDTSCP               1", "RDTSCP               0");
    let err = check(
        "demo-vigil",
        &outcome(Mode::Vigil, DEMO_COM1, &no_rdtscp),
        None,
    );
    assert!(err.unwrap_err().contains("no RDTSCP exits"));

    let bad_total = com2.replace("total               20", "total               21");
    let err = check(
        "demo-vigil",
        &outcome(Mode::Vigil, DEMO_COM1, &bad_total),
        None,
    );
    assert!(err.unwrap_err().contains("add up to 20"));

    let failed = format!("vigil: up\n{STATS}\nrun ended: failed: guest stopped");
    let err = check(
        "demo-vigil",
        &outcome(Mode::Vigil, DEMO_COM1, &failed),
        None,
    );
    assert_eq!(err.unwrap_err(), "vigil: run ended: failed: guest stopped");

    let mut timed_out = outcome(Mode::Vigil, DEMO_COM1, &com2);
    timed_out.end = End::TimedOut;
    assert!(check("demo-vigil", &timed_out, None)
        .unwrap_err()
        .contains("timed out"));

    let guest_failed = DEMO_COM1.replace("0 failed", "1 failed");
    let err = check(
        "demo-vigil",
        &outcome(Mode::Vigil, &guest_failed, &com2),
        None,
    );
    assert!(err.unwrap_err().contains("1 failed"));
}

#[test]
fn demo_bare_wants_a_silent_com2() {
    assert_eq!(
        check("demo-bare", &outcome(Mode::Bare, DEMO_COM1, ""), None),
        Ok(())
    );
    let err = check("demo-bare", &outcome(Mode::Bare, DEMO_COM1, "stray"), None);
    assert!(err.unwrap_err().contains("COM2 should be silent"));
    let err = check("demo-bare", &outcome(Mode::Bare, "", ""), None);
    assert!(err.unwrap_err().contains("nothing on COM1"));
}

const CASES_BARE: &str = "PASS cpuid-vendor
    PASS rdtsc-monotonic
    SKIP tsc-offset not under Vigil
    guest-kit: 2 passed, 0 failed, 1 skipped";

const CASES_VIGIL: &str = "PASS cpuid-vendor
    PASS rdtsc-monotonic
    PASS tsc-offset observed=0x100000001234 offset=0x100000000000
    guest-kit: 3 passed, 0 failed, 0 skipped";

const CASES_COM2: &str = "hypercall: confirm-tsc 0x100000001234 matches
    exit statistics:
    reason  count  total-ticks  median-ticks
    RDTSC  5  500  100
    VMCALL  3  300  100
    total  8  800  -
    run ended: ok";

/// Vigil's output when RDTSC runs with hardware offsetting only.
const CASES_COM2_OFFSET: &str = "exit statistics:
    reason  count  total-ticks  median-ticks
    VMCALL  2  200  100
    total  2  200  -
    run ended: ok";

#[test]
fn cases_bare_counts_must_agree() {
    assert_eq!(
        check("cases-bare", &outcome(Mode::Bare, CASES_BARE, ""), None),
        Ok(())
    );
    let fewer = CASES_BARE.replace("PASS rdtsc-monotonic", "");
    let err = check("cases-bare", &outcome(Mode::Bare, &fewer, ""), None);
    assert!(err.unwrap_err().contains("1 PASS lines"));
    let none = "guest-kit: 0 passed, 0 failed, 0 skipped";
    let err = check("cases-bare", &outcome(Mode::Bare, none, ""), None);
    assert!(err.unwrap_err().contains("no case passed"));
}

#[test]
fn cases_vigil_checks_tsc_values_and_transparency() {
    let bare = outcome(Mode::Bare, CASES_BARE, "");
    let ok = outcome(Mode::Vigil, CASES_VIGIL, CASES_COM2);
    assert_eq!(check("cases-vigil", &ok, Some(&bare)), Ok(()));
    assert!(check("cases-vigil", &ok, None)
        .unwrap_err()
        .contains("cases-bare"));

    let below = CASES_VIGIL.replace("observed=0x100000001234", "observed=0x1234");
    let com2 = CASES_COM2.replace("0x100000001234", "0x1234");
    let err = check(
        "cases-vigil",
        &outcome(Mode::Vigil, &below, &com2),
        Some(&bare),
    );
    assert!(err.unwrap_err().contains("below offset"));

    let other_offset = CASES_VIGIL.replace("offset=0x100000000000", "offset=0x5");
    let err = check(
        "cases-vigil",
        &outcome(Mode::Vigil, &other_offset, CASES_COM2),
        Some(&bare),
    );
    assert!(err.unwrap_err().contains("Vigil was given 0x100000000000"));

    let unconfirmed = CASES_COM2.replace("0x100000001234", "0x100000001235");
    let err = check(
        "cases-vigil",
        &outcome(Mode::Vigil, CASES_VIGIL, &unconfirmed),
        Some(&bare),
    );
    assert!(err.unwrap_err().contains("confirmed: 0x100000001235"));

    let skipped = CASES_VIGIL
        .replace(
            "PASS tsc-offset observed=0x100000001234 offset=0x100000000000",
            "SKIP tsc-offset no",
        )
        .replace(
            "3 passed, 0 failed, 0 skipped",
            "2 passed, 0 failed, 1 skipped",
        );
    let err = check(
        "cases-vigil",
        &outcome(Mode::Vigil, &skipped, CASES_COM2),
        Some(&bare),
    );
    assert!(err.unwrap_err().contains("did not pass under Vigil"));

    let bare_more = outcome(
        Mode::Bare,
        &CASES_BARE
            .replace("SKIP tsc-offset not under Vigil", "PASS xsave")
            .replace(
                "2 passed, 0 failed, 1 skipped",
                "3 passed, 0 failed, 0 skipped",
            ),
        "",
    );
    let err = check("cases-vigil", &ok, Some(&bare_more));
    assert_eq!(err.unwrap_err(), "passed bare but not under Vigil: xsave");
}

#[test]
fn cases_vigil_intercept_must_match_the_options() {
    let bare = outcome(Mode::Bare, CASES_BARE, "");
    let offset_only = CASES_VIGIL.replace(
        "offset=0x100000000000",
        "offset=0x100000000000 intercepted=no",
    );
    let trapped = CASES_VIGIL.replace(
        "offset=0x100000000000",
        "offset=0x100000000000 intercepted=yes",
    );

    // tsc=offset only: no exits to emulate, nothing to confirm.
    let o = outcome(Mode::Vigil, &offset_only, CASES_COM2_OFFSET);
    assert_eq!(check("cases-vigil", &o, Some(&bare)), Ok(()));
    let o = outcome(Mode::Vigil, &offset_only, CASES_COM2);
    assert!(check("cases-vigil", &o, Some(&bare))
        .unwrap_err()
        .contains("5 RDTSC/RDTSCP exits"));
    let o = outcome(Mode::Vigil, &trapped, CASES_COM2);
    assert!(check("cases-vigil", &o, Some(&bare))
        .unwrap_err()
        .contains("intercepted=yes"));

    // trap=rdtsc: the value must be confirmed and exits counted.
    let o = outcome(Mode::Vigil, &trapped, CASES_COM2);
    assert_eq!(check("cases-vigil-trap", &o, Some(&bare)), Ok(()));
    let unconfirmed = CASES_COM2.replace("confirm-tsc 0x100000001234 matches", "x");
    let o = outcome(Mode::Vigil, &trapped, &unconfirmed);
    assert!(check("cases-vigil-trap", &o, Some(&bare))
        .unwrap_err()
        .contains("confirmed: none"));
    let o = outcome(Mode::Vigil, &trapped, CASES_COM2_OFFSET);
    assert!(check("cases-vigil-trap", &o, Some(&bare)).is_err());
    let o = outcome(Mode::Vigil, &offset_only, CASES_COM2_OFFSET);
    assert!(check("cases-vigil-trap", &o, Some(&bare))
        .unwrap_err()
        .contains("intercepted=no"));
    assert!(traps_rdtsc("log=info trap=cpuid,rdtsc"));
    assert!(!traps_rdtsc("trap=rdtscp tsc=offset:0x1"));
}

#[test]
fn hostile_triple_fault_wants_a_clean_failure() {
    let com2 = "vigil: launching guest
        ==== exit report: the guest triple-faulted (shutdown)
        exit reason 2 (triple fault), qualification 0x0, instruction length 0
        ==== end of exit report
        run ended: failed: guest triple fault";
    let ok = outcome(Mode::Vigil, "hostile: triple fault now", com2);
    assert_eq!(check("hostile-triple-fault", &ok, None), Ok(()));

    let mut hung = outcome(Mode::Vigil, "", com2);
    hung.end = End::HungAfterLastLine;
    assert!(check("hostile-triple-fault", &hung, None)
        .unwrap_err()
        .contains("by itself"));

    let panicked = outcome(
        Mode::Vigil,
        "",
        &format!("{com2}\npanicked at vigil/src/x.rs"),
    );
    assert!(check("hostile-triple-fault", &panicked, None)
        .unwrap_err()
        .contains("panicked"));

    let other = com2.replace("2 (triple fault)", "48 (EPT violation)");
    let err = check(
        "hostile-triple-fault",
        &outcome(Mode::Vigil, "", &other),
        None,
    );
    assert!(err.unwrap_err().contains("reports: 48 (EPT violation)"));

    let ok_end = com2.replace("run ended: failed: guest triple fault", "run ended: ok");
    let err = check(
        "hostile-triple-fault",
        &outcome(Mode::Vigil, "", &ok_end),
        None,
    );
    assert!(err.unwrap_err().contains("expected `run ended: failed"));
}

#[test]
fn scenario_table_is_consistent() {
    let all = all();
    for s in &all {
        if let Some(b) = s.baseline {
            let pos = |n: &str| all.iter().position(|x| x.name == n).unwrap();
            assert!(
                pos(b) < pos(s.name),
                "{} must come after its baseline",
                s.name
            );
        }
        assert!(
            crate::build::GUEST_KIT_BINS.contains(&s.guest)
                || s.guest == crate::linux::GUEST
                || s.guest == crate::scenarios_guests::MEMTEST
                || s.guest == crate::scenarios_guests::LOWLOAD
        );
    }
    assert_eq!(
        tsc_offset_option(CASES_VIGIL_OPTIONS),
        Some(0x1000_0000_0000)
    );
}
