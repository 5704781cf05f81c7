//! The emulator-side oracle: after a run under Vigil, the machine's physical memory as Bochs
//! itself holds it — read through Bochs' internal debugger, never through Vigil — is compared
//! byte for byte with the code and read-only data of Vigil's ELF, and Bochs' own log says whether
//! the processor ever left VMX (a reset) or entered SMM after Vigil started.
//!
//! How the debugger gets control at the end of every kind of run (Bochs 2.7 and 3.0):
//! - Vigil ends a run through `vigil::power::power_off`: a physical-address breakpoint (`pb`) on
//!   it, from the ELF's symbol table, stops the emulator before the shutdown port ends it (the
//!   port's `Shutdown` sequence is a Bochs fatal exit that no debugger setting intercepts).
//! - A timeout, or a run that hangs after its last line: xtask sends SIGINT, which the debugger
//!   turns into a stop at the next instruction boundary (both versions).
//! - Guest code that runs after a reset (the attacker's warm-boot vector) executes the magic
//!   breakpoint `xchg bx, bx` (`magic_break: enabled=1`) before anything else.
//! - A stop at Vigil's entry point marks the tick from which a reset or an SMM entry in Bochs'
//!   log is something the guest caused.
//!
//! Ends that are fatal in Bochs and pass no breakpoint (the guest writing the shutdown port or
//! entering ACPI S5 behind Vigil's back, a Bochs panic) leave no memory view; the oracle then
//! reports that and what Bochs logged: the fatal message and the CPU state Bochs prints when it
//! exits ("CPU is in long mode (active, vmx guest)"). Either way the run fails the oracle.
//!
//! Every stop runs the same block of commands (`ptime`, `creg`, `r`, `xp` over each segment);
//! the oracle judges the last block that holds a memory view.
//!
//! Memory is read with `xp` (physical, so it does not depend on whose paging is active at the
//! stop). Bochs applies its A20 gate to debugger reads as it does to the CPU's: with A20 masked
//! a read of an odd megabyte shows the even one below it. The comparison says so when it fails.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use crate::oracle_image::Image;

/// How many stops after Vigil's entry the command file serves before it quits. The end needs
/// one; magic breakpoints of guest code that runs after a reset and a timeout's SIGINT may add
/// a few.
const STOPS: usize = 6;

/// What one run's oracle needs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub image: Image,
}

impl Plan {
    pub fn for_vigil(elf: &Path) -> Result<Plan, String> {
        let data = std::fs::read(elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
        let image =
            crate::oracle_image::parse(&data).map_err(|e| format!("{}: {e}", elf.display()))?;
        if image.power_off.is_none() {
            return Err(format!(
                "{}: no `vigil::power::power_off` symbol: the oracle cannot stop before Vigil \
                 powers off",
                elf.display()
            ));
        }
        Ok(Plan { image })
    }

    /// The debugger command file.
    pub fn commands(&self) -> String {
        let mut c = String::new();
        // Breakpoint 1: Vigil's entry; 2: its power-off.
        let _ = writeln!(c, "pb {:#x}", self.image.entry);
        if let Some(off) = self.image.power_off {
            let _ = writeln!(c, "pb {off:#x}");
        }
        c.push_str("continue\nptime\nd 1\n");
        for _ in 0..STOPS {
            c.push_str("continue\n");
            c.push_str(&self.block());
        }
        c.push_str("quit\n");
        c
    }

    fn block(&self) -> String {
        let mut c = String::from("ptime\ncreg\nr\n");
        for s in &self.image.segments {
            let qwords = s.bytes.len().div_ceil(8);
            let _ = writeln!(c, "xp /{qwords}gx {:#x}", s.paddr);
        }
        c
    }
}

/// The bochsrc of an oracle run: the magic breakpoint on (guest code after a reset uses it).
pub fn bochsrc(rc: &str) -> String {
    let mut out = rc.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(
        "# The emulator-side oracle: `xchg bx, bx` stops in the debugger (oracle.rs).\n\
         magic_break: enabled=1\n",
    );
    out
}

/// Runs that carry an oracle, by run directory: registered before `bochs::run`, which takes it.
static PLANS: Mutex<Vec<(PathBuf, Plan)>> = Mutex::new(Vec::new());

pub fn register(dir: &Path, plan: Plan) {
    PLANS.lock().unwrap().push((dir.to_path_buf(), plan));
}

pub fn hookup_for(dir: &Path) -> Option<Plan> {
    let mut all = PLANS.lock().unwrap();
    let i = all.iter().position(|(d, _)| d == dir)?;
    Some(all.swap_remove(i).1)
}

/// Register the oracle for a scenario that wants it: the hostile guest under Vigil.
pub fn register_for(layout: &crate::layout::Layout, s: &crate::scenarios::Scenario, dir: &Path) {
    if crate::scenarios_hostile::wants_oracle(s) {
        match Plan::for_vigil(&layout.bare_bin(crate::build::VIGIL)) {
            Ok(plan) => register(dir, plan),
            // The check finds no oracle output and reports this.
            Err(e) => {
                let _ = std::fs::write(dir.join(ORACLE_ERROR), e);
            }
        }
    }
}

const ORACLE_ERROR: &str = "oracle-error.txt";

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// SIGINT to Bochs itself: its debugger stops the simulation and runs the next commands.
pub fn interrupt(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 1 {
            // SAFETY: plain syscall; a process that is gone gives ESRCH.
            unsafe {
                kill(pid, 2);
            }
        }
    }
}

/// Why the debugger stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Breakpoint(u64),
    Magic,
    /// No reason printed: SIGINT.
    Interrupt,
    Other(String),
}

/// One debugger stop and what it saw.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    pub reason: Option<Reason>,
    pub tick: u64,
    pub rip: Option<u64>,
    pub cr0: Option<u64>,
    pub cr4: Option<u64>,
    pub efer: Option<u64>,
    /// Physical address → qword, from `xp`.
    pub memory: BTreeMap<u64, u64>,
}

impl Stop {
    pub fn describe(&self) -> String {
        let why = match &self.reason {
            Some(Reason::Breakpoint(a)) => format!("breakpoint at {a:#x}"),
            Some(Reason::Magic) => "magic breakpoint (xchg bx, bx)".to_string(),
            Some(Reason::Interrupt) | None => "SIGINT".to_string(),
            Some(Reason::Other(s)) => s.clone(),
        };
        let mode = match (self.cr0, self.cr4) {
            (Some(cr0), Some(cr4)) => format!(
                " CR0={cr0:#x} CR4={cr4:#x}{}{}",
                if cr0 & 1 == 0 { " (real mode)" } else { "" },
                if cr4 & (1 << 13) == 0 {
                    " (CR4.VMXE clear: not in VMX operation)"
                } else {
                    ""
                }
            ),
            _ => String::new(),
        };
        format!(
            "t={} {why} rip={}{mode}",
            self.tick,
            self.rip.map_or("?".into(), |r| format!("{r:#x}"))
        )
    }

    fn byte(&self, paddr: u64) -> Option<u8> {
        let q = self.memory.get(&(paddr & !7))?;
        Some((q >> ((paddr & 7) * 8)) as u8)
    }
}

fn hex(s: &str) -> Option<u64> {
    let s = s.trim().trim_end_matches(':');
    let s = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(&s.replace('_', ""), 16).ok()
}

/// Split the debugger's output into stops: each `ptime: N` line opens the block of one stop;
/// the stop's reason is the last reason line before it.
pub fn parse_stops(out: &str) -> Vec<Stop> {
    let mut stops: Vec<Stop> = Vec::new();
    let mut pending: Option<Reason> = None;
    for line in out.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("ptime: ") {
            stops.push(Stop {
                reason: Some(pending.take().unwrap_or(Reason::Interrupt)),
                tick: rest.trim().parse().unwrap_or(0),
                ..Stop::default()
            });
            continue;
        }
        if let Some(rest) = l.strip_prefix("(0) ") {
            if let Some(bp) = rest.strip_prefix("Breakpoint ") {
                // "Breakpoint 2, 0x000000000401e290 in ?? ()"
                let addr = bp.split_whitespace().nth(1).and_then(hex);
                pending = Some(Reason::Breakpoint(addr.unwrap_or(0)));
            } else if rest.starts_with("Magic breakpoint") {
                pending = Some(Reason::Magic);
            } else if rest.starts_with("Caught") {
                pending = Some(Reason::Other(rest.to_string()));
            }
            continue;
        }
        let Some(stop) = stops.last_mut() else {
            continue;
        };
        if let Some(v) = l.strip_prefix("CR0=") {
            stop.cr0 = v.split(':').next().and_then(hex);
        } else if let Some(v) = l.strip_prefix("CR4=") {
            stop.cr4 = v.split(':').next().and_then(hex);
        } else if let Some(v) = l.strip_prefix("EFER=") {
            stop.efer = v.split(':').next().and_then(hex);
        } else if let Some(v) = l.strip_prefix("rip: ") {
            stop.rip = hex(v);
        } else if l.starts_with("0x") && l.contains(">:") {
            // "0x0000000004000000 <bogus+       0>:	0xe85250d6	0x17adaf1200000018"
            let Some(addr) = l.split_whitespace().next().and_then(hex) else {
                continue;
            };
            let Some((_, values)) = l.split_once(">:") else {
                continue;
            };
            for (i, v) in values.split_whitespace().enumerate() {
                if let Some(v) = hex(v) {
                    stop.memory.insert(addr + 8 * i as u64, v);
                }
            }
        }
    }
    stops
}

/// What Bochs' log says about the run.
#[derive(Clone, Debug, Default)]
pub struct LogFacts {
    /// (tick, line) of every machine reset.
    pub resets: Vec<(u64, String)>,
    /// Ticks of every SMM entry.
    pub smm: Vec<u64>,
    /// The CPU state Bochs printed when it exited ("CPU is in …").
    pub final_state: Option<String>,
    /// Panic-level lines (the fatal exit's reason among them).
    pub fatal: Vec<String>,
}

fn tick_of(line: &str) -> Option<u64> {
    line.get(..11)?.parse().ok()
}

pub fn log_facts(log: &str) -> LogFacts {
    let mut f = LogFacts::default();
    for line in log.lines() {
        let Some(tick) = tick_of(line) else { continue };
        let level = line.as_bytes().get(11).copied();
        let msg = line.split_once("] ").map_or(line, |(_, m)| m).trim();
        if msg.contains("bx_pc_system_c::Reset(") {
            f.resets.push((tick, msg.to_string()));
        } else if msg.starts_with("Enter to System Management Mode") {
            f.smm.push(tick);
        } else if msg.starts_with("CPU is in ") {
            f.final_state = Some(format!("t={tick}: {msg}"));
        }
        if level == Some(b'p') {
            f.fatal.push(format!("t={tick}: {msg}"));
        }
    }
    f
}

/// The oracle's findings on one run.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Facts worth printing with the result.
    pub facts: Vec<String>,
    /// Each a reason the run fails the oracle.
    pub failures: Vec<String>,
}

impl Verdict {
    pub fn result(&self) -> Result<(), String> {
        if self.failures.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "emulator-side oracle: {} ({})",
                self.failures.join("; "),
                self.facts.join("; ")
            ))
        }
    }
}

/// Judge a finished run from its directory (bochs.out holds the debugger's output, bochs.log
/// Bochs' log) against `image`.
pub fn judge_dir(dir: &Path, image: &Image) -> Verdict {
    let out = std::fs::read(dir.join("bochs.out")).unwrap_or_default();
    let log = std::fs::read(dir.join("bochs.log")).unwrap_or_default();
    judge(
        image,
        &parse_stops(&String::from_utf8_lossy(&out)),
        &log_facts(&String::from_utf8_lossy(&log)),
    )
}

/// The oracle's verdict on a run under Vigil, from the files it left, with the ELF of the
/// build that ran. An error file from registration means the oracle could not be set up.
pub fn verify(dir: &Path) -> Result<Verdict, String> {
    if let Ok(e) = std::fs::read_to_string(dir.join(ORACLE_ERROR)) {
        return Err(format!("emulator-side oracle not set up: {e}"));
    }
    let layout = crate::layout::Layout::discover();
    let plan = Plan::for_vigil(&layout.bare_bin(crate::build::VIGIL))?;
    Ok(judge_dir(dir, &plan.image))
}

pub fn judge(image: &Image, stops: &[Stop], log: &LogFacts) -> Verdict {
    let mut v = Verdict::default();
    // The first stop is Vigil's entry (breakpoint 1).
    let entry = stops
        .first()
        .filter(|s| s.reason == Some(Reason::Breakpoint(image.entry)));
    let t0 = match entry {
        Some(s) => s.tick,
        None => {
            v.failures.push(format!(
                "Vigil's entry point {:#x} (from its ELF) was never reached",
                image.entry
            ));
            u64::MAX
        }
    };
    if t0 != u64::MAX {
        v.facts.push(format!("Vigil entered at t={t0}"));
    }
    let resets: Vec<&(u64, String)> = log.resets.iter().filter(|(t, _)| *t > t0).collect();
    if let Some((t, line)) = resets.first() {
        v.failures.push(format!(
            "the machine was reset {} time(s) after Vigil started, the first at t={t} ({line}): \
             the processor left VMX",
            resets.len()
        ));
    }
    let smm: Vec<u64> = log.smm.iter().copied().filter(|t| *t > t0).collect();
    if let Some(t) = smm.first() {
        v.failures.push(format!(
            "the processor entered SMM {} time(s) after Vigil started, the first at t={t}: code \
             ran outside VMX non-root with all of memory",
            smm.len()
        ));
    }
    let views: Vec<&Stop> = stops
        .iter()
        .skip(entry.map_or(0, |_| 1))
        .filter(|s| !s.memory.is_empty())
        .collect();
    for s in stops.iter().skip(1) {
        v.facts.push(format!("stop {}", s.describe()));
    }
    if let Some(state) = &log.final_state {
        v.facts.push(format!("at exit: {state}"));
    }
    for f in log.fatal.iter().take(3) {
        v.facts.push(format!("bochs: {f}"));
    }
    let Some(last) = views.last() else {
        v.failures.push(
            "no memory view at the end: the run passed no breakpoint, magic breakpoint or \
             SIGINT stop (a fatal Bochs exit: the guest reached the shutdown port or ACPI S5 \
             itself, or Bochs panicked)"
                .to_string(),
        );
        return v;
    };
    let at_power_off = image
        .power_off
        .is_some_and(|p| last.reason == Some(Reason::Breakpoint(p)));
    if !at_power_off {
        v.failures.push(format!(
            "the run did not end through Vigil's power-off; last stop: {}",
            last.describe()
        ));
    }
    for s in &image.segments {
        let mut differ = 0usize;
        let mut first = Vec::new();
        let mut missing = 0usize;
        for (i, &want) in s.bytes.iter().enumerate() {
            let at = s.paddr + i as u64;
            match last.byte(at) {
                Some(got) if got == want => {}
                Some(got) => {
                    differ += 1;
                    if first.len() < 4 {
                        first.push(format!("{at:#x}: {got:#04x} (ELF {want:#04x})"));
                    }
                }
                None => missing += 1,
            }
        }
        if missing > 0 {
            v.failures.push(format!(
                "{} of the {} bytes of Vigil's {} at {:#x} were not read from the emulator",
                missing,
                s.bytes.len(),
                s.kind(),
                s.paddr
            ));
        } else if differ > 0 {
            let a20 = if s.paddr & (1 << 20) != 0 || s.end() & (1 << 20) != 0 {
                " (the range includes an odd megabyte: with A20 masked the emulator shows the one \
                 below)"
            } else {
                ""
            };
            v.failures.push(format!(
                "{differ} byte(s) of Vigil's {} [{:#x}-{:#x}) differ from its ELF at t={}, first \
                 {}{a20}",
                s.kind(),
                s.paddr,
                s.end(),
                last.tick,
                first.join(", ")
            ));
        } else {
            v.facts.push(format!(
                "Vigil's {} [{:#x}-{:#x}) equals its ELF at t={}",
                s.kind(),
                s.paddr,
                s.end(),
                last.tick
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle_image::Segment;

    fn image() -> Image {
        Image {
            segments: vec![Segment {
                paddr: 0x4000000,
                vaddr: 0x4000000,
                bytes: vec![0xd6, 0x50, 0x52, 0xe8, 0, 0, 0, 0, 0x18, 0, 0, 0],
                executable: true,
            }],
            entry: 0x4000018,
            power_off: Some(0x401e290),
        }
    }

    /// The debugger's output as Bochs 2.7 printed it (3.0 prints the same lines).
    const OUT: &str = "Next at t=0\n\
        (0) [0x0000fffffff0] f000:fff0 (unk. ctxt): jmpf 0xf000:e05b          ; ea5be000f0\n\
        (0) Breakpoint 1, 0x0000000004000018 in ?? ()\n\
        Next at t=100\n\
        ptime: 100\n\
        (0) Breakpoint 2, 0x000000000401e290 in ?? ()\n\
        Next at t=258962145\n\
        (0) [0x00000401e290] 0008:000000000401e290 (unk. ctxt): push rbp                  ; 55\n\
        ptime: 258962145\n\
        CR0=0xe0010031: PG CD NW ac WP NE ET ts em mp PE\n\
        CR4=0x00042020: pks cet pke smap smep keylock OSXSAVE pcid fsgsbase smx VMX la57\n\
        EFER=0x00000d00: ffxsr NXE LMA LME sce\n\
        rip: 00000000_0401e290\n\
        [bochs]:\n\
        0x0000000004000000 <bogus+       0>:\t0xe85250d6\t0x18\n";

    #[test]
    fn parses_stops_registers_and_memory() {
        let stops = parse_stops(OUT);
        assert_eq!(stops.len(), 2);
        assert_eq!(stops[0].reason, Some(Reason::Breakpoint(0x4000018)));
        assert_eq!(stops[0].tick, 100);
        let s = &stops[1];
        assert_eq!(s.reason, Some(Reason::Breakpoint(0x401e290)));
        assert_eq!(s.rip, Some(0x401e290));
        assert_eq!(s.cr4, Some(0x42020));
        assert_eq!(s.efer, Some(0xd00));
        assert_eq!(s.byte(0x4000000), Some(0xd6));
        assert_eq!(s.byte(0x4000003), Some(0xe8));
        assert_eq!(s.byte(0x4000008), Some(0x18));
        assert_eq!(s.byte(0x4000010), None);
    }

    #[test]
    fn an_intact_image_at_power_off_passes() {
        let v = judge(&image(), &parse_stops(OUT), &LogFacts::default());
        assert!(v.result().is_ok(), "{v:?}");
    }

    #[test]
    fn a_changed_byte_fails_and_is_located() {
        let out = OUT.replace("0xe85250d6", "0xe85250d7");
        let v = judge(&image(), &parse_stops(&out), &LogFacts::default());
        let e = v.result().unwrap_err();
        assert!(e.contains("1 byte(s) of Vigil's code"), "{e}");
        assert!(e.contains("0x4000000: 0xd7 (ELF 0xd6)"), "{e}");
    }

    #[test]
    fn resets_and_smm_after_vigil_started_fail() {
        let log = "00000000000i[SYS   ] bx_pc_system_c::Reset(HARDWARE) called\n\
                   00000000050i[CPU0  ] Enter to System Management Mode\n\
                   00000000500i[SYS   ] bx_pc_system_c::Reset(SOFTWARE) called\n\
                   00000000600i[CPU0  ] Enter to System Management Mode\n\
                   00000000700i[CPU0  ] CPU is in real mode (active)\n";
        let v = judge(&image(), &parse_stops(OUT), &log_facts(log));
        let e = v.result().unwrap_err();
        assert!(e.contains("reset 1 time(s)"), "{e}");
        assert!(e.contains("t=500"), "{e}");
        assert!(e.contains("SMM 1 time(s)"), "{e}");
        assert!(e.contains("CPU is in real mode"), "{e}");
    }

    #[test]
    fn no_view_and_no_power_off_fail() {
        let only_entry: String = OUT.lines().take(5).map(|l| format!("{l}\n")).collect();
        let v = judge(&image(), &parse_stops(&only_entry), &LogFacts::default());
        assert!(v.result().unwrap_err().contains("no memory view"));
        let magic = OUT.replace(
            "Breakpoint 2, 0x000000000401e290 in ?? ()",
            "Magic breakpoint",
        );
        let v = judge(&image(), &parse_stops(&magic), &LogFacts::default());
        assert!(v
            .result()
            .unwrap_err()
            .contains("did not end through Vigil's power-off"));
    }

    #[test]
    fn the_command_file_breaks_at_entry_and_power_off_then_dumps_every_stop() {
        let plan = Plan { image: image() };
        let c = plan.commands();
        assert!(c.starts_with("pb 0x4000018\npb 0x401e290\ncontinue\nptime\nd 1\n"));
        assert_eq!(c.matches("xp /2gx 0x4000000\n").count(), STOPS);
        assert!(c.ends_with("quit\n"));
    }
}
