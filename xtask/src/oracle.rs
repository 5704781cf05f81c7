//! The emulator-side oracle: after a run under Vigil, the machine's memory as Bochs itself holds
//! it — read through Bochs' internal debugger, never through Vigil — is compared byte for byte
//! with the code and read-only data of Vigil's ELF, and Bochs' own log says whether the processor
//! ever left VMX or SVM (a reset) or entered SMM after Vigil started.
//!
//! **Where Vigil is.** Vigil copies itself to the top of RAM at boot and runs at a fixed virtual
//! address, so its ELF gives virtual addresses only. The oracle learns the physical copy from
//! the emulator: at Vigil's first VM exit (Bochs' VM-exit breakpoint, which serves SVM's #VMEXIT
//! too), which is by construction in Vigil's context — VMX root, Vigil's host CR3 just loaded
//! from the VMCS; under SVM the host outside the guest with GIF clear, which Vigil keeps clear
//! from enabling SVM on and no guest can clear (CLGI is intercepted) — Bochs' `info tab`
//! prints the translation of Vigil's window through the page tables in use. The oracle then
//! checks that this physical range is absent from the memory map the guest was given (the
//! hostile guest prints it on COM1), and reads it with `xp` (physical) at the first exit and at
//! the end.
//!
//! **Why the debugger is driven interactively** (oracle_drive.rs writes commands to Bochs' stdin
//! and reads its answers) rather than from a fixed command file: Vigil's window
//! (0xFFFF_FFFF_8000_0000 up) is also where a 64-bit guest may put its own code — Linux maps its
//! kernel there, and a hostile guest can execute at any address it likes. A linear breakpoint on
//! Vigil's end function therefore also stops in guest context, as often as the guest wants. A
//! fixed command file serves a fixed number of stops, so a guest could use them up and end the
//! observation, and it cannot ask a follow-up question whose address it learns at the stop. The
//! driver asks at every stop whether the processor is in Vigil's context (`show
//! "cpu0.VMX.in_vmx_guest"`, or `cpu0.SVM.in_svm_guest` and `cpu0.SVM.gif`: Bochs' own state,
//! not Vigil's), lets guest-context stops go, and
//! reads memory at the physical addresses the emulator's page walk gave.
//!
//! How the debugger gets control at the end of every kind of run (Bochs 2.7 and 3.0):
//! - Vigil ends every run through `vigil::power::finish`: a linear breakpoint on it stops the
//!   emulator before the shutdown port ends it; the stop counts only in VMX root.
//! - A timeout, or a run that hangs after its last line: xtask sends SIGINT, which the debugger
//!   turns into a stop at the next instruction boundary.
//! - Guest code that runs after a reset (the attacker's warm-boot vector) executes the magic
//!   breakpoint `xchg bx, bx` (`magic_break: enabled=1`) before anything else.
//! - A stop at Vigil's entry point (a physical breakpoint: the trampoline runs at its load
//!   address) marks the tick from which a reset or an SMM entry in Bochs' log is something the
//!   guest caused.
//!
//! Ends that are fatal in Bochs and pass no breakpoint (the guest reaching the shutdown port or
//! ACPI S5 behind Vigil's back, a Bochs panic) leave no final memory view; the oracle then
//! reports that and what Bochs logged: the fatal message and the CPU state Bochs prints when it
//! exits ("CPU is in long mode (active, vmx guest)"). Either way the run fails the oracle.
//!
//! Bochs applies its A20 gate to debugger reads as it does to the CPU's: with A20 masked a read
//! of an odd megabyte shows the even one below it. The comparison says so when it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use crate::oracle_image::Image;

/// What one run's oracle needs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub image: Image,
    /// The firmware's SMI handler, from the BIOS image the run boots (`smi_handler`).
    pub smi_handler: Option<Vec<u8>>,
}

/// Bochs' BIOS's SMI handler as its ROM image holds it (rombios32start.S `smm_code_start` to its
/// RSM: `mov dx, 0xb2; in al, dx; cmp al, 0xf0 ...`), which the BIOS copies to SMBASE + 0x8000.
/// With SMRAM locked before the guest runs, this is the only code SMM can run; the oracle
/// compares what SMM entered with it.
pub fn smi_handler(rom: &[u8]) -> Option<Vec<u8>> {
    const START: &[u8] = &[0xBA, 0xB2, 0x00, 0xEC, 0x3C, 0xF0];
    let start = rom.windows(START.len()).position(|w| w == START)?;
    let len = rom[start..].windows(2).position(|w| w == [0x0F, 0xAA])? + 2;
    Some(rom[start..start + len].to_vec())
}

impl Plan {
    pub fn for_vigil(elf: &Path) -> Result<Plan, String> {
        let data = std::fs::read(elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
        let image =
            crate::oracle_image::parse(&data).map_err(|e| format!("{}: {e}", elf.display()))?;
        if image.finish.is_none() {
            return Err(format!(
                "{}: no `vigil::power::finish` symbol: the oracle cannot stop before Vigil ends \
                 the run",
                elf.display()
            ));
        }
        let rom = std::fs::read(crate::bochs::ROM_IMAGE).unwrap_or_default();
        Ok(Plan {
            image,
            smi_handler: smi_handler(&rom),
        })
    }

    /// `xp` commands reading every compared segment at its physical address, given where the
    /// window maps (`window`).
    pub fn dump_commands(&self, window: &[Mapping]) -> String {
        let mut c = String::new();
        for s in &self.image.segments {
            // Segment by segment, page run by page run: the window's mapping need not be
            // physically contiguous.
            let mut at = s.vaddr;
            while at < s.end() {
                let Some((phys, run)) = translate(window, at) else {
                    break;
                };
                let len = run.min(s.end() - at);
                c.push_str(&format!("xp /{}gx {phys:#x}\n", len.div_ceil(8)));
                at += len;
            }
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

/// SIGINT to Bochs itself: its debugger stops the simulation and answers the next commands.
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
    /// Bochs' VM-exit breakpoint (`vmexitbp`).
    VmExit,
    /// No reason printed: SIGINT.
    Interrupt,
    Other(String),
}

/// One translation range of `info tab`: [vstart, vend] maps to pstart onwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub vstart: u64,
    /// Inclusive.
    pub vend: u64,
    pub pstart: u64,
}

/// The physical address of `vaddr` and how many bytes from it map contiguously.
pub fn translate(window: &[Mapping], vaddr: u64) -> Option<(u64, u64)> {
    window
        .iter()
        .find(|m| m.vstart <= vaddr && vaddr <= m.vend)
        .map(|m| (m.pstart + (vaddr - m.vstart), m.vend - vaddr + 1))
}

/// One debugger stop and what it saw.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    pub reason: Option<Reason>,
    pub tick: u64,
    pub rip: Option<u64>,
    pub cr0: Option<u64>,
    pub cr3: Option<u64>,
    pub cr4: Option<u64>,
    pub efer: Option<u64>,
    /// Bochs' own VMX state: in VMX operation, and in VMX non-root.
    pub in_vmx: Option<bool>,
    pub in_vmx_guest: Option<bool>,
    /// Bochs' own SVM state: running an SVM guest, and the global interrupt flag.
    pub in_svm_guest: Option<bool>,
    pub svm_gif: Option<bool>,
    /// Bochs' own SMM state: in SMM, and the SMM base.
    pub in_smm: Option<bool>,
    pub smbase: Option<u64>,
    /// `info tab` at this stop: the translations of the paging structures in use.
    pub tables: Vec<Mapping>,
    /// Physical address → qword, from `xp`.
    pub memory: BTreeMap<u64, u64>,
}

impl Stop {
    /// The processor is in VMX root operation, or outside an SVM guest with GIF clear: Vigil's
    /// context (only Vigil runs there; before Vigil and after a reset GIF is set).
    pub fn in_vigil_context(&self) -> bool {
        (self.in_vmx == Some(true) && self.in_vmx_guest == Some(false))
            || (self.in_svm_guest == Some(false) && self.svm_gif == Some(false))
    }

    /// The processor runs the guest (VMX non-root, or an SVM guest).
    pub fn in_guest_context(&self) -> bool {
        self.in_vmx_guest == Some(true) || self.in_svm_guest == Some(true)
    }

    pub fn describe(&self) -> String {
        let why = match &self.reason {
            Some(Reason::Breakpoint(a)) => format!("breakpoint at {a:#x}"),
            Some(Reason::Magic) => "magic breakpoint (xchg bx, bx)".to_string(),
            Some(Reason::VmExit) => "VM exit".to_string(),
            Some(Reason::Interrupt) | None => "SIGINT".to_string(),
            Some(Reason::Other(s)) => s.clone(),
        };
        let context = match (
            self.in_vmx,
            self.in_vmx_guest,
            self.in_svm_guest,
            self.svm_gif,
        ) {
            (Some(true), Some(false), ..) => " (VMX root: Vigil)",
            (Some(true), Some(true), ..) => " (VMX non-root: the guest)",
            (Some(false), ..) => " (not in VMX operation)",
            (_, _, Some(false), Some(false)) => " (SVM host with GIF clear: Vigil)",
            (_, _, Some(true), _) => " (SVM guest)",
            (_, _, Some(false), Some(true)) => " (outside an SVM guest with GIF set: not Vigil)",
            _ => "",
        };
        let mode = match (self.cr0, self.cr4) {
            (Some(cr0), Some(cr4)) => format!(
                " CR0={cr0:#x} CR4={cr4:#x}{}{}",
                if cr0 & 1 == 0 { " (real mode)" } else { "" },
                if cr4 & (1 << 13) == 0 && self.in_vmx.is_some() {
                    " (CR4.VMXE clear)"
                } else {
                    ""
                }
            ),
            _ => String::new(),
        };
        format!(
            "t={} {why}{context} rip={}{mode}",
            self.tick,
            self.rip.map_or("?".into(), |r| format!("{r:#x}"))
        )
    }

    fn byte(&self, paddr: u64) -> Option<u8> {
        let q = self.memory.get(&(paddr & !7))?;
        Some((q >> ((paddr & 7) * 8)) as u8)
    }

    /// The translations of Vigil's window at this stop.
    pub fn window(&self) -> Vec<Mapping> {
        self.tables
            .iter()
            .copied()
            .filter(|m| m.vend >= crate::oracle_image::WINDOW_BASE)
            .collect()
    }
}

fn hex(s: &str) -> Option<u64> {
    let s = s.trim().trim_end_matches(':').trim_end_matches(',');
    let s = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(&s.replace('_', ""), 16).ok()
}

/// A debugger line without the prompt (and the echo of a command) in front of it.
fn unprompted(line: &str) -> &str {
    let l = line.trim();
    match l.strip_prefix("<bochs:") {
        Some(rest) => rest.split_once('>').map_or(l, |(_, r)| r.trim()),
        None => l,
    }
}

/// Split the debugger's output into stops: each `ptime: N` line opens the block of one stop;
/// the stop's reason is the last reason line before it.
pub fn parse_stops(out: &str) -> Vec<Stop> {
    let mut stops: Vec<Stop> = Vec::new();
    let mut pending: Option<Reason> = None;
    for line in out.lines() {
        let l = unprompted(line);
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
                // "Breakpoint 2, 0xffffffff8001d640 in ?? ()"
                let addr = bp.split_whitespace().nth(1).and_then(hex);
                pending = Some(Reason::Breakpoint(addr.unwrap_or(0)));
            } else if rest.starts_with("Magic breakpoint") {
                pending = Some(Reason::Magic);
            } else if rest.starts_with("Caught VMEXIT") {
                pending = Some(Reason::VmExit);
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
        } else if let Some(v) = l.strip_prefix("CR3=") {
            stop.cr3 = v.split(':').next().and_then(hex);
        } else if let Some(v) = l.strip_prefix("CR4=") {
            stop.cr4 = v.split(':').next().and_then(hex);
        } else if let Some(v) = l.strip_prefix("EFER=") {
            stop.efer = v.split(':').next().and_then(hex);
        } else if let Some(v) = l.strip_prefix("rip: ") {
            stop.rip = hex(v);
        } else if let Some(v) = l.strip_prefix("in_vmx = ") {
            stop.in_vmx = Some(v.trim() == "true");
        } else if let Some(v) = l.strip_prefix("in_vmx_guest = ") {
            stop.in_vmx_guest = Some(v.trim() == "true");
        } else if let Some(v) = l.strip_prefix("in_svm_guest = ") {
            stop.in_svm_guest = Some(v.trim() == "true");
        } else if let Some(v) = l.strip_prefix("gif = ") {
            stop.svm_gif = Some(v.trim() == "true");
        } else if let Some(v) = l.strip_prefix("in_smm = ") {
            stop.in_smm = Some(v.trim() == "true");
        } else if let Some(v) = l.strip_prefix("smbase = ") {
            stop.smbase = hex(v);
        } else if l.starts_with("0x") && l.contains(" -> ") {
            // info tab: "0xffffffff80000000-0xffffffff801fffff -> 0x00000fded000-0x00000ffecfff"
            let Some((v, p)) = l.split_once(" -> ") else {
                continue;
            };
            let (Some((vs, ve)), Some((ps, _))) = (v.split_once('-'), p.split_once('-')) else {
                continue;
            };
            if let (Some(vstart), Some(vend), Some(pstart)) = (hex(vs), hex(ve), hex(ps)) {
                stop.tables.push(Mapping {
                    vstart,
                    vend,
                    pstart,
                });
            }
        } else if l.starts_with("0x") && l.contains(">:") {
            // "0x000000000fded000 <bogus+       0>:	0x56415741e5894855	0xec83485354415541"
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

/// The memory map the guest was given, as the hostile guest printed it on COM1
/// (`hostile: memory map: usable [START-END)` lines): `None` if it printed none.
pub fn guest_usable_ram(com1: &str) -> Option<Vec<(u64, u64)>> {
    let ranges: Vec<(u64, u64)> = com1
        .lines()
        .filter_map(|l| l.trim().strip_prefix("hostile: memory map: usable ["))
        .filter_map(|r| {
            let (s, e) = r.trim_end_matches(')').split_once('-')?;
            Some((hex(s)?, hex(e)?))
        })
        .collect();
    (!ranges.is_empty()).then_some(ranges)
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

/// Judge a finished run from its directory (bochs.out holds the debugger's transcript,
/// bochs.log Bochs' log, com1.txt what the guest printed) against `image`.
pub fn judge_dir(dir: &Path, plan: &Plan) -> Verdict {
    let read = |name: &str| {
        String::from_utf8_lossy(&std::fs::read(dir.join(name)).unwrap_or_default()).into_owned()
    };
    judge(
        &plan.image,
        plan.smi_handler.as_deref(),
        &parse_stops(&read("bochs.out")),
        &log_facts(&read("bochs.log")),
        guest_usable_ram(&read("com1.txt")).as_deref(),
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
    Ok(judge_dir(dir, &plan))
}

/// Compare `image` with the memory one stop read, at the physical addresses `window` gives.
fn compare(image: &Image, window: &[Mapping], stop: &Stop, when: &str, v: &mut Verdict) {
    for s in &image.segments {
        let mut differ = 0usize;
        let mut first = Vec::new();
        let mut missing = 0usize;
        let mut odd_megabyte = false;
        for (i, &want) in s.bytes.iter().enumerate() {
            let Some((at, _)) = translate(window, s.vaddr + i as u64) else {
                missing += 1;
                continue;
            };
            odd_megabyte |= at & (1 << 20) != 0;
            match stop.byte(at) {
                Some(got) if got == want => {}
                Some(got) => {
                    differ += 1;
                    if first.len() < 4 {
                        first.push(format!(
                            "{:#x} (physical {at:#x}): {got:#04x} (ELF {want:#04x})",
                            s.vaddr + i as u64
                        ));
                    }
                }
                None => missing += 1,
            }
        }
        if missing > 0 {
            v.failures.push(format!(
                "{when}: {missing} of the {} bytes of Vigil's {} at {:#x} were not read from the \
                 emulator",
                s.bytes.len(),
                s.kind(),
                s.vaddr
            ));
        } else if differ > 0 {
            let a20 = if odd_megabyte {
                " (the range includes an odd megabyte: with A20 masked the emulator shows the one \
                 below)"
            } else {
                ""
            };
            v.failures.push(format!(
                "{when}: {differ} byte(s) of Vigil's {} [{:#x}-{:#x}) differ from its ELF at t={}, \
                 first {}{a20}",
                s.kind(),
                s.vaddr,
                s.end(),
                stop.tick,
                first.join(", ")
            ));
        } else {
            v.facts.push(format!(
                "{when}: Vigil's {} [{:#x}-{:#x}) equals its ELF at t={}",
                s.kind(),
                s.vaddr,
                s.end(),
                stop.tick
            ));
        }
    }
}

pub fn judge(
    image: &Image,
    smi: Option<&[u8]>,
    stops: &[Stop],
    log: &LogFacts,
    guest_ram: Option<&[(u64, u64)]>,
) -> Verdict {
    let mut v = Verdict::default();
    // The first stop is Vigil's entry (the physical breakpoint on the trampoline).
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
             the processor left VMX (or SVM)",
            resets.len()
        ));
    }
    let later = &stops[entry.map_or(0, |_| 1).min(stops.len())..];
    let smm: Vec<u64> = log.smm.iter().copied().filter(|t| *t > t0).collect();
    // An SMM entry is the firmware's SMI handler running — in SMRAM Vigil locked before the
    // guest ran — only if a stop at the handler's entry, in SMM, read exactly its bytes.
    let firmware = later
        .iter()
        .filter(|s| s.in_smm == Some(true))
        .filter(|s| {
            smi.is_some_and(|h| {
                let at = s.smbase.unwrap_or(0xA0000) + 0x8000;
                (0..h.len()).all(|i| s.byte(at + i as u64) == Some(h[i]))
            })
        })
        .count();
    if let Some(t) = smm.first() {
        if firmware >= smm.len() {
            v.facts.push(format!(
                "the processor entered SMM {} time(s) after Vigil started (first at t={t}), \
                 each time at the firmware's SMI handler, byte for byte the BIOS image's",
                smm.len()
            ));
        } else {
            v.failures.push(format!(
                "the processor entered SMM {} time(s) after Vigil started, the first at t={t}; \
                 {firmware} of them ran the firmware's SMI handler, the rest code the oracle \
                 cannot vouch for, outside the guest's context",
                smm.len()
            ));
        }
    }
    let collisions = later
        .iter()
        .filter(|s| {
            image
                .finish
                .is_some_and(|f| s.reason == Some(Reason::Breakpoint(f)))
                && s.in_guest_context()
        })
        .count();
    if collisions > 0 {
        v.facts.push(format!(
            "{collisions} stop(s) at Vigil's end address in the guest's context (its own code at \
             the same linear address), let go"
        ));
    }
    for s in later.iter().filter(|s| !s.in_guest_context()) {
        v.facts.push(format!("stop {}", s.describe()));
    }
    if let Some(state) = &log.final_state {
        v.facts.push(format!("at exit: {state}"));
    }
    for f in log.fatal.iter().take(3) {
        v.facts.push(format!("bochs: {f}"));
    }
    // Where Vigil is: its window as the page tables in use at a stop in Vigil's context say.
    let placed = later
        .iter()
        .find(|s| s.in_vigil_context() && !s.window().is_empty());
    let Some(placed) = placed else {
        v.failures.push(
            "no stop in Vigil's context (VMX root, or the SVM host with GIF clear) showed where \
             Vigil's window maps: the run \
             reached neither a VM exit nor Vigil's end"
                .to_string(),
        );
        return v;
    };
    let window = placed.window();
    let (lo, hi) = image.window;
    let phys: Vec<(u64, u64)> = window
        .iter()
        .filter(|m| m.vend >= lo && m.vstart < hi)
        .map(|m| {
            let s = m.vstart.max(lo);
            let e = m.vend.min(hi - 1);
            (m.pstart + (s - m.vstart), m.pstart + (e - m.vstart) + 1)
        })
        .collect();
    for &(s, e) in &phys {
        v.facts.push(format!(
            "Vigil's image at physical [{s:#x}-{e:#x}) (the emulator's page walk at t={})",
            placed.tick
        ));
    }
    match guest_ram {
        Some(ram) => {
            for &(s, e) in &phys {
                if let Some(&(rs, re)) = ram.iter().find(|&&(rs, re)| rs < e && s < re) {
                    v.failures.push(format!(
                        "Vigil's image at physical [{s:#x}-{e:#x}) overlaps the usable RAM \
                         [{rs:#x}-{re:#x}) of the guest's memory map"
                    ));
                }
            }
            if v.failures.is_empty() {
                v.facts
                    .push("the image is absent from the guest's memory map".to_string());
            }
        }
        None => v
            .facts
            .push("the guest printed no memory map to check the image against".to_string()),
    }
    // The first view (Vigil's first VM exit, before the guest could do much) and the last.
    let views: Vec<&Stop> = later.iter().filter(|s| !s.memory.is_empty()).collect();
    if let Some(first) = views.first().filter(|s| s.reason == Some(Reason::VmExit)) {
        compare(image, &window, first, "at the first VM exit", &mut v);
    }
    let Some(last) = views.last().filter(|s| s.reason != Some(Reason::VmExit)) else {
        v.failures.push(
            "no memory view at the end: the run passed neither Vigil's end, a magic breakpoint \
             nor a SIGINT stop (a fatal Bochs exit: the guest reached the shutdown port or ACPI \
             S5 itself, or Bochs panicked)"
                .to_string(),
        );
        return v;
    };
    let at_finish = image
        .finish
        .is_some_and(|f| last.reason == Some(Reason::Breakpoint(f)) && last.in_vigil_context());
    if !at_finish {
        v.failures.push(format!(
            "the run did not end through Vigil's end (`vigil::power::finish` in Vigil's \
             context); last stop: {}",
            last.describe()
        ));
    }
    if !last.window().is_empty() && last.in_vigil_context() && last.window() != window {
        v.failures.push(format!(
            "Vigil's window maps elsewhere at its end (t={}) than at t={}",
            last.tick, placed.tick
        ));
    }
    compare(image, &window, last, "at the end", &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle_image::{Segment, WINDOW_BASE};

    const FINISH: u64 = WINDOW_BASE + 0x1d640;

    fn image() -> Image {
        Image {
            segments: vec![Segment {
                vaddr: WINDOW_BASE,
                bytes: vec![
                    0x55, 0x48, 0x89, 0xe5, 0x41, 0x57, 0x41, 0x56, 0x55, 0x41, 0, 0,
                ],
                executable: true,
            }],
            entry: 0x100018,
            finish: Some(FINISH),
            window: (WINDOW_BASE, WINDOW_BASE + 0x1000),
        }
    }

    /// A transcript of the interactive session as Bochs 3.0 printed it (2.7 prints the same
    /// lines): entry, the first VM exit with its page walk and memory, a stop at the end address
    /// in the guest's context, and the end in Vigil's.
    const OUT: &str = "Next at t=0\n\
        (0) [0x0000fffffff0] f000:fff0 (unk. ctxt): jmpf 0xf000:e05b          ; ea5be000f0\n\
        <bochs:1> pb 0x100018\n\
        (0) Breakpoint 1, 0x0000000000100018 in ?? ()\n\
        Next at t=100\n\
        <bochs:3> ptime\n\
        ptime: 100\n\
        (0) Caught VMEXIT breakpoint\n\
        Next at t=5000\n\
        <bochs:8> ptime\n\
        ptime: 5000\n\
        show param name: <cpu0.VMX.in_vmx>\n\
        in_vmx = true\n\
        show param name: <cpu0.VMX.in_vmx_guest>\n\
        in_vmx_guest = false\n\
        CR3=0x00000feb8000\n\
        <bochs:12> info tab\n\
        cr3: 0x00000feb8000\n\
        0x0000000000000000-0x00000000ffffffff -> 0x000000000000-0x0000ffffffff\n\
        0xffffffff80000000-0xffffffff801fffff -> 0x00000fded000-0x00000ffecfff\n\
        [bochs]:\n\
        0x000000000fded000 <bogus+       0>:\t0x56415741e5894855\t0x4155\n\
        (0) Breakpoint 2, 0xffffffff8001d640 in ?? ()\n\
        Next at t=7000\n\
        ptime: 7000\n\
        in_vmx = true\n\
        in_vmx_guest = true\n\
        (0) Breakpoint 2, 0xffffffff8001d640 in ?? ()\n\
        Next at t=258962145\n\
        ptime: 258962145\n\
        in_vmx = true\n\
        in_vmx_guest = false\n\
        CR0=0xe0010031: PG CD NW ac WP NE ET ts em mp PE\n\
        CR4=0x00042020: pks cet pke smap smep keylock OSXSAVE pcid fsgsbase smx VMX la57\n\
        EFER=0x00000d00: ffxsr NXE LMA LME sce\n\
        rip: ffffffff_8001d640\n\
        0x0000000000000000-0x00000000ffffffff -> 0x000000000000-0x0000ffffffff\n\
        0xffffffff80000000-0xffffffff801fffff -> 0x00000fded000-0x00000ffecfff\n\
        [bochs]:\n\
        0x000000000fded000 <bogus+       0>:\t0x56415741e5894855\t0x4155\n";

    const RAM: &[(u64, u64)] = &[(0x100000, 0xfded000), (0xfff0000, 0xfff1000)];

    #[test]
    fn parses_stops_context_tables_and_memory() {
        let stops = parse_stops(OUT);
        assert_eq!(stops.len(), 4);
        assert_eq!(stops[0].reason, Some(Reason::Breakpoint(0x100018)));
        assert_eq!(stops[1].reason, Some(Reason::VmExit));
        assert!(stops[1].in_vigil_context());
        assert_eq!(
            stops[1].window(),
            vec![Mapping {
                vstart: WINDOW_BASE,
                vend: 0xffffffff801fffff,
                pstart: 0xfded000
            }]
        );
        assert!(!stops[2].in_vigil_context());
        let s = &stops[3];
        assert_eq!(s.reason, Some(Reason::Breakpoint(FINISH)));
        assert_eq!(s.rip, Some(FINISH));
        assert_eq!(s.cr4, Some(0x42020));
        assert_eq!(s.byte(0xfded000), Some(0x55));
        assert_eq!(s.byte(0xfded008), Some(0x55));
        assert_eq!(s.byte(0xfded010), None);
        assert_eq!(
            translate(&s.window(), FINISH),
            Some((0xfded000 + 0x1d640, 0x200000 - 0x1d640))
        );
    }

    #[test]
    fn an_intact_image_at_the_end_passes_and_guest_stops_are_let_go() {
        let v = judge(
            &image(),
            None,
            &parse_stops(OUT),
            &LogFacts::default(),
            Some(RAM),
        );
        assert!(v.result().is_ok(), "{v:?}");
        assert!(v
            .facts
            .iter()
            .any(|f| f.contains("1 stop(s) at Vigil's end address in the guest's context")));
        assert!(v
            .facts
            .iter()
            .any(|f| f.contains("physical [0xfded000-0xfdee000)")));
    }

    /// The same session on an SVM model (`ryzen`): no VMX parameters, SVM's instead.
    fn svm_transcript() -> String {
        let can_not = |p: &str| {
            format!("show param name: <cpu0.VMX.{p}>\ncan't find param <cpu0.VMX.{p}> in global or default CPU tree\n")
        };
        let host = format!(
            "{}{}show param name: <cpu0.SVM.in_svm_guest>\nin_svm_guest = false\n\
             show param name: <cpu0.SVM.gif>\ngif = false\n",
            can_not("in_vmx"),
            can_not("in_vmx_guest")
        );
        let guest = host
            .replace("in_svm_guest = false", "in_svm_guest = true")
            .replace("gif = false", "gif = true");
        let vmx_host = "in_vmx = true\nin_vmx_guest = false\n";
        let vmx_guest = "in_vmx = true\nin_vmx_guest = true\n";
        let with_names = "show param name: <cpu0.VMX.in_vmx>\nin_vmx = true\n\
                          show param name: <cpu0.VMX.in_vmx_guest>\nin_vmx_guest = false\n";
        OUT.replacen(with_names, &host, 1)
            .replacen(vmx_guest, &guest, 1)
            .replacen(vmx_host, &host, 1)
    }

    #[test]
    fn svm_hosts_with_gif_clear_are_vigils_context() {
        let out = svm_transcript();
        assert!(!out.contains("in_vmx ="), "{out}");
        let stops = parse_stops(&out);
        assert_eq!(stops.len(), 4);
        assert!(stops[1].in_vigil_context() && !stops[1].in_guest_context());
        assert!(stops[2].in_guest_context() && !stops[2].in_vigil_context());
        assert!(stops[3].in_vigil_context());
        let v = judge(&image(), None, &stops, &LogFacts::default(), Some(RAM));
        assert!(v.result().is_ok(), "{v:?}");
        assert!(v
            .facts
            .iter()
            .any(|f| f.contains("1 stop(s) at Vigil's end address in the guest's context")));
        // Outside a guest with GIF set is not Vigil: before SVM is on, or after a reset.
        let set = out.replace("gif = false", "gif = true");
        let stops = parse_stops(&set);
        assert!(!stops[3].in_vigil_context());
        let e = judge(&image(), None, &stops, &LogFacts::default(), Some(RAM))
            .result()
            .unwrap_err();
        assert!(e.contains("no stop in Vigil's context"), "{e}");
    }

    #[test]
    fn a_changed_byte_fails_and_is_located() {
        let out = OUT.replacen("0x56415741e5894855", "0x56415741e5894856", 2);
        let v = judge(
            &image(),
            None,
            &parse_stops(&out),
            &LogFacts::default(),
            Some(RAM),
        );
        let e = v.result().unwrap_err();
        assert!(e.contains("at the end: 1 byte(s) of Vigil's code"), "{e}");
        assert!(e.contains("(physical 0xfded000): 0x56 (ELF 0x55)"), "{e}");
    }

    #[test]
    fn an_image_inside_the_guests_ram_fails() {
        let v = judge(
            &image(),
            None,
            &parse_stops(OUT),
            &LogFacts::default(),
            Some(&[(0x100000, 0x10000000)]),
        );
        assert!(v.result().unwrap_err().contains("overlaps the usable RAM"));
    }

    #[test]
    fn resets_and_smm_after_vigil_started_fail() {
        let log = "00000000000i[SYS   ] bx_pc_system_c::Reset(HARDWARE) called\n\
                   00000000050i[CPU0  ] Enter to System Management Mode\n\
                   00000000500i[SYS   ] bx_pc_system_c::Reset(SOFTWARE) called\n\
                   00000000600i[CPU0  ] Enter to System Management Mode\n\
                   00000000700i[CPU0  ] CPU is in real mode (active)\n";
        let v = judge(
            &image(),
            None,
            &parse_stops(OUT),
            &log_facts(log),
            Some(RAM),
        );
        let e = v.result().unwrap_err();
        assert!(e.contains("reset 1 time(s)"), "{e}");
        assert!(e.contains("t=500"), "{e}");
        assert!(e.contains("SMM 1 time(s)"), "{e}");
        assert!(e.contains("CPU is in real mode"), "{e}");
    }

    #[test]
    fn a_guest_context_stop_or_a_missing_end_is_no_end_view() {
        // Only the guest-context stop after the first exit: its memory would be the guest's.
        let cut = OUT.find("Next at t=258962145").unwrap();
        let v = judge(
            &image(),
            None,
            &parse_stops(&OUT[..cut]),
            &LogFacts::default(),
            Some(RAM),
        );
        assert!(
            v.result()
                .unwrap_err()
                .contains("no memory view at the end"),
            "{v:?}"
        );
        let magic = OUT.replacen(
            "(0) Breakpoint 2, 0xffffffff8001d640 in ?? ()\nNext at t=258962145",
            "(0) Magic breakpoint\nNext at t=258962145",
            1,
        );
        let v = judge(
            &image(),
            None,
            &parse_stops(&magic),
            &LogFacts::default(),
            Some(RAM),
        );
        assert!(v
            .result()
            .unwrap_err()
            .contains("did not end through Vigil's end"));
        // Without a single stop in Vigil's context nothing says where Vigil is.
        let only_entry = &OUT[..OUT.find("(0) Caught").unwrap()];
        let v = judge(
            &image(),
            None,
            &parse_stops(only_entry),
            &LogFacts::default(),
            Some(RAM),
        );
        assert!(v
            .result()
            .unwrap_err()
            .contains("no stop in Vigil's context"));
    }

    /// An SMM entry, the stop the driver makes just past the handler's first instruction (in
    /// SMM), and what it read there.
    fn with_smm_stop(handler_bytes: &str) -> String {
        OUT.replacen(
            "(0) Breakpoint 2, 0xffffffff8001d640 in ?? ()\nNext at t=7000",
            &format!(
                "(0) Breakpoint 3, 0x00000000000a8003 in ?? ()\nNext at t=6000\nptime: 6000\n\
                 in_vmx = false\nin_vmx_guest = false\nin_smm = true\n\
                 0x00000000000a8000 <bogus+       0>:\t{handler_bytes}\n\
                 (0) Breakpoint 2, 0xffffffff8001d640 in ?? ()\nNext at t=7000"
            ),
            1,
        )
    }

    #[test]
    fn an_smm_entry_passes_only_if_it_ran_the_firmwares_handler() {
        let rom = [
            0x90u8, 0x90, 0xBA, 0xB2, 0x00, 0xEC, 0x3C, 0xF0, 0x0F, 0xAA, 0x90,
        ];
        let handler = smi_handler(&rom).unwrap();
        assert_eq!(handler, [0xBA, 0xB2, 0x00, 0xEC, 0x3C, 0xF0, 0x0F, 0xAA]);
        let log = log_facts("00000005500i[CPU0  ] Enter to System Management Mode\n");
        let firmware = with_smm_stop("0xaa0ff03cec00b2ba");
        let v = judge(
            &image(),
            Some(&handler),
            &parse_stops(&firmware),
            &log,
            Some(RAM),
        );
        assert!(v.result().is_ok(), "{v:?}");
        assert!(v.facts.iter().any(|f| f.contains("firmware's SMI handler")));
        // Other bytes at the entry, no stop at all, or no known handler: the entry fails.
        let planted = with_smm_stop("0x90909090deadbeef");
        let v = judge(
            &image(),
            Some(&handler),
            &parse_stops(&planted),
            &log,
            Some(RAM),
        );
        assert!(v.result().unwrap_err().contains("cannot vouch for"));
        let v = judge(&image(), Some(&handler), &parse_stops(OUT), &log, Some(RAM));
        assert!(v.result().is_err());
        let v = judge(&image(), None, &parse_stops(&firmware), &log, Some(RAM));
        assert!(v.result().is_err());
    }

    #[test]
    fn the_guests_map_is_read_from_its_lines() {
        let com1 = "hostile: memory map: usable [0x0-0x9fc00)\nPASS x\n\
                    hostile: memory map: usable [0x100000-0xfded000)\n";
        assert_eq!(
            guest_usable_ram(com1),
            Some(vec![(0, 0x9fc00), (0x100000, 0xfded000)])
        );
        assert_eq!(guest_usable_ram("PASS x\n"), None);
    }

    #[test]
    fn dump_commands_follow_the_window() {
        let plan = Plan {
            image: image(),
            smi_handler: None,
        };
        let window = [Mapping {
            vstart: WINDOW_BASE,
            vend: WINDOW_BASE + 0x1f_ffff,
            pstart: 0xfded000,
        }];
        assert_eq!(plan.dump_commands(&window), "xp /2gx 0xfded000\n");
    }
}

/// `VIGIL_ORACLE_DIR=target/xtask/RUN cargo test -p xtask oracle_verdict -- --ignored
/// --nocapture` prints the oracle's verdict on a run directory.
#[cfg(test)]
#[test]
#[ignore]
fn oracle_verdict() {
    let dir = std::env::var("VIGIL_ORACLE_DIR").expect("VIGIL_ORACLE_DIR");
    let v = verify(Path::new(&dir)).unwrap();
    for f in &v.facts {
        println!("fact: {f}");
    }
    for f in &v.failures {
        println!("FAILURE: {f}");
    }
}
