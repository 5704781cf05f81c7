//! The verdict on a Linux run and the checks of the Linux scenarios, from what our initramfs's
//! `/init` printed (its sections, see [`crate::initramfs`]), the kernel's console and Vigil's
//! exit statistics.

use std::collections::BTreeMap;

use crate::initramfs::{self, BANNER, DONE, MARKER};
use crate::outcome::{Mode, Outcome};
use crate::report;
use crate::scenarios::Check;
use crate::stream::Port;

/// The verdict on a Linux run: Bochs exited by itself; under Vigil its last line is
/// `run ended: ok`; with our initramfs, `/init` got to its last line. `Ok` carries the deciding
/// line.
pub fn verdict(outcome: &Outcome, our_initrd: bool) -> Result<String, String> {
    if let Some(why) = outcome.grub_failure() {
        return Err(why);
    }
    let line = match outcome.mode {
        Mode::Vigil => outcome.normal_end()?,
        Mode::Bare if outcome.exited_by_itself() => "Bochs exited".to_string(),
        Mode::Bare => return Err(outcome.end_phrase()),
    };
    if !our_initrd {
        return Ok(line);
    }
    let init = InitReport::parse(outcome.capture.port(Port::Guest));
    if !init.banner {
        return Err(format!("the initramfs never started: no `{BANNER}` line"));
    }
    if !init.done {
        return Err(format!("/init did not get to its last line `{DONE}`"));
    }
    Ok(format!("{DONE}; {line}"))
}

/// What our `/init` printed: the banner, the sections by name, the last line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitReport {
    pub banner: bool,
    pub done: bool,
    pub sections: BTreeMap<String, Vec<String>>,
}

impl InitReport {
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> InitReport {
        let mut report = InitReport::default();
        let mut open: Option<String> = None;
        for line in lines {
            let trimmed = line.trim();
            if let Some(rest) = trimmed.strip_prefix(MARKER) {
                let rest = rest.trim();
                if let Some(name) = rest.strip_prefix("begin ") {
                    report.sections.insert(name.to_string(), Vec::new());
                    open = Some(name.to_string());
                } else if rest.starts_with("end ") {
                    open = None;
                } else if trimmed == BANNER {
                    report.banner = true;
                } else if trimmed == DONE {
                    report.done = true;
                }
                continue;
            }
            if let Some(name) = &open {
                if let Some(section) = report.sections.get_mut(name) {
                    section.push(line.to_string());
                }
            }
        }
        report
    }

    pub fn section(&self, name: &str) -> Result<&[String], String> {
        self.sections
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("/init printed no `{name}` section"))
    }

    /// `uname -a` → (kernel name, release, machine).
    pub fn uname(&self) -> Result<(String, String, String), String> {
        let line = self
            .section("uname")?
            .first()
            .ok_or("the uname section is empty")?;
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 4 {
            return Err(format!("uname -a printed {line:?}"));
        }
        let machine = words
            .iter()
            .rev()
            .find(|w| w.starts_with("x86_64") || w.starts_with("i686"))
            .ok_or(format!("uname -a names no machine: {line:?}"))?;
        Ok((words[0].into(), words[2].into(), machine.to_string()))
    }

    /// A `key : value` line of the cpuinfo section.
    pub fn cpuinfo(&self, key: &str) -> Result<String, String> {
        self.section("cpuinfo")?
            .iter()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .ok_or_else(|| format!("/proc/cpuinfo has no `{key}` line"))
    }

    /// The total of `free`'s `Mem:` line, in KiB.
    pub fn mem_total_kib(&self) -> Result<u64, String> {
        let line = self
            .section("free")?
            .iter()
            .find(|l| l.trim_start().starts_with("Mem:"))
            .ok_or("free printed no `Mem:` line")?;
        line.split_whitespace()
            .nth(1)
            .and_then(report::parse_u64)
            .ok_or_else(|| format!("cannot read the total of {line:?}"))
    }

    /// The processors Linux runs on (`nproc`) and how many it says it brought up (`smp: Brought
    /// up 1 node, N CPUs`).
    pub fn processors(&self) -> Result<(u32, u32), String> {
        let lines = self.section("smp")?;
        let nproc = lines
            .first()
            .and_then(|l| report::parse_u64(l.trim()))
            .ok_or_else(|| format!("nproc printed {:?}", lines.first()))?
            as u32;
        let line = lines
            .iter()
            .find(|l| l.contains("smp: Brought up"))
            .ok_or("dmesg has no `smp: Brought up …` line")?;
        let brought = line
            .rsplit(", ")
            .next()
            .and_then(|tail| tail.split_whitespace().next())
            .and_then(report::parse_u64)
            .ok_or_else(|| format!("cannot read the CPU count of {line:?}"))?
            as u32;
        Ok((nproc, brought))
    }

    /// (current clocksource, available clocksources).
    pub fn clocksource(&self) -> Result<(String, Vec<String>), String> {
        let lines = self.section("clocksource")?;
        let current = lines
            .first()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .ok_or("the clocksource section is empty")?;
        let available = lines
            .get(1)
            .map(|l| l.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        Ok((current, available))
    }
}

/// Every clocksource the kernel switched to (`clocksource: Switched to clocksource X`), in order.
pub fn clocksource_switches<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    lines
        .into_iter()
        .filter_map(|l| l.split("Switched to clocksource ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// Lines that report the TSC as unreliable.
pub fn tsc_trouble<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            // "Marking clocksource 'tsc' as unstable", "Marking TSC unstable due to …",
            // "TSC found unstable after boot"; between processors (arch/x86/kernel/tsc_sync.c):
            // "TSC synchronization [CPU#0 -> CPU#1]:", "Measured N cycles TSC warp between
            // CPUs", "[Firmware Bug]: TSC ADJUST differs …".
            l.contains("unstable")
                || l.contains("tsc synchronization [")
                || l.contains("tsc warp")
                || l.contains("tsc adjust")
        })
        .map(String::from)
        .collect()
}

fn tsc_family(clocksource: &str) -> bool {
    clocksource == "tsc" || clocksource == "tsc-early"
}

// ---- checks of the Linux scenarios ----

/// The vendor string and virtualization flag of a Bochs CPU model's processor.
fn vendor_of(cpu_model: &str) -> (&'static str, &'static str) {
    if crate::scenarios_amd::is_amd_model(cpu_model) {
        ("AuthenticAMD", "svm")
    } else {
        ("GenuineIntel", "vmx")
    }
}

/// The virtualization flags (`vmx`, `svm`) in /proc/cpuinfo's flags line.
fn virtualization_flags(init: &InitReport) -> Result<Vec<String>, String> {
    Ok(init
        .cpuinfo("flags")?
        .split_whitespace()
        .filter(|f| matches!(*f, "vmx" | "svm"))
        .map(str::to_string)
        .collect())
}

/// Both modes: Bochs exited by itself after our `/init` ran every section; `uname -a` says
/// Linux on x86_64, cpuinfo names the model's vendor, `free` reports a plausible total.
fn common(c: &Check) -> Result<InitReport, String> {
    verdict(c.outcome, true)?;
    let init = InitReport::parse(c.outcome.capture.port(Port::Guest));
    for name in initramfs::SECTIONS {
        if init.section(name)?.is_empty() {
            return Err(format!("/init's `{name}` section is empty"));
        }
    }
    let (kernel, release, machine) = init.uname()?;
    if kernel != "Linux" {
        return Err(format!("uname -a names the kernel {kernel:?}, not Linux"));
    }
    if !release.starts_with(|ch: char| ch.is_ascii_digit()) {
        return Err(format!("uname -a: release {release:?} is not a version"));
    }
    if machine != "x86_64" {
        return Err(format!("uname -a: machine {machine:?}, not x86_64"));
    }
    let vendor = init.cpuinfo("vendor_id")?;
    let (expected, _) = vendor_of(c.scenario.cpu_model);
    if vendor != expected {
        return Err(format!("cpuinfo vendor_id is {vendor:?}, not {expected}"));
    }
    let megs = crate::scenarios_guests::megs(c.scenario.name) as u64;
    let total = init.mem_total_kib()?;
    if total < megs * 1024 / 2 || total > megs * 1024 {
        return Err(format!(
            "free: Mem total {total} KiB is not between half and all of the machine's {megs} MiB"
        ));
    }
    let (current, _) = init.clocksource()?;
    if current.is_empty() {
        return Err("no current clocksource".into());
    }
    let dmesg = init.section("dmesg-time")?;
    if !dmesg.iter().any(|l| l.contains("tsc:")) {
        return Err("dmesg has no `tsc:` line".into());
    }
    // Every processor of the machine runs Linux, and the kernel says so.
    let cpus = crate::scenarios_smp::cpus(c.scenario.name);
    let (nproc, brought) = init.processors()?;
    if nproc != cpus || brought != cpus {
        return Err(format!(
            "the machine has {cpus} processor(s); nproc says {nproc}, the kernel brought up \
             {brought}"
        ));
    }
    // Nothing between the processors' TSCs troubles the kernel.
    if let Some(line) = tsc_trouble(c.outcome.capture.port(Port::Guest)).first() {
        return Err(format!("the TSC is in trouble: {line}"));
    }
    Ok(init)
}

/// `linux-bare`: the reference the Vigil scenarios compare with. The processor's own
/// virtualization extension shows in /proc/cpuinfo.
pub fn check_bare(c: &Check) -> Result<(), String> {
    let init = common(c)?;
    let (_, flag) = vendor_of(c.scenario.cpu_model);
    if !virtualization_flags(&init)?.iter().any(|f| f == flag) {
        return Err(format!("bare, /proc/cpuinfo's flags lack `{flag}`"));
    }
    if let Some(line) = c.outcome.capture.com2().first() {
        return Err(format!("COM2 should be silent bare, it printed {line:?}"));
    }
    Ok(())
}

/// Under Vigil: everything of [`common`], `run ended: ok`, no virtualization extension in
/// /proc/cpuinfo (VMX and SVM are Vigil's), an exit table with CPUID exits whose rows add up,
/// and (against bare) the guest has less memory by Vigil's image and pool.
pub fn check_vigil(c: &Check) -> Result<(), String> {
    let init = common(c)?;
    let shown = virtualization_flags(&init)?;
    if !shown.is_empty() {
        return Err(format!(
            "under Vigil, /proc/cpuinfo's flags show {}",
            shown.join(" ")
        ));
    }
    let stats = report::exit_stats(&c.outcome.capture.com2())?;
    if stats.total.count == 0 {
        return Err("the exit table counts no exits".into());
    }
    if stats.count("CPUID") == 0 {
        let rows: Vec<String> = stats
            .rows
            .iter()
            .map(|(r, row)| format!("{r}={}", row.count))
            .collect();
        return Err(format!("no CPUID exits (rows: {})", rows.join(", ")));
    }
    let sum: u64 = stats.rows.values().map(|r| r.count).sum();
    if sum != stats.total.count {
        return Err(format!(
            "the exit rows add up to {sum}, the total row says {}",
            stats.total.count
        ));
    }
    if let Some(bare) = c.baseline {
        let bare = InitReport::parse(bare.capture.port(Port::Guest));
        let footprint = crate::scenarios_guests::Footprint::parse(c.outcome.capture.com2())
            .ok_or("Vigil printed no `vigil memory: …` line")?;
        if let (Ok(mine), Ok(theirs)) = (init.mem_total_kib(), bare.mem_total_kib()) {
            // Vigil's image and pool are not the guest's: the kernel counts that much less
            // (give or take its own bookkeeping, which shrinks with the RAM it manages).
            let vigil = footprint.bytes() / 1024;
            let missing = theirs.saturating_sub(mine);
            if missing + 256 < vigil || missing > vigil + 256 {
                return Err(format!(
                    "the guest has {mine} KiB under Vigil, {theirs} KiB bare: {missing} KiB \
                     missing, but Vigil's image and pool take {vigil} KiB"
                ));
            }
        }
    }
    Ok(())
}

/// Under a `tsc=` policy: [`check_vigil`], and the kernel's time keeping is as bare: dmesg
/// printed its TSC and clocksource lines, nothing calls the TSC unstable, and the clocksource
/// (and every switch) is the one bare Linux uses, or both are TSC clocksources (`tsc-early`
/// becomes `tsc` once its calibration is refined, which depends on how long the boot took).
pub fn check_time(c: &Check) -> Result<(), String> {
    check_vigil(c)?;
    let com1 = c.outcome.capture.com1();
    let init = InitReport::parse(com1.iter().copied());
    let dmesg = init.section("dmesg-time")?;
    if !dmesg.iter().any(|l| l.contains("clocksource:")) {
        return Err("dmesg has no `clocksource:` line".into());
    }
    if let Some(line) = tsc_trouble(com1.iter().copied()).first() {
        return Err(format!("the TSC is in trouble: {line}"));
    }
    let bare = c
        .baseline
        .ok_or("the linux-bare outcome this check compares with is missing")?;
    let bare = InitReport::parse(bare.capture.port(Port::Guest));
    let (current, _) = init.clocksource()?;
    let (bare_current, _) = bare.clocksource()?;
    let same = |a: &str, b: &str| a == b || (tsc_family(a) && tsc_family(b));
    if !same(&current, &bare_current) {
        return Err(format!(
            "the clocksource is {current}, bare Linux uses {bare_current}"
        ));
    }
    let bare_switches =
        clocksource_switches(bare.section("dmesg-time")?.iter().map(String::as_str));
    for to in clocksource_switches(dmesg.iter().map(String::as_str)) {
        if !bare_switches.iter().any(|b| same(&to, b)) {
            return Err(format!(
                "Linux switched to clocksource {to}; bare it switched to {}",
                if bare_switches.is_empty() {
                    "nothing".to_string()
                } else {
                    bare_switches.join(", ")
                }
            ));
        }
    }
    Ok(())
}

/// Kernel command-line words for the watchdog scenarios. Linux 6.1 takes the TSC off its
/// clocksource watchdog when the processor reports a constant, non-stop TSC and TSC_ADJUST
/// (`check_system_tsc_reliable` in arch/x86/kernel/tsc.c), as Bochs' models do; hiding
/// TSC_ADJUST (feature 9*32+1) keeps the TSC under watch, so the kernel compares it with the
/// HPET or the ACPI PM timer every half second. `vigil.wait=4` makes `/init` wait 4 s before
/// its last sections, long enough for those comparisons and for the refined TSC calibration
/// (which measures the TSC against the same clocks over a second).
pub const WATCHDOG_ARGS: &str = "clearcpuid=289 tsc_early_khz=50000 vigil.wait=4";

/// The least kernel time the watchdog must have had.
const WATCHDOG_SECS: f64 = 3.0;

/// `[   6.418942] clocksource: acpi_pm: ...` → (6.418942, "clocksource: acpi_pm: ...").
fn stamped(line: &str) -> Option<(f64, &str)> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (stamp, text) = rest.split_once(']')?;
    Some((stamp.trim().parse().ok()?, text.trim()))
}

/// Kernel lines about its clocks that report a problem (the watchdog's verdicts, a failed or
/// inconsistent calibration, a TSC warp or a TSC_ADJUST fix-up).
pub fn clock_complaints<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    const WORDS: &[&str] = &[
        "unstable",
        "skew",
        "watchdog",
        "warp",
        "differs",
        "failed",
        "inconsistent",
        "wd_nsec",
        "cs_nsec",
    ];
    lines
        .into_iter()
        .filter_map(|l| {
            let text = stamped(l).map_or(l, |(_, t)| t);
            let lower = text.to_ascii_lowercase();
            WORDS
                .iter()
                .any(|w| lower.contains(w))
                .then(|| text.to_string())
        })
        .collect()
}

/// `tsc: Refined TSC clocksource calibration: 49.999 MHz` → 49.999.
fn refined_mhz<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<f64> {
    lines.into_iter().find_map(|l| {
        let rest = l.split("Refined TSC clocksource calibration:").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The `tsc=hide` Linux scenario: [`check_time`]; the kernel ran at least 3 s with its
/// clocksource watchdog comparing the TSC with the HPET or the ACPI PM timer (from the first of
/// them registering to its power-off); dmesg has no complaint about a clock that bare metal's
/// has not; and the refined TSC calibration — the kernel measuring the TSC against those clocks
/// over a second — reads bare metal's frequency within 0.1 %.
pub fn check_watchdog(c: &Check) -> Result<(), String> {
    check_time(c)?;
    let com1 = c.outcome.capture.com1();
    let init = InitReport::parse(com1.iter().copied());
    let dmesg = init.section("dmesg-time")?;
    let watched_from = dmesg
        .iter()
        .filter_map(|l| stamped(l))
        .find(|(_, t)| {
            t.starts_with("clocksource: hpet:") || t.starts_with("clocksource: acpi_pm:")
        })
        .map(|(ts, _)| ts)
        .ok_or("dmesg shows neither the HPET nor the ACPI PM timer registering: no watchdog")?;
    let off = crate::bench::kernel_clock(com1.iter().copied())
        .ok_or("no kernel timestamp on the console")?;
    if off - watched_from < WATCHDOG_SECS {
        return Err(format!(
            "the kernel ran {:.3} s with its clocksource watchdog, less than {WATCHDOG_SECS} s",
            off - watched_from
        ));
    }
    let bare = c
        .baseline
        .ok_or("the bare outcome this check compares with is missing")?;
    let bare = InitReport::parse(bare.capture.port(Port::Guest));
    let bare_dmesg = bare.section("dmesg-time")?;
    let bare_complaints = clock_complaints(bare_dmesg.iter().map(String::as_str));
    if let Some(new) = clock_complaints(dmesg.iter().map(String::as_str))
        .into_iter()
        .find(|l| !bare_complaints.contains(l))
    {
        return Err(format!("the kernel complains about its clocks: {new}"));
    }
    match (
        refined_mhz(dmesg.iter().map(String::as_str)),
        refined_mhz(bare_dmesg.iter().map(String::as_str)),
    ) {
        (Some(v), Some(b)) if (v - b).abs() > b * 0.001 => Err(format!(
            "the refined TSC calibration reads {v} MHz, bare metal's {b} MHz: more than 0.1 % apart"
        )),
        (None, Some(b)) => Err(format!(
            "no refined TSC calibration under Vigil; bare metal's read {b} MHz"
        )),
        _ => Ok(()),
    }
}
