//! Transparency under every trap at once: the `cases` guest with each trappable event exiting
//! (including COM1, so every byte the guest prints goes through Vigil, and #GP/#UD/#BP in the
//! exception bitmap) must pass exactly the cases it passes bare, and each requested kind of exit
//! must actually have happened. The `hostile` guest's faults (UD2, #GP from absent MSRs and
//! invalid XSETBV) go through the exception bitmap and must still reach the guest's handlers.

use crate::outcome::Mode;
use crate::report::{self, Status};
use crate::scenarios::{Check, Scenario};

const EVERYTHING: &str = "trap=cpuid,rdtsc,hlt,invlpg,rdpmc,cr3,movdr,cr0:0x10000,cr4:0x80,\
exc:3,exc:6,exc:13,io:0x3f8-0x3ff,io:0x80,msr:0x10,msr:0x1b log=warn hypercall=on";

/// Cases whose `key=value` report must be the same bare and under every trap.
const SAME_FIELDS: &[&str] = &["io-string-devices", "cpuid-features", "task-switch"];

pub fn all() -> Vec<Scenario> {
    let run = |name, guest, baseline, check| Scenario {
        name,
        guest,
        // The hostile guest's exit-handler cases, as `hostile-bare` runs them.
        guest_args: if guest == "hostile" {
            crate::scenarios_hostile::HANDLER_CASES
        } else {
            ""
        },
        mode: Mode::Vigil,
        vigil_options: EVERYTHING,
        cpu_model: crate::bochs::DEFAULT_CPU_MODEL,
        timeout_secs: 300,
        baseline: Some(baseline),
        check,
    };
    vec![
        run("cases-trap-everything", "cases", "cases-bare", check_cases),
        run(
            "hostile-trap-everything",
            "hostile",
            "hostile-bare",
            check_hostile,
        ),
    ]
}

fn check_cases(c: &Check) -> Result<(), String> {
    same_cases(
        c,
        &[
            "RDTSC",
            "HLT",
            "I/O instruction",
            "RDMSR",
            "control-register access",
        ],
    )
}

fn check_hostile(c: &Check) -> Result<(), String> {
    same_cases(c, &["exception or NMI"])
}

fn same_cases(c: &Check, reasons: &[&str]) -> Result<(), String> {
    let o = c.outcome;
    o.normal_end()?;
    let under = report::cases(o.capture.com1());
    if let Some(f) = under.iter().find(|l| l.status == Status::Fail) {
        return Err(format!(
            "case {} failed under every trap: {}",
            f.name, f.why
        ));
    }
    let b = c.baseline.ok_or("the bare baseline did not run")?;
    for bare in report::cases(b.capture.com1())
        .iter()
        .filter(|l| l.status == Status::Pass)
    {
        if !under
            .iter()
            .any(|l| l.name == bare.name && l.status == Status::Pass)
        {
            return Err(format!(
                "case {} passes bare but not under every trap",
                bare.name
            ));
        }
    }
    // Cases whose report is what the device did: it must be what it did bare.
    for name in SAME_FIELDS {
        let fields = |lines: Vec<&str>| {
            report::cases(lines)
                .into_iter()
                .find(|l| l.name == *name)
                .map(|l| l.fields)
        };
        let (bare, trapped) = (fields(b.capture.com1()), fields(o.capture.com1()));
        if bare.is_some() && bare != trapped {
            return Err(format!(
                "case {name} reports {trapped:?} under every trap, {bare:?} bare"
            ));
        }
    }
    let stats = report::exit_stats(&o.capture.com2())?;
    for &reason in reasons {
        if stats.count(reason) == 0 {
            return Err(format!("no {reason} exits although they were trapped"));
        }
    }
    Ok(())
}
