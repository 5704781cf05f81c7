//! Scenarios with several processors. Each names its processor count (`-2cpu-`, `-4cpu-`);
//! every other scenario gets the suite's count (`cargo xtask test --cpus N`, default 1).
//!
//! - `smp-*`: the guest kit's `smp` guest starts the other processors itself (INIT and start-up
//!   IPIs, by shorthand and by APIC ID), stops and restarts them, plays IPI ping-pong and checks
//!   the TSC across all of them; bare and under Vigil, and under the TSC policies that must
//!   stay coherent across processors (offset with RDTSC trapped, scale, and `hide`, which hides
//!   each vCPU's exits under one rule for all: `smp-2cpu-hide`, `smp-4cpu-hide`).
//! - `linux-2cpu-*`, `linux-4cpu-*`: Linux on every processor (`nproc`, "Brought up … N CPUs"),
//!   with no complaint about the TSC between them. `linux-2cpu-hide` boots under `tsc=hide`
//!   with the kernel's TSC checks on (`linux_checks::WATCHDOG_ARGS`: without TSC_ADJUST Linux
//!   runs its TSC warp test at each processor's bring-up and keeps the clocksource watchdog on
//!   the TSC), against `linux-2cpu-watchdog-bare`.
//! - `smp-2cpu-frozen-refused`: `tsc=frozen` is refused with more than one processor, with
//!   the reason.
//! - `cases-2cpu-*`: the transparency suite with a second processor waiting for a start-up
//!   IPI the guest never sends.
//!
//! Bochs runs several processors several times slower: the Linux boots here cost about
//! 20-100 s (2) and 85-280 s (4) of wall time each, the higher figures on a busy machine.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::emulator::Feature;
use crate::outcome::{Mode, Outcome};
use crate::report::{self, Status};
use crate::scenarios::{Check, Scenario};
use crate::stream::Port;

/// The processors of scenarios that do not name their own (`cargo xtask test --cpus N`).
static DEFAULT_CPUS: AtomicU32 = AtomicU32::new(crate::bochs::DEFAULT_CPUS);

pub fn set_default_cpus(n: u32) {
    DEFAULT_CPUS.store(n, Ordering::Relaxed);
}

/// The processors a scenario runs with: [`cpus`], except that the time scenarios of
/// `tsc=hide` and `tsc=frozen` run on one processor unless their name asks for more: `frozen` is
/// refused with several, and `hide`'s timing cases hold each exit to its bare cost, which with
/// several processors shows whenever another vCPU runs (docs/architecture.md, "Virtual time").
pub fn cpus_for(name: &str, vigil_options: &str) -> u32 {
    cpus_given(name, vigil_options, DEFAULT_CPUS.load(Ordering::Relaxed))
}

fn cpus_given(name: &str, vigil_options: &str, default: u32) -> u32 {
    let named = named_cpus(name).is_some();
    // SVM runs the guest on one processor (scenarios_amd.rs).
    let one_only = vigil_options
        .split_whitespace()
        .any(|w| w == "tsc=hide" || w == "tsc=frozen")
        || crate::scenarios_amd::one_processor(name);
    if one_only && !named {
        1
    } else {
        named_cpus(name).unwrap_or(default)
    }
}

/// `N` from a `-Ncpu` part of a scenario's name.
fn named_cpus(name: &str) -> Option<u32> {
    name.split('-')
        .find_map(|part| part.strip_suffix("cpu")?.parse().ok())
        .filter(|n| (1..=crate::bochs::MAX_CPUS).contains(n))
}

/// The processors of scenario `name`: `N` from a `-Ncpu` part of its name, else the suite's.
pub fn cpus(name: &str) -> u32 {
    named_cpus(name).unwrap_or_else(|| DEFAULT_CPUS.load(Ordering::Relaxed))
}

/// Several processors under Vigil need a Bochs whose processors can wait for a start-up IPI in
/// VMX non-root operation; bare runs need nothing.
pub fn needs(name: &str) -> &'static [Feature] {
    // A refused run ends before any processor waits.
    if cpus(name) > 1 && !name.ends_with("-bare") && !name.ends_with("-refused") {
        &[Feature::SmpUnderVmx]
    } else {
        &[]
    }
}

const SKYLAKE: &str = crate::bochs::DEFAULT_CPU_MODEL;
/// The 4-processor run under Vigil leaves out `start-broadcast`: in Bochs 3.0 a start-up IPI
/// by shorthand reaches only the first processor waiting in VMX (docs/platform.md), so with
/// three waiting it starts one per SIPI. The 2-processor runs have it.
const FOUR_UNDER_VIGIL: &str = "case=start-directed,init-restart,ipi-ping-pong,tsc-sync";
/// `linux_checks::WATCHDOG_ARGS` with the clocksource watchdog off (`tsc=nowatchdog`): the
/// kernel still runs its TSC warp test when it brings up the second processor.
const UNBOUNDED_ARGS: &str = "clearcpuid=289 tsc_early_khz=50000 tsc=nowatchdog vigil.wait=4";
const CASES_VIGIL_OPTIONS: &str = "tsc=offset:0x100000000000 hypercall=on";

#[allow(clippy::too_many_arguments)]
fn scenario(
    name: &'static str,
    guest: &'static str,
    guest_args: &'static str,
    mode: Mode,
    vigil_options: &'static str,
    timeout_secs: u64,
    baseline: Option<&'static str>,
    check: fn(&Check) -> Result<(), String>,
) -> Scenario {
    Scenario {
        name,
        guest,
        guest_args,
        mode,
        vigil_options,
        cpu_model: SKYLAKE,
        timeout_secs,
        baseline,
        check,
    }
}

pub fn all() -> Vec<Scenario> {
    use Mode::{Bare, Vigil};
    let linux = crate::linux::GUEST;
    vec![
        scenario("smp-2cpu-bare", "smp", "", Bare, "", 120, None, smp_bare),
        scenario(
            "smp-2cpu-vigil",
            "smp",
            "",
            Vigil,
            "",
            120,
            Some("smp-2cpu-bare"),
            smp_vigil,
        ),
        scenario(
            "smp-2cpu-offset",
            "smp",
            "",
            Vigil,
            "trap=rdtsc,rdtscp tsc=offset:0x100000000000",
            120,
            Some("smp-2cpu-bare"),
            smp_vigil,
        ),
        scenario(
            "smp-2cpu-scale",
            "smp",
            "",
            Vigil,
            "tsc=scale:3/2",
            120,
            Some("smp-2cpu-bare"),
            smp_vigil,
        ),
        scenario("smp-4cpu-bare", "smp", "", Bare, "", 180, None, smp_bare),
        scenario(
            "smp-4cpu-vigil",
            "smp",
            FOUR_UNDER_VIGIL,
            Vigil,
            "",
            180,
            Some("smp-4cpu-bare"),
            smp_vigil,
        ),
        // gdb on two vCPUs (gdb_smp.rs): frozen time is tsc=offset's on several processors.
        scenario(
            crate::gdb_smp::SCENARIO,
            "smp",
            "case=debug",
            Vigil,
            "gdb=com2 gdb-wait=on tsc=offset:0",
            240,
            None,
            crate::gdb_smp::check,
        ),
        scenario(
            "smp-2cpu-hide",
            "smp",
            "",
            Vigil,
            "tsc=hide",
            120,
            Some("smp-2cpu-bare"),
            smp_hide,
        ),
        scenario(
            "smp-4cpu-hide",
            "smp",
            FOUR_UNDER_VIGIL,
            Vigil,
            "tsc=hide",
            180,
            Some("smp-4cpu-bare"),
            smp_hide,
        ),
        scenario(
            "smp-2cpu-frozen-refused",
            "smp",
            "",
            Vigil,
            "tsc=frozen",
            120,
            None,
            frozen_refused,
        ),
        scenario(
            "cases-2cpu-bare",
            "cases",
            "",
            Bare,
            "",
            300,
            None,
            crate::scenarios::cases_bare,
        ),
        scenario(
            "cases-2cpu-vigil",
            "cases",
            "",
            Vigil,
            CASES_VIGIL_OPTIONS,
            300,
            Some("cases-2cpu-bare"),
            crate::scenarios::cases_vigil,
        ),
        scenario(
            "linux-2cpu-bare",
            linux,
            "",
            Bare,
            "",
            900,
            None,
            crate::linux_checks::check_bare,
        ),
        scenario(
            "linux-2cpu-vigil",
            linux,
            "",
            Vigil,
            "",
            900,
            Some("linux-2cpu-bare"),
            linux_vigil,
        ),
        scenario(
            "linux-2cpu-watchdog-bare",
            linux,
            crate::linux_checks::WATCHDOG_ARGS,
            Bare,
            "",
            900,
            None,
            crate::linux_checks::check_bare,
        ),
        scenario(
            "linux-2cpu-hide",
            linux,
            crate::linux_checks::WATCHDOG_ARGS,
            Vigil,
            "tsc=hide",
            900,
            Some("linux-2cpu-watchdog-bare"),
            linux_hide,
        ),
        // Unbounded, the boot processor's lag grows far beyond the bound before it starts the
        // second: a second clock started on its own would be a million ticks ahead, which the
        // kernel's warp test sees (the bounded run's two clocks both reach the bound). The
        // watchdog is off: a TSC that hides every exit falls behind the other clocks during a
        // storm of exits, which is that mode's choice ("Virtual time").
        scenario(
            "linux-2cpu-hide-unbounded",
            linux,
            UNBOUNDED_ARGS,
            Vigil,
            "tsc=hide:unbounded",
            900,
            Some("linux-2cpu-watchdog-bare"),
            linux_hide_unbounded,
        ),
        scenario(
            "linux-4cpu-bare",
            linux,
            "",
            Bare,
            "",
            1200,
            None,
            crate::linux_checks::check_bare,
        ),
        scenario(
            "linux-4cpu-vigil",
            linux,
            "",
            Vigil,
            "",
            1200,
            Some("linux-4cpu-bare"),
            linux_vigil,
        ),
    ]
}

/// One row of Vigil's `exit statistics by vCPU:` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuRow {
    pub vcpu: u32,
    pub count: u64,
}

/// The per-vCPU table (a row per vCPU, then the total row's count).
pub fn vcpu_table(com2: &[&str]) -> Result<(Vec<VcpuRow>, u64), String> {
    let start = com2
        .iter()
        .rposition(|l| l.trim() == "exit statistics by vCPU:")
        .ok_or("no `exit statistics by vCPU:` table")?;
    let mut rows = Vec::new();
    for line in com2[start + 2..].iter() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(first), Some(count)) = (cols.first(), cols.get(1)) else {
            break;
        };
        let count = report::parse_u64(count).ok_or(format!("cannot read {line:?}"))?;
        if *first == "total" {
            return Ok((rows, count));
        }
        let vcpu = report::parse_u64(first).ok_or(format!("cannot read {line:?}"))? as u32;
        rows.push(VcpuRow { vcpu, count });
    }
    Err("the per-vCPU table has no total row".into())
}

/// The guest's case lines that passed, by name.
fn passed(o: &Outcome) -> BTreeSet<String> {
    report::cases(o.capture.port(Port::Guest))
        .into_iter()
        .filter(|l| l.status == Status::Pass)
        .map(|l| l.name)
        .collect()
}

/// Both modes: a normal end, every case the run chose passed (none skipped: there is more than
/// one processor), each saw every other processor (`aps=`), and the TSC check found no warp.
fn smp_common(c: &Check) -> Result<(), String> {
    c.outcome.normal_end()?;
    let cpus = cpus(c.scenario.name) as u64;
    let cases = report::cases(c.outcome.capture.port(Port::Guest));
    if cases.is_empty() {
        return Err("the guest reported no case".into());
    }
    for case in &cases {
        if case.status != Status::Pass {
            return Err(format!("{:?} {} {}", case.status, case.name, case.why));
        }
        if let Some(aps) = case.field("aps") {
            if report::parse_u64(aps) != Some(cpus - 1) {
                return Err(format!(
                    "{}: aps={aps}, the machine has {cpus} processors",
                    case.name
                ));
            }
        }
    }
    let tsc = cases
        .iter()
        .find(|l| l.name == "tsc-sync")
        .ok_or("no tsc-sync case")?;
    if tsc.field("warps") != Some("0")
        || tsc.field("cpus").and_then(report::parse_u64) != Some(cpus)
    {
        return Err(format!("tsc-sync: {:?}", tsc.fields));
    }
    Ok(())
}

fn smp_bare(c: &Check) -> Result<(), String> {
    smp_common(c)?;
    if let Some(line) = c.outcome.capture.com2().first() {
        return Err(format!("COM2 should be silent bare, it printed {line:?}"));
    }
    Ok(())
}

/// Under Vigil: [`smp_common`]; every case passed bare too; Vigil saw the guest's start-up
/// IPIs on the processors it started, and its statistics have a row per vCPU that adds up.
fn smp_vigil(c: &Check) -> Result<(), String> {
    smp_common(c)?;
    let cpus = cpus(c.scenario.name);
    let com2 = c.outcome.capture.com2();
    let stats = report::exit_stats(&com2)?;
    let sipis = stats.count("start-up IPI");
    if sipis < (cpus - 1) as u64 {
        return Err(format!(
            "{sipis} start-up IPI exits for {} application processors",
            cpus - 1
        ));
    }
    let (rows, total) = vcpu_table(&com2)?;
    let ids: Vec<u32> = rows.iter().map(|r| r.vcpu).collect();
    if ids != (0..cpus).collect::<Vec<_>>() {
        return Err(format!("the per-vCPU table has rows {ids:?}"));
    }
    let sum: u64 = rows.iter().map(|r| r.count).sum();
    if sum != total || total != stats.total.count {
        return Err(format!(
            "per-vCPU rows add up to {sum}; their total says {total}, the reason table {}",
            stats.total.count
        ));
    }
    if rows.iter().any(|r| r.count == 0) {
        return Err(format!("a vCPU took no exit at all: {rows:?}"));
    }
    let bare = c
        .baseline
        .ok_or("the bare outcome this check compares with is missing")?;
    let lost: Vec<String> = passed(c.outcome)
        .difference(&passed(bare))
        .cloned()
        .collect();
    if !lost.is_empty() {
        return Err(format!(
            "passed under Vigil but not bare: {}",
            lost.join(", ")
        ));
    }
    Ok(())
}

/// What Vigil hid under `tsc=hide` on several vCPUs, from its closing lines: the ticks the
/// last vCPU's TSC lost in all, and the machine's entries: those that hid their whole exit,
/// those that hid less for the bound or a repayment step, and those that hid less because
/// another vCPU's clock ran on (and the ticks that showed for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hidden {
    pub ticks: u64,
    pub whole: u64,
    pub bounded: u64,
    pub others: u64,
    pub others_ticks: u64,
}

/// [`Hidden`] from COM2's `virtual time: …` and `virtual time on several vCPUs: …` lines.
pub fn hidden(com2: &[&str]) -> Result<Hidden, String> {
    let word = |line: &str, after: &str| -> Option<u64> {
        let rest = line.split(after).nth(1)?;
        report::parse_u64(
            rest.split_whitespace()
                .next()?
                .trim_matches(|c| c == '(' || c == ','),
        )
    };
    let total = com2
        .iter()
        .find(|l| l.starts_with("virtual time: ") && l.contains("hidden from the TSC"))
        .ok_or("no `virtual time: N ticks hidden from the TSC` line")?;
    let several = com2
        .iter()
        .find(|l| l.starts_with("virtual time on several vCPUs: "))
        .ok_or("no `virtual time on several vCPUs:` line")?;
    let bad = |l: &str| format!("cannot read {l:?}");
    Ok(Hidden {
        ticks: word(total, "virtual time: ").ok_or_else(|| bad(total))?,
        whole: word(several, "several vCPUs: ").ok_or_else(|| bad(several))?,
        bounded: word(several, "whole exit, ").ok_or_else(|| bad(several))?,
        others: word(several, "repayment step, ").ok_or_else(|| bad(several))?,
        others_ticks: word(several, "vCPU's clock (").ok_or_else(|| bad(several))?,
    })
}

/// `tsc=hide` on several processors: everything [`smp_vigil`] checks (the TSC check found no
/// warp, every case passed bare too), and Vigil did hide time (its report says how much, and
/// that some entries hid their whole exit).
fn smp_hide(c: &Check) -> Result<(), String> {
    smp_vigil(c)?;
    let h = hidden(&c.outcome.capture.com2())?;
    if h.ticks == 0 || h.whole == 0 {
        return Err(format!("nothing was hidden: {h:?}"));
    }
    Ok(())
}

/// Linux on two processors under `tsc=hide`, its TSC checks on: what `linux-hide` checks (no
/// complaint about the clocks that bare Linux does not make, the watchdog ran, the refined
/// calibration as bare) and a row per vCPU; and Vigil hid time.
fn linux_hide(c: &Check) -> Result<(), String> {
    crate::linux_checks::check_watchdog(c)?;
    let com2 = c.outcome.capture.com2();
    let (rows, _) = vcpu_table(&com2)?;
    if rows.len() != 2 || rows.iter().any(|r| r.count == 0) {
        return Err(format!("the per-vCPU table: {rows:?}"));
    }
    let h = hidden(&com2)?;
    if h.ticks == 0 || h.whole == 0 {
        return Err(format!("nothing was hidden: {h:?}"));
    }
    Ok(())
}

/// Linux on two processors under `tsc=hide:unbounded`, its warp test on: what every
/// several-processor Linux scenario checks (no line about the TSC between processors, the
/// clocksource as bare's), a row per vCPU, and time hidden.
fn linux_hide_unbounded(c: &Check) -> Result<(), String> {
    linux_vigil(c)?;
    let h = hidden(&c.outcome.capture.com2())?;
    if h.ticks == 0 || h.whole == 0 {
        return Err(format!("nothing was hidden: {h:?}"));
    }
    Ok(())
}

/// `tsc=frozen` with two processors: Vigil refuses before the guest runs, and says why.
fn frozen_refused(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    if !o.exited_by_itself() {
        return Err(format!(
            "{}: Bochs should have exited by itself",
            o.end_phrase()
        ));
    }
    let com2 = o.capture.com2();
    let why = com2
        .iter()
        .find(|l| l.starts_with("error: tsc=frozen"))
        .ok_or("Vigil printed no `error: tsc=frozen …` line")?;
    for needed in ["2 processors", "drift apart"] {
        if !why.contains(needed) {
            return Err(format!("the refusal does not say {needed:?}: {why}"));
        }
    }
    if o.capture
        .com1()
        .iter()
        .any(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
    {
        return Err("the guest ran".into());
    }
    match o.capture.last_line(Port::Vigil) {
        Some(l) if l.starts_with("run ended: failed:") => Ok(()),
        other => Err(format!(
            "expected `run ended: failed: …` last, got {other:?}"
        )),
    }
}

/// Linux on several processors under Vigil: everything the one-processor scenarios check
/// (including the clocksource as bare and no TSC trouble), and a row per vCPU.
fn linux_vigil(c: &Check) -> Result<(), String> {
    crate::linux_checks::check_time(c)?;
    let (rows, _) = vcpu_table(&c.outcome.capture.com2())?;
    let cpus = cpus(c.scenario.name) as usize;
    if rows.len() != cpus || rows.iter().any(|r| r.count == 0) {
        return Err(format!("the per-vCPU table: {rows:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processors_come_from_the_name() {
        assert_eq!(cpus("smp-2cpu-vigil"), 2);
        assert_eq!(cpus("linux-4cpu-bare"), 4);
        assert_eq!(cpus("cases-vigil"), crate::bochs::DEFAULT_CPUS);
        assert_eq!(cpus("odd-99cpu-vigil"), crate::bochs::DEFAULT_CPUS);
        for s in all() {
            assert!(cpus(s.name) > 1, "{}", s.name);
        }
    }

    #[test]
    fn several_processors_under_vigil_need_a_bochs_that_runs_them() {
        assert_eq!(needs("smp-2cpu-vigil"), [Feature::SmpUnderVmx]);
        assert_eq!(needs("gdb-smp-2cpu"), [Feature::SmpUnderVmx]);
        assert!(needs("smp-4cpu-bare").is_empty());
        assert!(needs("cases-vigil").is_empty());
        assert!(needs("smp-2cpu-frozen-refused").is_empty());
        assert_eq!(needs("smp-2cpu-hide"), [Feature::SmpUnderVmx]);
        assert_eq!(
            crate::scenarios::needs("linux-4cpu-vigil"),
            [Feature::SmpUnderVmx]
        );
    }

    #[test]
    fn one_processor_time_modes_keep_one() {
        assert_eq!(cpus_given("time-hide", "tsc=hide hypercall=on", 2), 1);
        assert_eq!(cpus_given("cases-vigil", "tsc=offset:0x1", 2), 2);
        assert_eq!(
            cpus_given("smp-2cpu-frozen-refused", "tsc=frozen", 4),
            2,
            "as named"
        );
        // The AMD scenarios: SVM runs one processor, unless the name asks for more.
        assert_eq!(cpus_given("cases-vigil-ryzen", "", 2), 1);
        assert_eq!(cpus_given("demo-vigil-qemu", "", 4), 1);
        assert_eq!(cpus_given("smp-2cpu-refused-ryzen", "", 1), 2);
    }

    #[test]
    fn the_hidden_time_lines_parse() {
        let com2 = [
            "virtual time: TSC 50000 kHz; VMX round trip [46, 48, 53, 60] ticks",
            "guest stopped at host TSC 123",
            "virtual time: 81234 ticks hidden from the TSC in all, 40 still owed at the end \
             (the rest repaid or forgiven), 12500 owed at most",
            "virtual time on several vCPUs: 5120 entries hid their whole exit, 70 less for the \
             bound or a repayment step, 3301 less for another vCPU's clock (912345 ticks shown \
             for it)",
        ];
        assert_eq!(
            hidden(&com2).unwrap(),
            Hidden {
                ticks: 81234,
                whole: 5120,
                bounded: 70,
                others: 3301,
                others_ticks: 912345
            }
        );
        assert!(hidden(&com2[..2]).is_err());
    }

    #[test]
    fn the_per_vcpu_table_parses() {
        let com2 = [
            "exit statistics by vCPU:",
            "vcpu         count     total-ticks  median-ticks  most frequent",
            "0              682          227281           385  CPUID",
            "1               11        70575146           261  I/O instruction",
            "total          693        70802427           385  -",
            "run ended: ok",
        ];
        let (rows, total) = vcpu_table(&com2).unwrap();
        assert_eq!(
            rows,
            vec![
                VcpuRow {
                    vcpu: 0,
                    count: 682
                },
                VcpuRow { vcpu: 1, count: 11 }
            ]
        );
        assert_eq!(total, 693);
        assert!(vcpu_table(&com2[..4]).is_err());
    }
}
