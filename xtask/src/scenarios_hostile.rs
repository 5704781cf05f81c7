//! The `hostile` guest bare and under Vigil. Its exit-handler cases (VMX and SVM instructions,
//! invalid XSETBV, absent MSRs, INVD, UD2) must pass both ways, since the guest must see exactly what a
//! processor without a hypervisor would do, and Vigil must end normally.
//!
//! Its platform attacks (docs/security.md: A20, SMM, DMA, resets and sleep, local APIC
//! relocation, PCI configuration, MSRs, port widths, NMIs) run bare — the reference, which must pass — and
//! under Vigil, where after every run the emulator-side oracle (oracle.rs) compares Vigil's code
//! and read-only data in the emulator's memory with its ELF and reads Bochs' log for resets and
//! SMM entries. The non-destructive attacks share one run; each attack that can end the machine
//! or take Vigil down has its own pair of scenarios.

use crate::outcome::Mode;
use crate::report::{self, Status};
use crate::scenarios::{Check, Scenario};

const SKYLAKE: &str = crate::bochs::DEFAULT_CPU_MODEL;

/// The exit-handler cases the first two scenarios run.
pub const HANDLER_CASES: &str = "case=vmx-insn,svm-insn,xsetbv-invalid,msr-absent,invd,ud2";

/// Whether a scenario gets the emulator-side oracle: the hostile guest under Vigil.
pub fn wants_oracle(s: &Scenario) -> bool {
    s.guest == "hostile" && s.mode == Mode::Vigil
}

/// Attacks with a scenario each, bare and under Vigil: (case, what ends a bare run).
const DESTRUCTIVE: &[(&str, &str, &str, BareEnd)] = &[
    (
        "hostile-apic-over-vigil-pages-bare",
        "hostile-apic-over-vigil-pages-vigil",
        "case=apic-over-vigil-pages",
        BareEnd::Normal,
    ),
    (
        "hostile-msr-misc-enable-xd-bare",
        "hostile-msr-misc-enable-xd-vigil",
        "case=msr-misc-enable-xd",
        BareEnd::Normal,
    ),
    (
        "hostile-msr-efer-reserved-bare",
        "hostile-msr-efer-reserved-vigil",
        "case=msr-efer-reserved",
        BareEnd::Normal,
    ),
    (
        "hostile-msr-pat-reserved-bare",
        "hostile-msr-pat-reserved-vigil",
        "case=msr-pat-reserved",
        BareEnd::Normal,
    ),
    (
        "hostile-nmi-around-exits-bare",
        "hostile-nmi-around-exits-vigil",
        "case=nmi-around-exits",
        BareEnd::Normal,
    ),
    (
        "hostile-reset-cf9-soft-bare",
        "hostile-reset-cf9-soft-vigil",
        "case=reset-cf9-soft",
        BareEnd::Escaped,
    ),
    (
        "hostile-reset-cf9-hard-bare",
        "hostile-reset-cf9-hard-vigil",
        "case=reset-cf9-hard",
        BareEnd::Escaped,
    ),
    (
        "hostile-reset-port92-bare",
        "hostile-reset-port92-vigil",
        "case=reset-port92",
        BareEnd::Escaped,
    ),
    (
        "hostile-reset-kbc-pulse-bare",
        "hostile-reset-kbc-pulse-vigil",
        "case=reset-kbc-pulse",
        BareEnd::Escaped,
    ),
    (
        "hostile-reset-kbc-output-port-bare",
        "hostile-reset-kbc-output-port-vigil",
        "case=reset-kbc-output-port",
        BareEnd::Escaped,
    ),
    (
        "hostile-sleep-s3-bare",
        "hostile-sleep-s3-vigil",
        "case=sleep-s3",
        BareEnd::Escaped,
    ),
    (
        "hostile-sleep-moved-pm-s5-bare",
        "hostile-sleep-moved-pm-s5-vigil",
        "case=sleep-moved-pm-s5",
        BareEnd::AcpiPowerOff,
    ),
];

/// What a bare run of a destructive attack shows: the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BareEnd {
    /// The case passes and the guest ends the run.
    Normal,
    /// The machine reset and the guest's code ran again: the warm-boot stub's line, or a whole
    /// new boot that found the guest's marker.
    Escaped,
    /// Bochs powered off through ACPI S5 (its log says so).
    AcpiPowerOff,
}

/// The line Vigil must print when a destructive attack under Vigil ends the run.
fn expected_reason(vigil_scenario: &str) -> Option<&'static str> {
    Some(match vigil_scenario {
        "hostile-reset-cf9-soft-vigil" => {
            "guest requested a reset through port 0xcf9 (0x4: soft reset)"
        }
        "hostile-reset-cf9-hard-vigil" => {
            "guest requested a reset through port 0xcf9 (0x6: hard reset)"
        }
        "hostile-reset-port92-vigil" => "guest requested a reset through port 0x92",
        "hostile-reset-kbc-pulse-vigil" => {
            "guest requested a reset through the keyboard controller (command 0xfe"
        }
        "hostile-reset-kbc-output-port-vigil" => {
            "guest requested a reset through the keyboard controller's output port"
        }
        "hostile-sleep-s3-vigil" => {
            "guest requested ACPI sleep (PM1a_CNT at port 0xb004 <- 0x2400: SLP_TYP 1)"
        }
        "hostile-sleep-moved-pm-s5-vigil" => {
            "guest requested ACPI sleep (PM1a_CNT at port 0x6004 <- 0x2000: SLP_TYP 0)"
        }
        _ => return None,
    })
}

/// What the warm-boot stub prints when guest code runs after a reset.
const ESCAPED: &str = "hostile: guest code runs after the reset, outside VMX";
const BOOTED_AGAIN: &str = "hostile: booted again after the reset";

pub fn all() -> Vec<Scenario> {
    let run = |name, mode, baseline| Scenario {
        name,
        guest: "hostile",
        guest_args: HANDLER_CASES,
        mode,
        vigil_options: "",
        cpu_model: SKYLAKE,
        timeout_secs: 90,
        baseline,
        check: check_hostile,
    };
    let mut all = vec![
        run("hostile-bare", Mode::Bare, None),
        run("hostile-vigil", Mode::Vigil, Some("hostile-bare")),
        Scenario {
            guest_args: "",
            timeout_secs: 180,
            check: check_platform,
            ..run("hostile-platform-bare", Mode::Bare, None)
        },
        Scenario {
            guest_args: "",
            timeout_secs: 180,
            check: check_platform,
            ..run(
                "hostile-platform-vigil",
                Mode::Vigil,
                Some("hostile-platform-bare"),
            )
        },
        Scenario {
            guest_args: "case=triple-fault",
            // #GP and #DF in the exception bitmap: Vigil sees every step of the escalation and
            // must combine them itself (double-fault rules) instead of re-delivering forever.
            vigil_options: "trap=exc:13,exc:8",
            check: check_escalation,
            ..run("hostile-triple-fault-trapped", Mode::Vigil, None)
        },
    ];
    for &(bare, vigil, args, _) in DESTRUCTIVE {
        all.push(Scenario {
            guest_args: args,
            check: check_destructive,
            ..run(bare, Mode::Bare, None)
        });
        all.push(Scenario {
            guest_args: args,
            check: check_destructive,
            ..run(vigil, Mode::Vigil, Some(bare))
        });
    }
    all
}

/// The emulator-side oracle's verdict on a run under Vigil (oracle.rs).
fn oracle(c: &Check) -> Result<(), String> {
    crate::oracle::verify(&c.outcome.dir)?.result()
}

/// Every platform attack passes; bare that is the reference, under Vigil it means no attack
/// reached Vigil. Under Vigil the same cases must have run, the port-width marker must not be in
/// Vigil's log, and the oracle must find Vigil's memory intact and the processor never out of
/// VMX.
fn check_platform(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    let cases = report::cases(o.capture.com1());
    let failed: Vec<String> = cases
        .iter()
        .filter(|l| l.status != Status::Pass)
        .map(|l| format!("{} {:?} {}", l.name, l.status, l.why))
        .collect();
    let mut problems = Vec::new();
    if let Err(e) = o.normal_end() {
        problems.push(e);
    }
    if !failed.is_empty() {
        problems.push(format!("attacks that did not pass: {}", failed.join(" | ")));
    }
    if cases.len() < 30 {
        problems.push(format!("only {} cases ran", cases.len()));
    }
    if o.mode == Mode::Vigil {
        if o.capture
            .com2()
            .iter()
            .any(|l| l.contains("HOSTILE-PORT-WIDTH"))
        {
            problems.push("the port-width attack's bytes reached Vigil's COM2".to_string());
        }
        if let Some(b) = c.baseline {
            let bare: Vec<String> = report::cases(b.capture.com1())
                .into_iter()
                .map(|l| l.name)
                .collect();
            let here: Vec<String> = cases.iter().map(|l| l.name.clone()).collect();
            if bare != here {
                problems.push(format!("bare ran {bare:?}, under Vigil {here:?}"));
            }
        }
        if let Err(e) = oracle(c) {
            problems.push(e);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n    "))
    }
}

/// One attack that may end the machine. Bare: the reference end of its kind. Under Vigil: Vigil
/// ends the run itself with a reason (`run ended: …`), normally if the attack was an
/// ordinary instruction, the guest's code never runs after a reset, and the oracle passes.
fn check_destructive(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    let &(_, _, _, bare_end) = DESTRUCTIVE
        .iter()
        .find(|d| {
            let name = crate::scenarios_amd::intel_name(c.scenario.name);
            d.0 == name || d.1 == name
        })
        .ok_or("not a destructive scenario")?;
    let com1 = o.capture.com1();
    let escaped = com1
        .iter()
        .any(|l| l.contains(ESCAPED) || l.contains(BOOTED_AGAIN));
    if o.mode == Mode::Bare {
        return match bare_end {
            BareEnd::Normal => check_case_passed(o),
            BareEnd::Escaped if escaped => Ok(()),
            BareEnd::Escaped => Err(format!(
                "bare: no `{ESCAPED}` nor `{BOOTED_AGAIN}` line: the reset did not hand control \
                 back ({})",
                o.end_phrase()
            )),
            BareEnd::AcpiPowerOff => {
                let log = std::fs::read(o.dir.join("bochs.log")).unwrap_or_default();
                if String::from_utf8_lossy(&log).contains("ACPI control: soft power off") {
                    Ok(())
                } else {
                    Err("bare: Bochs did not power off through ACPI".to_string())
                }
            }
        };
    }
    let mut problems = Vec::new();
    if escaped {
        problems.push("guest code ran after a reset, outside VMX".to_string());
    }
    let com2 = o.capture.com2();
    match (bare_end, o.capture.last_line(crate::stream::Port::Vigil)) {
        (BareEnd::Normal, _) => {
            if let Err(e) = check_case_passed(o) {
                problems.push(e);
            }
        }
        (_, Some("run ended: ok")) => {}
        (_, other) => problems.push(format!(
            "Vigil did not end the run as a normal end (last COM2 line {other:?}; {})",
            o.end_phrase()
        )),
    }
    // Why the run ended, in Vigil's own words, and its statistics.
    if let Some(reason) = expected_reason(c.scenario.name) {
        if !com2.iter().any(|l| l.contains(reason)) {
            problems.push(format!("Vigil's log does not say `{reason}`"));
        }
        if !com2.iter().any(|l| l.trim() == "exit statistics:") {
            problems.push("Vigil printed no exit statistics".to_string());
        }
    }
    if c.scenario.name == "hostile-nmi-around-exits-vigil" {
        // The path under test must have been taken: NMIs that arrived in VMX root.
        let taken = com2
            .iter()
            .find_map(|l| l.strip_prefix("NMIs that arrived while Vigil ran: "))
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.trim().parse::<u64>().ok());
        if taken.unwrap_or(0) == 0 {
            problems.push("no NMI arrived while Vigil ran: the test did not reach its path".into());
        }
    }
    if let Err(e) = oracle(c) {
        problems.push(e);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n    "))
    }
}

fn check_case_passed(o: &crate::outcome::Outcome) -> Result<(), String> {
    o.normal_end()?;
    let cases = report::cases(o.capture.com1());
    match cases.iter().find(|l| l.status != Status::Pass) {
        Some(f) => Err(format!(
            "case {} did not pass: {:?} {}",
            f.name, f.status, f.why
        )),
        None if cases.is_empty() => Err("no case ran".to_string()),
        None => Ok(()),
    }
}

/// int3 with an empty IDT: #GP (serial after the software exception), #GP while delivering it
/// (a double fault), #GP while delivering the #DF (shutdown). Three exception exits, then a clean
/// stop as a triple fault.
fn check_escalation(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    if !o.exited_by_itself() {
        return Err(format!(
            "{}: Bochs should have exited by itself",
            o.end_phrase()
        ));
    }
    let stats = report::exit_stats(&o.capture.com2())?;
    if stats.count("exception or NMI") != 3 {
        return Err(format!(
            "expected 3 exception exits (#GP, #GP during #GP, #GP during #DF), got {}",
            stats.count("exception or NMI")
        ));
    }
    match o.capture.last_line(crate::stream::Port::Vigil) {
        Some("run ended: failed: guest triple fault") => Ok(()),
        other => Err(format!(
            "expected `run ended: failed: guest triple fault` last, got {other:?}"
        )),
    }
}

fn check_hostile(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    o.normal_end()?;
    if o.mode == Mode::Vigil {
        oracle(c)?;
    }
    let cases = report::cases(o.capture.com1());
    if let Some(f) = cases.iter().find(|l| l.status != Status::Pass) {
        return Err(format!(
            "case {} did not pass: {:?} {}",
            f.name, f.status, f.why
        ));
    }
    let passed: Vec<&str> = cases.iter().map(|l| l.name.as_str()).collect();
    for expected in [
        "vmx-insn",
        "svm-insn",
        "xsetbv-invalid",
        "msr-absent",
        "invd",
        "ud2",
    ] {
        if !passed.contains(&expected) {
            return Err(format!("case {expected} did not run (ran: {passed:?})"));
        }
    }
    if let Some(b) = c.baseline {
        let bare: Vec<String> = report::cases(b.capture.com1())
            .into_iter()
            .map(|l| l.name)
            .collect();
        if bare.iter().map(String::as_str).ne(passed.iter().copied()) {
            return Err(format!("bare ran {bare:?}, under Vigil {passed:?}"));
        }
    }
    Ok(())
}
