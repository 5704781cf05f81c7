//! The `hostile` guest's default cases (VMX instructions, invalid XSETBV, absent MSRs, INVD,
//! UD2) bare and under Vigil: each must pass both ways, since the guest must see exactly what a
//! processor without a hypervisor would do, and Vigil must end normally.

use crate::outcome::Mode;
use crate::report::{self, Status};
use crate::scenarios::{Check, Scenario};

const SKYLAKE: &str = crate::bochs::DEFAULT_CPU_MODEL;

pub fn all() -> Vec<Scenario> {
    let run = |name, mode, baseline| Scenario {
        name,
        guest: "hostile",
        guest_args: "",
        mode,
        vigil_options: "",
        cpu_model: SKYLAKE,
        timeout_secs: 90,
        baseline,
        check: check_hostile,
    };
    vec![
        run("hostile-bare", Mode::Bare, None),
        run("hostile-vigil", Mode::Vigil, Some("hostile-bare")),
        Scenario {
            guest_args: "case=triple-fault",
            // #GP and #DF in the exception bitmap: Vigil sees every step of the escalation and
            // must combine them itself (double-fault rules) instead of re-delivering forever.
            vigil_options: "trap=exc:13,exc:8",
            check: check_escalation,
            ..run("hostile-triple-fault-trapped", Mode::Vigil, None)
        },
    ]
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
    let cases = report::cases(o.capture.com1());
    if let Some(f) = cases.iter().find(|l| l.status != Status::Pass) {
        return Err(format!(
            "case {} did not pass: {:?} {}",
            f.name, f.status, f.why
        ));
    }
    let passed: Vec<&str> = cases.iter().map(|l| l.name.as_str()).collect();
    for expected in ["vmx-insn", "xsetbv-invalid", "msr-absent", "invd", "ud2"] {
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
