//! The debugger on two vCPUs: a real gdb drives the `smp` guest's `debug` case (both
//! processors running, `guest-kit/src/bin/smp.rs`). What it must show:
//!
//! - a breakpoint hit on the application processor, reported as thread 2, with both vCPUs
//!   listed by `info threads` and stopped together;
//! - each thread's own registers (R12 of processor 1, R13 of the boot processor, each PC in its
//!   own code);
//! - `stepi` on thread 2 moves its PC by one instruction while thread 1 stays stopped (its spin
//!   counter does not move);
//! - a watchpoint hit by processor 1 and breakpoints hit by the boot processor (thread 1);
//! - time frozen for both while stopped: each processor's largest TSC gap between two rounds
//!   of its spin stays small across stops of several seconds (`tsc=offset:0`: every vCPU takes
//!   the same stopped time out of its offset).

use std::path::Path;

use crate::report::{self, Status};
use crate::scenarios::Check;
use crate::stream::Port;

pub const SCENARIO: &str = "gdb-smp-2cpu";
/// The guest's TSC gap must stay under this across stops of 2 s and more (a Bochs tick is an
/// instruction: 2 s of a held machine are tens of millions of ticks).
const MAX_GAP: u64 = 1 << 21;

pub fn script(smp: &Path) -> String {
    format!(
        "set pagination off
set confirm off
set width 0
set remotetimeout 30
file {elf}
target remote localhost:{{PORT}}
set language c
break *smp_ap_here
continue
echo ==ap-break\\n
info threads
p/x $pc
p/x &smp_ap_here
p/x $r12
shell sleep 2
echo ==bsp\\n
thread 1
p/x $r13
info symbol $pc
x/gx &SMP_BSP_SPIN
echo ==stepi\\n
thread 2
p/x $pc
stepi
p/x $pc
echo ==bsp-after-step\\n
thread 1
x/gx &SMP_BSP_SPIN
thread 2
delete
watch *(unsigned long *)&SMP_WATCHED
continue
echo ==watch\\n
thread
p/x $pc
p/x &smp_ap_after_store
delete
break *smp_bsp_mid
continue
echo ==bsp-mid\\n
thread
info symbol $pc
shell sleep 2
set var *(unsigned long *)&SMP_RELEASE = 0x600d
delete
break *smp_bsp_done
continue
echo ==bsp-done\\n
thread
info symbol $pc
detach
echo ==detached\\n
",
        elf = smp.display()
    )
}

/// The lines after `==name` up to the next section.
fn section<'a>(gdb: &'a str, name: &str) -> Vec<&'a str> {
    let marker = format!("=={name}");
    gdb.lines()
        .skip_while(|l| l.trim() != marker)
        .skip(1)
        .take_while(|l| !l.starts_with("=="))
        .collect()
}

/// `$N = 0x...` values in order.
fn printed(lines: &[&str]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix('$'))
        .filter_map(|l| l.split_once(" = ").map(|(_, v)| v.trim()))
        .filter_map(report::parse_hex)
        .collect()
}

/// The value of the first `x/gx` line.
fn examined(lines: &[&str]) -> Option<u64> {
    lines
        .iter()
        .find(|l| l.starts_with("0x") && l.contains(':'))
        .and_then(|l| l.split_once(':'))
        .and_then(|(_, v)| v.split_whitespace().next())
        .and_then(report::parse_hex)
}

/// `[Current thread is N (...)]`.
fn current_thread(lines: &[&str]) -> Option<u32> {
    lines.iter().find_map(|l| {
        l.trim()
            .strip_prefix("[Current thread is ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

pub fn check(c: &Check) -> Result<(), String> {
    c.outcome.normal_end()?;
    let path = c.outcome.dir.join("gdb.out");
    let gdb = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let gdb = String::from_utf8_lossy(&gdb).into_owned();
    let fail = |why: String| -> Result<(), String> {
        let tail: Vec<&str> = gdb.lines().rev().take(12).collect();
        Err(format!("{why} (gdb.out ends: {:?})", tail))
    };

    // The breakpoint on processor 1: thread 2 hit it, both threads listed.
    if !gdb.contains("Thread 2 hit Breakpoint 1") {
        return fail("no `Thread 2 hit Breakpoint 1`".into());
    }
    let ap = section(&gdb, "ap-break");
    let threads: Vec<&&str> = ap
        .iter()
        .filter(|l| l.contains("Thread 1.1") || l.contains("Thread 1.2"))
        .collect();
    if threads.len() != 2 || !threads.iter().any(|l| l.trim_start().starts_with("* 2")) {
        return fail(format!("info threads: {threads:?}"));
    }
    match printed(&ap)[..] {
        [pc, here, r12] if pc == here && r12 == 0xA9A9_0000_0000_0012 => {}
        ref v => {
            return fail(format!(
                "thread 2 at the breakpoint: $pc, &smp_ap_here, $r12 = {v:x?}"
            ))
        }
    }

    // Thread 1's own registers, in its own code.
    let bsp = section(&gdb, "bsp");
    if printed(&bsp).first() != Some(&0xB5B5_0000_0000_0013) {
        return fail(format!("thread 1's R13: {bsp:?}"));
    }
    if !bsp.iter().any(|l| l.starts_with("smp_spin")) {
        return fail(format!("thread 1 is not in its spin: {bsp:?}"));
    }
    let rounds_before = examined(&bsp).ok_or("no x/gx of thread 1's rounds")?;

    // stepi on thread 2: one instruction (a NOP); thread 1 stayed stopped meanwhile.
    match printed(&section(&gdb, "stepi"))[..] {
        [before, after] if after == before + 1 => {}
        ref v => return fail(format!("stepi on thread 2: $pc before and after = {v:x?}")),
    }
    let rounds_after = examined(&section(&gdb, "bsp-after-step"))
        .ok_or("no x/gx of thread 1's rounds after the step")?;
    if rounds_after != rounds_before {
        return fail(format!(
            "thread 1 ran during thread 2's step: rounds {rounds_before} -> {rounds_after}"
        ));
    }

    // The watchpoint on processor 1, the breakpoints on the boot processor.
    if !gdb.contains("Thread 2 hit Hardware watchpoint") {
        return fail("no `Thread 2 hit Hardware watchpoint`".into());
    }
    let watch = section(&gdb, "watch");
    if current_thread(&watch) != Some(2) {
        return fail(format!("the watchpoint stop is not thread 2's: {watch:?}"));
    }
    match printed(&watch)[..] {
        [pc, after] if pc == after => {}
        ref v => return fail(format!("watch stop: $pc, &smp_ap_after_store = {v:x?}")),
    }
    for (name, label) in [("bsp-mid", "smp_bsp_mid"), ("bsp-done", "smp_bsp_done")] {
        let s = section(&gdb, name);
        if current_thread(&s) != Some(1) || !s.iter().any(|l| l.starts_with(label)) {
            return fail(format!("{name}: not thread 1 at {label}: {s:?}"));
        }
    }
    if !gdb.contains("==detached") {
        return fail("gdb did not detach".into());
    }

    // The guest: released by gdb, and time stood still for both processors while stopped.
    let cases = report::cases(c.outcome.capture.port(Port::Guest));
    let debug = cases
        .iter()
        .find(|l| l.name == "debug")
        .ok_or("the guest printed no `debug` line")?;
    if debug.status != Status::Pass || debug.field("released") != Some("0x600d") {
        return Err(format!(
            "debug: {:?} {} {:?}",
            debug.status, debug.why, debug.fields
        ));
    }
    for (rounds, gap) in [("bsp_rounds", "bsp_gap"), ("ap_rounds", "ap_gap")] {
        let r = debug.field(rounds).and_then(report::parse_u64).unwrap_or(0);
        let g = debug
            .field(gap)
            .and_then(report::parse_u64)
            .unwrap_or(u64::MAX);
        if r < 2 || g >= MAX_GAP {
            return Err(format!(
                "{rounds}={r} {gap}={g}: the guest's TSC did not stand still while stopped \
                 (must stay under {MAX_GAP})"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_threads_and_values() {
        let out = "==watch\n[Current thread is 2 (Thread 1.2)]\n$5 = 0x1001fa\n$6 = 0x1001fa\n\
                   ==bsp\n$3 = 0xb5b5000000000013\nsmp_spin_round in section .text\n\
                   0x108018 <SMP_BSP_SPIN>:\t0x0000000000008ead\n==end\n";
        let w = section(out, "watch");
        assert_eq!(current_thread(&w), Some(2));
        assert_eq!(printed(&w), vec![0x1001fa, 0x1001fa]);
        assert_eq!(examined(&section(out, "bsp")), Some(0x8ead));
    }
}
