//! The checks of the gdb scenarios (`gdb_tests.rs`): what gdb printed (`gdb.out`, in sections
//! the scripts mark with `echo ==name`) against what the guest reported.

use crate::report::{self, Status};
use crate::scenarios::Check;
use crate::stream::Port;

pub(crate) fn attach_running(c: &Check) -> Result<(), String> {
    let o = c.outcome;
    o.normal_end()?;
    let cases = report::cases(o.capture.port(Port::Guest));
    let attach = cases
        .iter()
        .find(|l| l.name == "attach")
        .ok_or("no attach case line")?;
    if attach.status != Status::Pass || attach.field("released") != Some("0x600d") {
        return Err(format!(
            "the guest was not released by gdb: {:?} {} {:?}",
            attach.status, attach.why, attach.fields
        ));
    }
    let gdb = std::fs::read_to_string(c.outcome.dir.join("gdb.out"))
        .map_err(|e| format!("gdb.out: {e}"))?;
    let stopped = section(&gdb, "stopped");
    let pc = printed_values(&stopped);
    if pc.is_empty() || pc[0] == 0 {
        return Err(format!(
            "gdb did not show where the guest stopped: {stopped:?}"
        ));
    }
    // The break-in lands wherever the guest was: in the spin loop of the `attach` case.
    if !stopped.iter().any(|l| l.contains("attach")) {
        return Err(format!(
            "the guest did not stop in the attach case: {stopped:?}"
        ));
    }
    Ok(())
}

/// The lines of `gdb.out` after `==name` up to the next section.
fn section<'a>(gdb: &'a str, name: &str) -> Vec<&'a str> {
    let marker = format!("=={name}");
    gdb.lines()
        .skip_while(|l| l.trim() != marker)
        .skip(1)
        .take_while(|l| !l.starts_with("=="))
        .collect()
}

/// `$N = 0x...` values in order.
fn printed_values(lines: &[&str]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix('$'))
        .filter_map(|l| l.split_once(" = ").map(|(_, v)| v.trim()))
        .filter_map(report::parse_hex)
        .collect()
}

/// The 0x values after the colon of an `x/4gx` line.
fn examined(lines: &[&str]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.split_once(':').map(|(_, v)| v))
        .flat_map(|v| v.split_whitespace())
        .filter_map(report::parse_hex)
        .collect()
}

fn register_value(lines: &[&str], name: &str) -> Option<u64> {
    lines.iter().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(name)).then(|| w.next().and_then(report::parse_hex))?
    })
}

fn guest_field(c: &Check, case: &str, key: &str) -> Result<String, String> {
    let cases = report::cases(c.outcome.capture.port(Port::Guest));
    let line = cases
        .iter()
        .find(|l| l.name == case)
        .ok_or(format!("the guest printed no `{case}` line"))?;
    if line.status != Status::Pass {
        return Err(format!("{case}: {:?} {}", line.status, line.why));
    }
    line.field(key)
        .map(String::from)
        .ok_or(format!("{case} has no {key}="))
}

/// A guest case's hexadecimal `key=` value.
fn guest_hex(c: &Check, case: &str, key: &str) -> Result<u64, String> {
    let v = guest_field(c, case, key)?;
    report::parse_hex(&v).ok_or(format!("{case} {key}={v} is not hexadecimal"))
}

/// The decimal number after `prefix` in a watchpoint report (`Value = 30464`).
fn gdb_value(lines: &[&str], prefix: &str) -> Option<u64> {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The section printed `p/x $pc` and `p/x &label`, and they are equal: the guest stopped right
/// after the accessing instruction, as an x86 data breakpoint would.
fn stopped_after(gdb: &str, name: &str, label: &str) -> Result<(), String> {
    match printed_values(&section(gdb, name))[..] {
        [pc, at] if pc == at => Ok(()),
        ref v => Err(format!("{name} stop: $pc and &{label} are {v:x?}")),
    }
}

/// The full session on a loaded machine, with gdb's default remote timeout: everything the
/// session checks, and the stub saw gdb retransmit (the late answers did make it time out) and
/// answered each such packet once (`monitor status`).
pub(crate) fn session_loaded(c: &Check) -> Result<(), String> {
    session(c)?;
    let gdb = std::fs::read_to_string(c.outcome.dir.join("gdb.out"))
        .map_err(|e| format!("gdb.out: {e}"))?;
    let count = section(&gdb, "monitor")
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("retransmitted packets answered once: ")
        })
        .and_then(|n| n.trim().parse::<u64>().ok())
        .ok_or("`monitor status` did not report the retransmitted packets")?;
    if count == 0 {
        return Err(
            "gdb retransmitted nothing although the stub's first answers came late: the load did not reach gdb's timeout"
                .into(),
        );
    }
    Ok(())
}

pub(crate) fn session(c: &Check) -> Result<(), String> {
    let path = c.outcome.dir.join("gdb.out");
    let gdb = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let gdb = String::from_utf8_lossy(&gdb).into_owned();
    let fail = |why: String| -> Result<(), String> {
        let tail: Vec<&str> = gdb.lines().rev().take(12).collect();
        Err(format!(
            "{why}\n    gdb.out ends: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    };
    // Break at a guest-kit function, continue, hit it.
    if !gdb.contains("Breakpoint 1, ")
        || !section(&gdb, "checkpoint")
            .iter()
            .any(|l| l.contains("debuggee_checkpoint"))
    {
        return fail("gdb did not stop at breakpoint 1 in debuggee_checkpoint".into());
    }
    // info registers shows what the guest loaded on purpose.
    let regs = section(&gdb, "registers");
    for (name, want) in [
        ("rbx", 0x1111_2222_3333_4444u64),
        ("r12", 0x5555_6666_7777_8888),
        ("r13", 0x0123_4567_89ab_cdef),
    ] {
        if register_value(&regs, name) != Some(want) {
            return fail(format!(
                "info registers: {name} is {:x?}, the guest set {want:#x}",
                register_value(&regs, name)
            ));
        }
    }
    // x/4gx shows the variable; set var changes it; the guest saw the change.
    let before = examined(&section(&gdb, "vars"));
    let after = examined(&section(&gdb, "vars-after"));
    let initial = [
        0x0dec_0de0_0000_0001u64,
        0x0dec_0de0_0000_0002,
        0x0dec_0de0_0000_0003,
        0x0dec_0de0_0000_0004,
    ];
    if before != initial {
        return fail(format!(
            "x/4gx DEBUGGEE_VARS showed {before:x?}, not {initial:x?}"
        ));
    }
    if after.get(1) != Some(&0xfeed_face_cafe) || after[0] != initial[0] {
        return fail(format!("after set var, x/4gx showed {after:x?}"));
    }
    let seen = guest_field(c, "variable", "vars1")?;
    if report::parse_hex(&seen) != Some(0xfeed_face_cafe) {
        return Err(format!(
            "the guest read vars1={seen}, gdb wrote 0xfeedfacecafe"
        ));
    }
    // monitor commands answered.
    let monitor = section(&gdb, "monitor").join("\n");
    // The nested tables are EPT under VMX, NPT under SVM.
    let nested = if crate::scenarios_amd::is_amd_model(c.scenario.cpu_model) {
        "NPT: gpa 0x100000"
    } else {
        "EPT: gpa 0x100000"
    };
    for want in ["cr0", nested, "registers: x86-64"] {
        if !monitor.contains(want) {
            return fail(format!("monitor output lacks {want:?}"));
        }
    }
    // The guest read its own code under a breakpoint and saw the original bytes, then hit it.
    guest_field(c, "code-bytes", "bytes")?;
    if !section(&gdb, "marker")
        .iter()
        .any(|l| l.contains("debuggee_marker"))
    {
        return fail(
            "gdb did not stop at the breakpoint on debuggee_marker after the guest read it".into(),
        );
    }
    // watch stops at the writing instruction (RIP right after the store).
    if !gdb.contains("Hardware watchpoint 6") || !gdb.contains("New value = 4660") {
        return fail("the watchpoint did not report the store of 0x1234".into());
    }
    match printed_values(&section(&gdb, "watch"))[..] {
        [pc, after_store] if pc == after_store => {}
        ref v => {
            return fail(format!(
                "watch stop: $pc and &debuggee_after_store are {v:x?}"
            ))
        }
    }
    // rwatch stops right after the watched load, then right after `add [x], 1` (which reads
    // before it writes); not at the neighbour's load and store or the plain store between.
    let read_value = guest_hex(c, "rwatch", "value")?;
    let read_after = guest_hex(c, "rwatch", "after")?;
    for (stop, at, label, value) in [
        ("rwatch-stop", "rwatch", "debuggee_after_load", read_value),
        (
            "rwatch-add-stop",
            "rwatch-add",
            "debuggee_after_add",
            read_after,
        ),
    ] {
        let lines = section(&gdb, stop);
        if !lines
            .iter()
            .any(|l| l.contains("Hardware read watchpoint 7"))
        {
            return fail(format!("no read watchpoint stop in {stop}: {lines:?}"));
        }
        if gdb_value(&lines, "Value = ") != Some(value) {
            return fail(format!(
                "{stop}: gdb's value is not the {value:#x} the guest read: {lines:?}"
            ));
        }
        stopped_after(&gdb, at, label).or_else(fail)?;
    }
    // awatch stops after the load (the value), then after the store (old and new value).
    let old = guest_hex(c, "awatch", "old")?;
    let new = guest_hex(c, "awatch", "new")?;
    let load = section(&gdb, "awatch-read-stop");
    let store = section(&gdb, "awatch-write-stop");
    let access = "Hardware access (read/write) watchpoint 8";
    if !load.iter().any(|l| l.contains(access)) || gdb_value(&load, "Value = ") != Some(old) {
        return fail(format!(
            "awatch: the load of {old:#x} was not reported: {load:?}"
        ));
    }
    if !store.iter().any(|l| l.contains(access))
        || gdb_value(&store, "Old value = ") != Some(old)
        || gdb_value(&store, "New value = ") != Some(new)
    {
        return fail(format!(
            "awatch: the store of {new:#x} over {old:#x} was not reported: {store:?}"
        ));
    }
    stopped_after(&gdb, "awatch-read", "debuggee_after_access_load").or_else(fail)?;
    stopped_after(&gdb, "awatch-write", "debuggee_after_access_store").or_else(fail)?;
    // stepi advances exactly one instruction (mov eax, 1: 5 bytes).
    match printed_values(&section(&gdb, "stepi"))[..] {
        [a, b] if b == a + 5 => {}
        ref v => {
            return fail(format!(
                "stepi: $pc before and after are {v:x?}, expected +5"
            ))
        }
    }
    // A hardware breakpoint (DR0-DR3) stopped the guest at debuggee_tsc_stop.
    if !gdb.contains("Hardware assisted breakpoint 5")
        || !section(&gdb, "tsc")
            .iter()
            .any(|l| l.contains("debuggee_tsc_stop"))
    {
        return fail("the hardware breakpoint on debuggee_tsc_stop did not stop the guest".into());
    }
    // Time stands still while gdb holds the guest for more than 2 s.
    let stamps: Vec<f64> = section(&gdb, "tsc")
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    match stamps[..] {
        [a, b] if b - a >= 2.0 => {}
        _ => {
            return fail(format!(
                "the stop did not last 2 s of wall time: {stamps:?}"
            ))
        }
    }
    let delta: u64 = guest_field(c, "tsc-stop", "delta")?
        .parse()
        .map_err(|_| "tsc-stop delta= is not a number")?;
    if delta >= 10_000 {
        return Err(format!(
            "the guest's TSC advanced {delta} ticks across a 2 s stop (limit 10000)"
        ));
    }
    // After detach, every case passed and the run ended normally.
    if !gdb.contains("==detached") {
        return fail("gdb did not get to detach".into());
    }
    all_passed(c, 9)
}

/// The debuggee alone passes every case (what gdb relies on).
pub(crate) fn debuggee_alone(c: &Check) -> Result<(), String> {
    all_passed(c, 9)
}

/// The run ended normally and the guest passed exactly `n` cases, failing none.
fn all_passed(c: &Check, n: u64) -> Result<(), String> {
    let summary =
        report::summary(c.outcome.capture.port(Port::Guest)).ok_or("no guest-kit summary")?;
    if summary.failed != 0 || summary.passed != n {
        return Err(format!(
            "expected {n} passed and none failed: {}",
            summary.line
        ));
    }
    c.outcome.normal_end().map(|_| ())
}

/// What `debuggee32` loads at `debuggee32_regs_here`, in gdb's i386 names.
const I386_REGS: [(&str, u64); 7] = [
    ("eax", 0xa0a0_0001),
    ("ebx", 0xb0b0_0002),
    ("ecx", 0xc0c0_0003),
    ("edx", 0xd0d0_0004),
    ("esi", 0x5151_0005),
    ("edi", 0xd1d1_0006),
    ("ebp", 0xbbbb_0007),
];

pub(crate) fn session_i386(c: &Check) -> Result<(), String> {
    let path = c.outcome.dir.join("gdb.out");
    let gdb = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let gdb = String::from_utf8_lossy(&gdb).into_owned();
    let fail = |why: String| -> Result<(), String> {
        let tail: Vec<&str> = gdb.lines().rev().take(12).collect();
        Err(format!(
            "{why}\n    gdb.out ends: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    };
    // gdb broke at the label, and info registers shows the i386 set with the guest's values.
    if !gdb.contains("Breakpoint 1, ") {
        return fail("gdb did not stop at breakpoint 1 (debuggee32_regs_here)".into());
    }
    let regs = section(&gdb, "registers");
    for (name, want) in I386_REGS {
        if register_value(&regs, name) != Some(want) {
            return fail(format!(
                "info registers: {name} is {:x?}, the guest set {want:#x}",
                register_value(&regs, name)
            ));
        }
    }
    if register_value(&regs, "rax").is_some() || register_value(&regs, "r8").is_some() {
        return fail("info registers shows 64-bit registers, not the i386 set".into());
    }
    let stack_top = printed_values(&regs);
    if stack_top.len() != 1 || register_value(&regs, "esp") != Some(stack_top[0]) {
        return fail(format!(
            "esp is {:x?}, the guest's stack top is {stack_top:x?}",
            register_value(&regs, "esp")
        ));
    }
    if !regs
        .iter()
        .any(|l| l.starts_with("eip") && l.contains("<debuggee32_regs_here>"))
    {
        return fail("eip is not at debuggee32_regs_here".into());
    }
    if !section(&gdb, "monitor")
        .iter()
        .any(|l| l.contains("registers: i386"))
    {
        return fail("monitor status does not say the registers are i386".into());
    }
    // A write watchpoint in 32-bit protected mode (paging off) stops after the store.
    let watch = section(&gdb, "watch-stop");
    if !watch.iter().any(|l| l.contains("Hardware watchpoint 4"))
        || gdb_value(&watch, "Old value = ") != Some(0x1111_0000)
        || gdb_value(&watch, "New value = ") != Some(0xcafe_0001)
    {
        return fail(format!(
            "watch did not report the store of 0xcafe0001: {watch:?}"
        ));
    }
    stopped_after(&gdb, "watch", "debuggee32_after_store").or_else(fail)?;
    // x/2wx reads what the guest wrote; set var changes a word and the guest reads it back.
    let before = examined(&section(&gdb, "vars"));
    let after = examined(&section(&gdb, "vars-after"));
    if before != [0xcafe_0001, 0xcafe_0002] || after != [0xcafe_0001, 0x600d_600d] {
        return fail(format!(
            "x/2wx DEBUGGEE32_VARS showed {before:x?}, then {after:x?} after set var"
        ));
    }
    if guest_hex(c, "variable", "vars1")? != 0x600d_600d {
        return Err("the guest did not read the 0x600d600d gdb wrote".into());
    }
    // stepi runs exactly `mov eax, 1` (5 bytes).
    match printed_values(&section(&gdb, "stepi"))[..] {
        [a, b, 1] if b == a + 5 => {}
        ref v => {
            return fail(format!(
                "stepi: $pc before, after and $eax are {v:x?}, expected +5 and 1"
            ))
        }
    }
    // After detach the guest finished its three cases.
    if !gdb.contains("==detached") {
        return fail("gdb did not get to detach".into());
    }
    all_passed(c, 3)
}

/// The 32-bit debuggee alone passes its three cases.
pub(crate) fn debuggee32_alone(c: &Check) -> Result<(), String> {
    all_passed(c, 3)
}

/// The `step` case alone: the guest's own checks pass (interrupts land after the shadows).
pub(crate) fn step_alone(c: &Check) -> Result<(), String> {
    guest_field(c, "step", "irqs")?;
    all_passed(c, 1)
}

/// What the guest reports in its `step` line, compared between runs.
const STEP_FIELDS: [&str; 8] = [
    "irqs", "irq0", "mark0", "irq1", "mark1", "pushed", "popped", "cpuid",
];

/// Where one `stepi` in a section started and landed: the symbols `info symbol $pc` printed.
fn symbols_at(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.split_once(" in section "))
        .map(|(sym, _)| sym.trim().to_string())
        .collect()
}

/// `gdb-step-mtf`: gdb single-stepped `sti`, `mov ss`, `pushfq`, `popfq` and CPUID on tigerlake.
/// The oracle is outside Vigil: what the guest itself observed (where its pending interrupts
/// landed, the flags it pushed and loaded, CPUID's answer) must equal the same case run bare,
/// and each `stepi` must land exactly one instruction further (the label after it). A stepped
/// PUSHFQ that pushed TF would mean the step used RFLAGS.TF; Vigil's own account (`monitor
/// status`, its start-up line) must say the monitor trap flag too.
pub(crate) fn step_mtf(c: &Check) -> Result<(), String> {
    let path = c.outcome.dir.join("gdb.out");
    let gdb = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let gdb = String::from_utf8_lossy(&gdb).into_owned();
    let fail = |why: String| -> Result<(), String> {
        let tail: Vec<&str> = gdb.lines().rev().take(12).collect();
        Err(format!(
            "{why}\n    gdb.out ends: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    };
    // The guest saw what it sees bare.
    let bare = c
        .baseline
        .ok_or("the gdb-step-bare outcome this check compares with is missing")?;
    let bare_check = Check {
        scenario: c.scenario,
        outcome: bare,
        baseline: None,
    };
    for key in STEP_FIELDS {
        let stepped = guest_field(c, "step", key)?;
        let alone = guest_field(&bare_check, "step", key)?;
        if stepped != alone {
            return Err(format!(
                "single-stepped, the guest observed {key}={stepped}; bare it observes \
                 {key}={alone}"
            ));
        }
    }
    // Each stepi went exactly one instruction.
    for (name, path) in [
        (
            "sti",
            &["debuggee_step_sti", "debuggee_step_sti_shadow"][..],
        ),
        (
            "movss",
            &[
                "debuggee_step_sti2",
                "debuggee_step_movss",
                "debuggee_step_movss_shadow",
            ][..],
        ),
        (
            "pushf",
            &["debuggee_step_pushf", "debuggee_step_after_pushf"][..],
        ),
        (
            "popf",
            &["debuggee_step_popf", "debuggee_step_after_popf"][..],
        ),
        (
            "cpuid",
            &["debuggee_step_cpuid", "debuggee_step_after_cpuid"][..],
        ),
    ] {
        let seen = symbols_at(&section(&gdb, name));
        if seen != path {
            return fail(format!(
                "stepping in section {name}: gdb stopped at {seen:?}, expected {path:?}"
            ));
        }
    }
    // gdb's view of the registers after a step agrees with the guest's.
    let popf = printed_values(&section(&gdb, "popf"));
    let popped = guest_hex(c, "step", "popped")?;
    if popf.first().map(|f| f & 0xFFFF_FFFF) != Some(popped & 0xFFFF_FFFF) {
        return fail(format!(
            "after stepping popfq gdb shows eflags {popf:x?}, the guest read {popped:#x}"
        ));
    }
    let cpuid = guest_field(c, "step", "cpuid")?;
    let eax = cpuid
        .split(':')
        .next()
        .and_then(report::parse_hex)
        .ok_or(format!("step cpuid={cpuid} is not eax:ebx:ecx:edx"))?;
    if printed_values(&section(&gdb, "cpuid")).first() != Some(&eax) {
        return fail(format!(
            "after stepping cpuid gdb shows rax {:x?}, the guest read eax={eax:#x}",
            printed_values(&section(&gdb, "cpuid"))
        ));
    }
    // The mechanism: the monitor trap flag, by Vigil's own account as well.
    if !section(&gdb, "monitor")
        .iter()
        .any(|l| l.contains("single-step: monitor trap flag"))
    {
        return fail("monitor status does not name the monitor trap flag as the step".into());
    }
    if !c
        .outcome
        .capture
        .com2()
        .iter()
        .any(|l| l.contains("single-step by MTF"))
    {
        return Err("Vigil's stub did not start with `single-step by MTF`".into());
    }
    if !gdb.contains("==detached") {
        return fail("gdb did not get to detach".into());
    }
    all_passed(c, 1)
}

pub(crate) fn vigil_panic(c: &Check) -> Result<(), String> {
    let com2 = c.outcome.capture.com2();
    let has = |s: &str| com2.iter().any(|l| l.contains(s));
    for want in [
        "==== Vigil panic: panicked at vigil-core/src/debugger/vcpu.rs",
        "backtrace:",
        "guest state (current VMCS):",
        "run ended: failed: Vigil panic",
    ] {
        if !has(want) {
            return Err(format!("COM2 lacks {want:?}"));
        }
    }
    let vigil = crate::layout::Layout::discover().bare_bin(crate::build::VIGIL);
    let frames = crate::symbolize::vigil_backtrace(&com2, &vigil)
        .ok_or("no backtrace addresses on COM2")??;
    let text = frames.join("\n");
    // The panic comes from the debugger (its `monitor` command), called from the exit loop,
    // called from Vigil's boot code.
    for want in ["vigil_core::debugger::", "vigil_core::run::", "vigil::boot"] {
        if !text.contains(want) {
            return Err(format!(
                "the symbolized backtrace has no {want} frame:\n{text}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gdb_tests::{script, script_i386};

    const OUT: &str = "Breakpoint 1, 0x0000000000100abc in debuggee_checkpoint ()
==checkpoint
debuggee_checkpoint + 4 in section .text
==registers
rax            0x0                 0
rbx            0x1111222233334444  1229801703532086340
r12            0x5555666677778888  6148914691236517000
==vars
0x105000 <DEBUGGEE_VARS>:\t0x0dec0de000000001\t0x0dec0de000000002
0x105010 <DEBUGGEE_VARS+16>:\t0x0dec0de000000003\t0x0dec0de000000004
==watch
$1 = 0x100f10
$2 = 0x100f10
==stepi
$3 = 0x100f20
$4 = 0x100f25
==tsc
1700000000.100
1700000002.700
";

    #[test]
    fn sections_and_values() {
        assert_eq!(examined(&section(OUT, "vars")).len(), 4);
        assert_eq!(
            register_value(&section(OUT, "registers"), "rbx"),
            Some(0x1111_2222_3333_4444)
        );
        assert_eq!(
            printed_values(&section(OUT, "stepi")),
            vec![0x100f20, 0x100f25]
        );
        assert_eq!(section(OUT, "tsc").len(), 2);
        assert!(section(OUT, "checkpoint")[0].contains("debuggee_checkpoint"));
    }

    const WATCH_OUT: &str = "==rwatch-stop

Hardware read watchpoint 7: *(unsigned long *)&DEBUGGEE_READ

Value = 1592590337
0x00000000001001ce in debuggee_after_load ()
==rwatch
$3 = 0x1001ce
$4 = 0x1001ce
==awatch-write-stop

Hardware access (read/write) watchpoint 8: *(unsigned long *)&DEBUGGEE_ACCESSED

Old value = 30464
New value = 30481
==awatch-write
$9 = 0x1001f0
$10 = 0x1001f1
";

    #[test]
    fn watchpoint_reports() {
        let read = section(WATCH_OUT, "rwatch-stop");
        assert_eq!(gdb_value(&read, "Value = "), Some(0x5eed_0001));
        let write = section(WATCH_OUT, "awatch-write-stop");
        assert_eq!(gdb_value(&write, "Old value = "), Some(0x7700));
        assert_eq!(gdb_value(&write, "New value = "), Some(0x7711));
        assert_eq!(gdb_value(&write, "Value = "), None);
        assert!(stopped_after(WATCH_OUT, "rwatch", "debuggee_after_load").is_ok());
        assert!(stopped_after(WATCH_OUT, "awatch-write", "debuggee_after_access_store").is_err());
    }

    #[test]
    fn step_sections() {
        let out = "==movss
debuggee_step_sti2 in section .text
debuggee_step_movss in section .text
debuggee_step_movss_shadow in section .text
==popf
debuggee_step_popf in section .text
debuggee_step_after_popf in section .text
$1 = 0x400c3
";
        assert_eq!(
            symbols_at(&section(out, "movss")),
            vec![
                "debuggee_step_sti2",
                "debuggee_step_movss",
                "debuggee_step_movss_shadow"
            ]
        );
        assert_eq!(printed_values(&section(out, "popf")), vec![0x400c3]);
        let s = crate::gdb_tests::step_script(std::path::Path::new("/t/debuggee"));
        for label in ["sti", "sti2", "pushf", "popf", "cpuid"] {
            assert!(
                s.contains(&format!("break *debuggee_step_{label}\n")),
                "{label}"
            );
        }
    }

    #[test]
    fn i386_script_sets_the_architecture_before_connecting() {
        let s = script_i386(std::path::Path::new("/t/debuggee32"));
        let arch = s.find("set architecture i386\n").unwrap();
        let connect = s.find("target remote localhost:{PORT}\n").unwrap();
        assert!(arch < connect);
        assert!(s.contains("x/2wx &DEBUGGEE32_VARS\n"));
    }

    #[test]
    fn script_names_the_elf_and_keeps_the_port_placeholder() {
        let s = script(std::path::Path::new("/t/debuggee"));
        assert!(s.contains("file /t/debuggee\n"));
        assert!(s.contains("target remote localhost:{PORT}\n"));
        assert!(s.contains("set var {unsigned long}((char *)&DEBUGGEE_VARS + 8) = 0xfeedfacecafe"));
    }
}
