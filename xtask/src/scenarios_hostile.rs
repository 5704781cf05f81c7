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
    ]
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
