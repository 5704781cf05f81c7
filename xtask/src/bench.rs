//! `cargo xtask bench`: Linux booted bare and under Vigil with identical Bochs settings, both
//! at once, and a table of the emulated ticks each took to power off, their ratio, and Vigil's
//! exits by reason with their median cost.
//!
//! Three measures, all read after the runs:
//! - *Ticks to power-off*: every line of `bochs.log` starts with the tick count of the emulated
//!   machine, and its last line (`quit_sim called …`) is written when the machine powers off.
//!   With `clock: sync=none` and a fixed `ips` (bochs.rs) the count depends on the work done:
//!   two bare runs differed by 0.015 %. It covers the whole machine: firmware, GRUB (whose
//!   `linux` loader, bare, took about 38 M ticks more than loading Vigil and two modules),
//!   Vigil's set-up, and under Vigil the exit table it prints at power-off (at 115200 baud,
//!   about 3 M ticks).
//! - *Ticks from kernel entry*: the same, minus the tick of the kernel's first instruction
//!   that Bochs logs: on Intel models its read of IA32_MISC_ENABLE (MSR 0x1a0) in `verify_cpu`
//!   (the bzImage's first code checks that XD is not disabled), on AMD models its read of the
//!   SEV status MSR (0xc0010131) in the decompressor's `startup_32` (it checks for memory
//!   encryption), neither of which Bochs' models implement: `RDMSR: Unknown register …`.
//!   Firmware and loaders drop out; the verdict uses this ratio when both logs have the line,
//!   else the whole-machine one.
//! - *Kernel clock*: the timestamp of the kernel's last message (`reboot: Power down`), the
//!   time from its TSC set-up to power-off as the guest saw it. It varies by 1–2 % between
//!   identical runs (timer-driven waits end on different jiffies), and under `tsc=hide`,
//!   `frozen` or `scale` it is what Vigil showed the guest: shown, not judged.
//!
//! Under Vigil the guest also has 16 MiB less memory (Vigil's pool); a bare run given the same
//! holes (`memmap=`) took as long as one without them.

use std::thread;
use std::time::Instant;

use crate::bochs::{self, Machine, RunSpec, IPS};
use crate::build::{self, VIGIL};
use crate::cli::RunArgs;
use crate::layout::{Layout, RunDir};
use crate::outcome::{Mode, Outcome};
use crate::report::{self, ExitStats};
use crate::stream::{Echo, Port};
use crate::{linux, linux_checks, linux_material};

/// The bound on the Vigil / bare ratio with the default policy, and its goal.
pub const RATIO_TARGET: f64 = 1.10;
pub const RATIO_GOAL: f64 = 1.02;

/// One side of the comparison, after the run.
struct Side {
    mode: Mode,
    outcome: Outcome,
    verdict: Result<String, String>,
    ticks: Option<u64>,
    /// The tick of the kernel's first logged instruction (see the module's documentation).
    entry_tick: Option<u64>,
    /// The kernel's clock at its last console message, in seconds.
    kernel_secs: Option<f64>,
}

pub fn bench(layout: &Layout, args: &RunArgs) -> Result<bool, String> {
    let total = Instant::now();
    if args.cpu_model != bochs::DEFAULT_CPU_MODEL {
        bochs::check_cpu_model(&args.cpu_model)?;
    }
    if !args.no_build {
        build::build(layout, VIGIL)?;
    }
    let material = linux_material::material(layout, &args.linux)?;
    let vigil = linux::vigil_bin(layout, Mode::Vigil)?.expect("under Vigil");
    let options = args.effective_vigil_options().unwrap_or_default();
    let machine = Machine {
        megs: args.megs,
        cpu_model: args.cpu_model.clone(),
        cpus: args.cpus,
    };

    let mut prepared = Vec::new();
    for mode in [Mode::Bare, Mode::Vigil] {
        let dir = RunDir::claim(layout, &format!("bench-linux-{}", mode.name()))
            .map_err(|e| format!("cannot make the run directory: {e}"))?;
        let with_vigil = (mode == Mode::Vigil).then_some((vigil.as_path(), options.as_str()));
        let (iso, _) = linux::make_iso(&dir, &material, with_vigil)?;
        prepared.push((mode, dir, iso));
    }
    crate::step(&format!(
        "booting {} bare and under Vigil ({}) at once, {} × {}, {} MiB",
        layout.show(&material.kernel),
        show_options(&options),
        machine.cpu_model,
        machine.cpus,
        machine.megs
    ));

    let results: Vec<Result<Side, String>> = thread::scope(|scope| {
        let handles: Vec<_> = prepared
            .iter()
            .map(|(mode, dir, iso)| {
                let machine = machine.clone();
                let our_initrd = args.linux.our_initrd();
                scope.spawn(move || -> Result<Side, String> {
                    let outcome = bochs::run(&RunSpec {
                        dir,
                        iso: iso.clone(),
                        machine,
                        mode: *mode,
                        timeout: args.timeout,
                        echo: Echo::Quiet,
                    })?;
                    let verdict = linux_checks::verdict(&outcome, our_initrd);
                    let log = std::fs::read(dir.file("bochs.log")).unwrap_or_default();
                    let log = String::from_utf8_lossy(&log);
                    let (ticks, entry_tick) = (end_tick(&log), kernel_entry_tick(&log));
                    crate::step(&format!(
                        "{} run: {}, Bochs ran {}",
                        mode.name(),
                        match &verdict {
                            Ok(_) => "ok",
                            Err(_) => "FAILED",
                        },
                        crate::secs(outcome.elapsed)
                    ));
                    let kernel_secs = kernel_clock(outcome.capture.port(Port::Guest));
                    Ok(Side {
                        kernel_secs,
                        entry_tick,
                        mode: *mode,
                        outcome,
                        verdict,
                        ticks,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("the run panicked".into())))
            .collect()
    });
    if crate::sys::interrupted() {
        println!("xtask: interrupted");
        return Ok(false);
    }
    let mut sides = Vec::new();
    for result in results {
        sides.push(result?);
    }
    let (bare, under) = (&sides[0], &sides[1]);
    let stats = report::exit_stats(&under.outcome.capture.com2());

    println!();
    println!(
        "Linux boot: {} × {}, {} MiB, ips {IPS}, clock sync=none; kernel command line `{}`",
        machine.cpu_model, machine.cpus, machine.megs, material.cmdline
    );
    println!("Vigil options: {}", show_options(&options));
    print!("{}", ticks_table(bare, under));
    match &stats {
        Ok(stats) => print!("{}", exit_table(stats, under.ticks)),
        Err(e) => println!("no exit statistics from Vigil: {e}"),
    }
    crate::step(&format!("bench took {}", crate::secs(total.elapsed())));

    let mut ok = true;
    for side in [bare, under] {
        if let Err(why) = &side.verdict {
            println!(
                "xtask: the {} run FAILED: {}",
                side.mode.name(),
                side.outcome.explain(why)
            );
            println!("xtask: run files in {}", side.outcome.dir.display());
            ok = false;
        }
    }
    Ok(ok && bare.ticks.is_some() && under.ticks.is_some())
}

fn show_options(options: &str) -> String {
    if options.trim().is_empty() {
        "none (the default policy)".to_string()
    } else {
        format!("`{options}`")
    }
}

/// The tick count of the last line of a Bochs log (each line starts with it: `02032159864i[…`).
pub fn end_tick(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| {
        let digits: String = line.chars().take_while(char::is_ascii_digit).collect();
        let rest = &line[digits.len()..];
        // The digits are followed by the level letter and `[`.
        let mut tail = rest.chars();
        match (tail.next(), tail.next()) {
            (Some(level), Some('[')) if !digits.is_empty() && level.is_ascii_alphabetic() => {
                digits.parse().ok()
            }
            _ => None,
        }
    })
}

/// The tick of the first `RDMSR: Unknown register 0x1a0` (Intel: the kernel's `verify_cpu`)
/// or `… 0xc0010131` line (AMD: the decompressor's SEV-status read), whichever comes first.
pub fn kernel_entry_tick(log: &str) -> Option<u64> {
    log.lines()
        .find(|l| {
            l.contains("RDMSR: Unknown register 0x1a0")
                || l.contains("RDMSR: Unknown register 0xc0010131")
        })
        .and_then(end_tick)
}

/// The timestamp of the last kernel message (`[    6.726331] reboot: Power down` → 6.726331).
pub fn kernel_clock<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<f64> {
    lines
        .into_iter()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix('[')?;
            let (stamp, _) = rest.split_once(']')?;
            let stamp = stamp.trim();
            let (secs, micros) = stamp.split_once('.')?;
            let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
            (digits(secs) && digits(micros)).then(|| stamp.parse::<f64>().ok())?
        })
        .last()
}

/// `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Vigil / bare.
pub fn ratio(bare: u64, vigil: u64) -> Option<f64> {
    (bare > 0).then(|| vigil as f64 / bare as f64)
}

fn ticks_table(bare: &Side, under: &Side) -> String {
    let since_entry = |s: &Side| s.ticks?.checked_sub(s.entry_tick?);
    let mut out = String::new();
    out.push_str(&format!(
        "{:<8} {:>20} {:>18} {:>14} {:>9}  {}\n",
        "run", "ticks to power-off", "from kernel entry", "kernel clock", "wall", "end"
    ));
    for side in [bare, under] {
        let end = match &side.verdict {
            Ok(line) => line.clone(),
            Err(why) => format!("FAILED: {why}"),
        };
        out.push_str(&format!(
            "{:<8} {:>20} {:>18} {:>14} {:>9}  {end}\n",
            side.mode.name(),
            side.ticks.map_or("?".to_string(), grouped),
            since_entry(side).map_or("?".to_string(), grouped),
            side.kernel_secs
                .map_or("?".to_string(), |s| format!("{s:.6} s")),
            crate::secs(side.outcome.elapsed)
        ));
    }
    let machine = ratio(bare.ticks.unwrap_or(0), under.ticks.unwrap_or(0));
    let kernel = ratio(
        since_entry(bare).unwrap_or(0),
        since_entry(under).unwrap_or(0),
    );
    let clock = match (bare.kernel_secs, under.kernel_secs) {
        (Some(b), Some(v)) if b > 0.0 => Some(v / b),
        _ => None,
    };
    let show = |r: Option<f64>| r.map_or("?".to_string(), |r| format!("{r:.4}"));
    out.push_str(&format!(
        "{:<8} {:>20} {:>18} {:>14}\n",
        "ratio",
        show(machine),
        show(kernel),
        show(clock)
    ));
    let (judged, what) = match (kernel, machine) {
        (Some(r), _) => (Some(r), "ticks from kernel entry"),
        (None, r) => (r, "ticks to power-off"),
    };
    out.push_str(&match judged {
        Some(r) => format!(
            "Vigil / bare: {r:.4} ({what}), {}\n",
            if r <= RATIO_GOAL {
                format!("within the goal {RATIO_GOAL:.2}")
            } else if r <= RATIO_TARGET {
                format!("within the target {RATIO_TARGET:.2}, above the goal {RATIO_GOAL:.2}")
            } else {
                format!("ABOVE the target {RATIO_TARGET:.2}")
            }
        ),
        None => "Vigil / bare: ? (a run left no tick count in its bochs.log)\n".to_string(),
    });
    out
}

/// Vigil's exits by reason: count, share of all exits, total and median host ticks; then what
/// all exits cost together, against the whole run.
fn exit_table(stats: &ExitStats, vigil_ticks: Option<u64>) -> String {
    let mut out = String::from("\nexits under Vigil (host ticks, from Vigil's exit statistics):\n");
    out.push_str(&format!(
        "{:<28} {:>9} {:>7} {:>14} {:>13}\n",
        "reason", "count", "share", "total-ticks", "median-ticks"
    ));
    let mut rows: Vec<_> = stats.rows.iter().collect();
    rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
    let all = stats.total.count.max(1) as f64;
    for (reason, row) in rows {
        out.push_str(&format!(
            "{:<28} {:>9} {:>6.1}% {:>14} {:>13}\n",
            reason,
            grouped(row.count),
            row.count as f64 * 100.0 / all,
            grouped(row.total_ticks),
            row.median_ticks.map_or("-".to_string(), grouped)
        ));
    }
    let mean = stats
        .total
        .total_ticks
        .checked_div(stats.total.count)
        .map_or("-".to_string(), |m| format!("mean {}", grouped(m)));
    out.push_str(&format!(
        "{:<28} {:>9} {:>7} {:>14} {:>13}\n",
        "total",
        grouped(stats.total.count),
        "",
        grouped(stats.total.total_ticks),
        mean
    ));
    if let Some(ticks) = vigil_ticks.filter(|t| *t > 0) {
        out.push_str(&format!(
            "exit handling took {:.3}% of the run under Vigil\n",
            stats.total.total_ticks as f64 * 100.0 / ticks as f64
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_log_line_gives_the_tick_count() {
        let log = "00000000000i[      ] reading configuration from bochsrc\n\
                   02032159864p[ACPI  ] >>PANIC<< ACPI control: soft power off\n\
                   02032159864i[CPU0  ] | CR3=0x0000000002ac6004 CR4=0x003306b0\n\
                   02032159864i[SIM   ] quit_sim called with exit code 1\n\
                   \n";
        assert_eq!(end_tick(log), Some(2_032_159_864));
        assert_eq!(end_tick("no ticks here\n"), None);
        assert_eq!(end_tick("123 [x]\n"), None);
        assert_eq!(end_tick(""), None);
        let log = "00158279685i[BIOS  ] Booting from 07c0:0000\n\
                   00432508866e[CPU0  ] RDMSR: Unknown register 0x1a0\n\
                   00533461180e[CPU0  ] RDMSR: Unknown register 0x1a0\n\
                   02032172365i[SIM   ] quit_sim called with exit code 1\n";
        assert_eq!(kernel_entry_tick(log), Some(432_508_866));
        assert_eq!(end_tick(log), Some(2_032_172_365));
        assert_eq!(kernel_entry_tick("00000000001i[SIM   ] x\n"), None);
        // An AMD model's kernel reads the SEV status first.
        let amd = "00000000001i[SIM   ] x\n\
                   00409031214e[CPU0  ] RDMSR: Unknown register 0xc0010131\n\
                   00515671351e[CPU0  ] RDMSR: Unknown register 0x8b\n";
        assert_eq!(kernel_entry_tick(amd), Some(409_031_214));
    }

    #[test]
    fn numbers_are_grouped_and_ratios_computed() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(2_032_159_864), "2,032,159,864");
        assert_eq!(ratio(2_000, 2_040), Some(1.02));
        assert_eq!(ratio(0, 5), None);
    }

    #[test]
    fn the_kernel_clock_is_its_last_timestamp() {
        let com1 = [
            "[    0.000000] tsc: Detected 3500.000 MHz processor",
            "vigil-linux: done",
            "[    6.726331] reboot: Power down",
            "[x] not a stamp",
        ];
        assert_eq!(kernel_clock(com1), Some(6.726331));
        assert_eq!(kernel_clock(["[12.5] a", "[ 1.x] b", "[] c"]), Some(12.5));
        assert_eq!(kernel_clock(["no kernel here"]), None);
    }

    #[test]
    fn exit_table_lists_reasons_by_count_with_medians() {
        let lines = [
            "exit statistics:",
            "reason                             count     total-ticks  median-ticks",
            "CPUID                                898          237225           264",
            "I/O instruction                       12          265646           262",
            "XSETBV                                 1             279           279",
            "total                                911          503150             -",
        ];
        let stats = report::exit_stats(&lines).unwrap();
        let table = exit_table(&stats, Some(2_000_000_000));
        let rows: Vec<&str> = table.lines().skip(1).collect();
        assert!(rows[2].starts_with("CPUID") && rows[2].contains(" 98.6% "));
        assert!(rows[2].trim_end().ends_with(" 264"));
        assert!(rows[3].starts_with("I/O instruction") && rows[3].contains("265,646"));
        assert!(rows[4].starts_with("XSETBV"));
        assert!(rows[5].starts_with("total") && rows[5].contains("mean 552"));
        assert_eq!(rows[6], "exit handling took 0.025% of the run under Vigil");
    }
}
