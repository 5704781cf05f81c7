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
    let mut v = vec![
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
        // `tsc=hide` leaves RDTSC native: every feature as bare, WAITPKG included.
        Scenario {
            name: "features-sapphire-rapids-hide",
            guest: "cases",
            guest_args: FEATURE_CASES,
            mode: Mode::Vigil,
            vigil_options: "tsc=hide",
            cpu_model: SAPPHIRE_RAPIDS,
            timeout_secs: 120,
            baseline: Some("features-sapphire-rapids-bare"),
            check: same_features,
        },
        // RDTSC exiting would make UMWAIT and TPAUSE exit: Vigil hides WAITPKG instead.
        Scenario {
            name: "features-sapphire-rapids-trap-rdtsc",
            guest: "cases",
            guest_args: FEATURE_CASES,
            mode: Mode::Vigil,
            vigil_options: "trap=rdtsc",
            cpu_model: SAPPHIRE_RAPIDS,
            timeout_secs: 120,
            baseline: Some("features-sapphire-rapids-bare"),
            check: waitpkg_hidden,
        },
        // Linux on the processor without unrestricted guest: its 32-bit entry runs with paging
        // off on Vigil's identity tables until the kernel turns on its own (long mode).
        Scenario {
            name: "linux-lynnfield-bare",
            guest: crate::linux::GUEST,
            guest_args: "",
            mode: Mode::Bare,
            vigil_options: "",
            cpu_model: LYNNFIELD,
            timeout_secs: 600,
            baseline: None,
            check: crate::linux_checks::check_bare,
        },
        Scenario {
            name: "linux-lynnfield-vigil",
            guest: crate::linux::GUEST,
            guest_args: "",
            mode: Mode::Vigil,
            vigil_options: "",
            cpu_model: LYNNFIELD,
            timeout_secs: 600,
            baseline: Some("linux-lynnfield-bare"),
            check: linux_without_unrestricted_guest,
        },
        // A round trip through real mode: bare and under Vigil alike with unrestricted guest;
        // without it Vigil cannot run real mode and stops with a report.
        Scenario {
            name: "real-mode-bare",
            guest: "cases",
            guest_args: "case=real-mode",
            mode: Mode::Bare,
            vigil_options: "",
            cpu_model: crate::bochs::DEFAULT_CPU_MODEL,
            timeout_secs: 90,
            baseline: None,
            check: crate::scenarios::cases_bare,
        },
        Scenario {
            name: "real-mode-vigil",
            guest: "cases",
            guest_args: "case=real-mode",
            mode: Mode::Vigil,
            vigil_options: "",
            cpu_model: crate::bochs::DEFAULT_CPU_MODEL,
            timeout_secs: 90,
            baseline: Some("real-mode-bare"),
            check: real_mode_as_bare,
        },
        Scenario {
            name: "real-mode-lynnfield",
            guest: "cases",
            guest_args: "case=real-mode",
            mode: Mode::Vigil,
            vigil_options: "",
            cpu_model: LYNNFIELD,
            timeout_secs: 90,
            baseline: None,
            check: real_mode_refused,
        },
    ];
    v.extend(models());
    v
}

/// Real mode and back under Vigil: the guest saw what it saw bare.
fn real_mode_as_bare(c: &Check) -> Result<(), String> {
    crate::scenarios::cases_bare(c)?;
    let bare = c.baseline.ok_or("the bare run is missing")?;
    let line = |lines: Vec<&str>| {
        report::cases(lines)
            .into_iter()
            .find(|l| l.name == "real-mode")
            .map(|l| (l.status, l.fields))
    };
    let (mine, theirs) = (line(c.outcome.capture.com1()), line(bare.capture.com1()));
    match (&mine, &theirs) {
        (Some((Status::Pass, a)), Some((Status::Pass, b))) if a == b => Ok(()),
        _ => Err(format!("real-mode under Vigil {mine:?}, bare {theirs:?}")),
    }
}

/// Without unrestricted guest: a clean stop, with an exit report, when the guest clears CR0.PE.
fn real_mode_refused(c: &Check) -> Result<(), String> {
    const LAST: &str = "run ended: failed: the guest left protected mode: real mode needs \
                        unrestricted guest, which this processor lacks";
    let o = c.outcome;
    if !o.exited_by_itself() {
        return Err(format!(
            "{}: Bochs should have exited by itself",
            o.end_phrase()
        ));
    }
    match o.capture.last_line(Port::Vigil) {
        Some(l) if l == LAST => {}
        other => return Err(format!("expected `{LAST}` last, got {other:?}")),
    }
    if report::exit_reports(&o.capture.com2()).is_empty() {
        return Err("no exit report before the stop".into());
    }
    Ok(())
}

/// The model without unrestricted guest.
const LYNNFIELD: &str = "corei5_lynnfield_750";

fn linux_without_unrestricted_guest(c: &Check) -> Result<(), String> {
    crate::linux_checks::check_vigil(c)?;
    if !c
        .outcome
        .capture
        .port(Port::Vigil)
        .any(|l| l.starts_with("no unrestricted guest: the guest runs on identity page tables"))
    {
        return Err("Vigil did not say it runs the guest on identity page tables".into());
    }
    Ok(())
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
            "with RDTSC exiting the guest should see everything but WAITPKG: expected {expected:?}, got {vigil:?}"
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

/// What Vigil does on each CPU model of the reference Bochs (`bochs --help cpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// VMX with EPT, or SVM with nested paging: the demo and the cases run (bare and under
    /// Vigil).
    Runs,
    /// Vigil refuses the processor with this closing line.
    Refused(&'static str),
    /// GRUB stops before Vigil runs (no CR4 on a 386 or 486): nothing on COM2.
    NoBootLoader,
}

const NO_LONG_MODE: &str = "run ended: failed: the processor has no long mode";
const NO_VMX: &str = "run ended: failed: this processor has no VMX (CPUID.1:ECX.VMX = 0)";
const NO_SVM: &str = "run ended: failed: this processor has no SVM (CPUID Fn8000_0001 ECX.SVM = 0)";
const NO_NPT: &str = "run ended: failed: this processor's SVM has no nested paging (CPUID \
                      Fn8000_000A EDX.NP = 0), which Vigil requires to keep its memory from the guest";

/// Every model Bochs 3.0 lists, and what must happen on it. `models_match_the_emulator` checks
/// that the list is the emulator's, so a model Bochs adds cannot go untried.
pub const MODELS: &[(&str, Expect)] = &[
    ("i386", Expect::NoBootLoader),
    ("i486dx4", Expect::NoBootLoader),
    ("pentium", Expect::Refused(NO_LONG_MODE)),
    ("pentium_mmx", Expect::Refused(NO_LONG_MODE)),
    ("amd_k6_2_chomper", Expect::Refused(NO_LONG_MODE)),
    ("athlon_xp", Expect::Refused(NO_LONG_MODE)),
    ("p2_klamath", Expect::Refused(NO_LONG_MODE)),
    ("p3_katmai", Expect::Refused(NO_LONG_MODE)),
    ("p4_willamette", Expect::Refused(NO_LONG_MODE)),
    // VMX, but no long mode: the 32-bit entry says so.
    ("core_duo_t2400_yonah", Expect::Refused(NO_LONG_MODE)),
    ("atom_n270", Expect::Refused(NO_LONG_MODE)),
    ("p4_prescott_celeron_336", Expect::Refused(NO_VMX)),
    // AMD processors without SVM: the SVM backend says so.
    ("athlon64_clawhammer", Expect::Refused(NO_SVM)),
    ("athlon64_venice", Expect::Refused(NO_SVM)),
    // SVM without nested paging.
    ("turion64_tyler", Expect::Refused(NO_NPT)),
    // SVM with nested paging: the SVM backend runs (scenarios_amd.rs has more on `ryzen`).
    ("phenom_8650_toliman", Expect::Runs),
    // VMX without EPT.
    (
        "core2_penryn_t9600",
        Expect::Refused("run ended: failed: this processor lacks EPT, which Vigil requires"),
    ),
    // No unrestricted guest: the guest runs on identity tables while its paging is off.
    ("corei5_lynnfield_750", Expect::Runs),
    ("corei5_arrandale_m520", Expect::Runs),
    ("corei7_sandy_bridge_2600k", Expect::Runs),
    ("zambezi", Expect::Runs),
    ("trinity_apu", Expect::Runs),
    ("ryzen", Expect::Runs),
    ("corei7_ivy_bridge_3770k", Expect::Runs),
    ("corei7_haswell_4770", Expect::Runs),
    ("broadwell_ult", Expect::Runs),
    ("corei7_skylake_x", Expect::Runs),
    ("corei3_cnl", Expect::Runs),
    ("corei7_icelake_u", Expect::Runs),
    ("tigerlake", Expect::Runs),
    ("sapphire_rapids", Expect::Runs),
    ("arrow_lake", Expect::Runs),
];

/// The scenarios of every model: the demo under Vigil, and the cases bare and under Vigil, on
/// each model Vigil runs on; the refusal on the others.
pub fn models() -> Vec<Scenario> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut out = Vec::new();
    for &(model, expect) in MODELS {
        let base = |name: String, guest, mode, options, check, baseline| Scenario {
            name: leak(name),
            guest,
            guest_args: "",
            mode,
            vigil_options: options,
            cpu_model: model,
            timeout_secs: 180,
            baseline,
            check,
        };
        match expect {
            Expect::Runs => {
                out.push(base(
                    format!("models-{model}-demo"),
                    "demo",
                    Mode::Vigil,
                    crate::cli::DEMO_VIGIL_OPTIONS,
                    demo_on_model,
                    None,
                ));
                let bare = leak(format!("models-{model}-cases-bare"));
                out.push(base(
                    bare.to_string(),
                    "cases",
                    Mode::Bare,
                    "",
                    cases_bare_on_model,
                    None,
                ));
                out.push(base(
                    format!("models-{model}-cases"),
                    "cases",
                    Mode::Vigil,
                    "tsc=offset:0x100000000000 hypercall=on log=warn",
                    cases_on_model,
                    Some(bare),
                ));
            }
            Expect::Refused(_) | Expect::NoBootLoader => out.push(base(
                format!("models-{model}-refused"),
                "demo",
                Mode::Vigil,
                "",
                refused,
                None,
            )),
        }
    }
    out
}

fn expectation(c: &Check) -> Result<Expect, String> {
    models_match_the_emulator()?;
    MODELS
        .iter()
        .find(|(m, _)| *m == c.scenario.cpu_model)
        .map(|(_, e)| *e)
        .ok_or_else(|| format!("{} is not in the models table", c.scenario.cpu_model))
}

fn demo_on_model(c: &Check) -> Result<(), String> {
    expectation(c)?;
    crate::scenarios::demo_vigil(c)
}

fn cases_bare_on_model(c: &Check) -> Result<(), String> {
    expectation(c)?;
    crate::scenarios::cases_bare(c)
}

fn cases_on_model(c: &Check) -> Result<(), String> {
    expectation(c)?;
    if crate::scenarios_amd::decodes_lengths(c.outcome) {
        // An SVM processor without NRIP save (`phenom_8650_toliman`).
        return crate::scenarios_amd::cases_decoded(c);
    }
    crate::scenarios::cases_vigil(c)
}

/// The model is refused with its message as Vigil's last line (or, without a boot loader,
/// nothing at all on either port), and Bochs ended by itself.
fn refused(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    if !o.exited_by_itself() {
        return Err(format!(
            "{}: Bochs should have exited by itself",
            o.end_phrase()
        ));
    }
    match expectation(c)? {
        Expect::Refused(line) => match o.capture.last_line(Port::Vigil) {
            Some(last) if last == line => Ok(()),
            other => Err(format!("expected `{line}` last on COM2, got {other:?}")),
        },
        Expect::NoBootLoader => {
            if o.capture.lines.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "GRUB was not expected to run here, yet the serial ports printed {:?}",
                    o.capture.lines.first()
                ))
            }
        }
        Expect::Runs => Err("a model Vigil runs on has no refusal scenario".into()),
    }
}

/// The models table is the emulator's list (`bochs --help cpu`): checked once per run of the
/// suite.
fn models_match_the_emulator() -> Result<(), String> {
    static LISTED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LISTED
        .get_or_init(|| {
            let e = crate::emulator::current();
            let out = std::process::Command::new(&e.program)
                .args(["--help", "cpu"])
                .output()
                .map_err(|err| format!("{} --help cpu: {err}", e.program.display()))?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let mut listed: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && l.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
                .collect();
            let mut ours: Vec<&str> = MODELS.iter().map(|(m, _)| *m).collect();
            listed.sort_unstable();
            ours.sort_unstable();
            if listed == ours {
                Ok(())
            } else {
                Err(format!(
                    "the models table is not the emulator's list: Bochs lists {listed:?}"
                ))
            }
        })
        .clone()
}
