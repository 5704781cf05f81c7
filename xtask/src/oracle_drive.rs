//! Driving Bochs' debugger for the oracle (oracle.rs explains why interactively): commands go to
//! its stdin, its answers come from its stdout, and everything is kept in the run's `bochs.out`,
//! from which the oracle judges the run afterwards.
//!
//! Each exchange ends with `calc` of a fresh marker value; the debugger answers it with a line
//! `0x<hex> <decimal>` after everything before it, so reading up to that line collects exactly
//! the answer to one batch of commands. A batch that starts with `continue` is answered only
//! when the simulation stops again, however long the guest runs first.
//!
//! The session:
//! 1. A physical breakpoint on Vigil's entry (the trampoline runs at its load address): its
//!    tick starts the log's clock.
//! 2. Bochs' VM-exit breakpoint and a linear breakpoint on `vigil::power::finish`.
//! 3. At every stop: the tick, Bochs' VMX state (`show "cpu0.VMX.in_vmx"` and `in_vmx_guest`)
//!    or SVM state (`cpu0.SVM.in_svm_guest` and `gif`), the control and general registers. In
//!    Vigil's context (VMX root, or the SVM host with GIF clear) also `info tab`.
//!    - The first VM exit: where Vigil's window maps (the page walk through Vigil's host CR3),
//!      and a first memory view there; the VM-exit breakpoint goes off.
//!    - A stop at the end address in the guest's context: let go.
//!    - A stop at the SMI handler's entry (SMBASE + 0x8000, a linear breakpoint set at the
//!      first exit) in SMM: the bytes SMM is about to run, read in SMM; outside SMM (the
//!      guest's own code at that address): let go.
//!    - The end in Vigil's context, a magic breakpoint (guest code after a reset) or SIGINT (a
//!      timeout): a memory view at the physical addresses the page walk gave, then `quit`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout};

use crate::oracle::{parse_stops, Mapping, Plan, Reason, Stop};

/// How long the SMI handler's first instruction may be, for the breakpoints on its second.
const SMM_FIRST_INSTRUCTION_MAX: u64 = 8;

/// The first marker value; each exchange uses the next.
const MARKER_BASE: u64 = 0x7A1E_0000;

struct Session {
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    transcript: File,
    marker: u64,
}

impl Session {
    /// Send `commands`, then a marker, and return everything Bochs printed up to the marker's
    /// answer; `None` once Bochs has gone (EOF or a broken pipe).
    fn exchange(&mut self, commands: &str) -> Option<String> {
        self.marker += 1;
        let batch = format!("{commands}calc {:#x}\n", self.marker);
        for line in batch.lines() {
            let _ = writeln!(self.transcript, "oracle> {line}");
        }
        self.to.write_all(batch.as_bytes()).ok()?;
        self.to.flush().ok()?;
        let answer = format!("{:#x} {}", self.marker, self.marker);
        let mut text = String::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            match self.from.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => {
                    let _ = self.transcript.write_all(text.as_bytes());
                    return None;
                }
                Ok(_) => {}
            }
            let l = String::from_utf8_lossy(&line);
            text.push_str(&l);
            let bare = l.trim();
            let bare = bare
                .strip_prefix("<bochs:")
                .and_then(|r| r.split_once('>'))
                .map_or(bare, |(_, r)| r.trim());
            if bare == answer {
                let _ = self.transcript.write_all(text.as_bytes());
                let _ = self.transcript.flush();
                return Some(text);
            }
        }
    }

    fn stop(&mut self, commands: &str) -> Option<Stop> {
        let text = self.exchange(commands)?;
        Some(parse_stops(&text).pop().unwrap_or_default())
    }
}

/// What every stop asks first.
/// (Bochs' VMX and SVM state both: a CPU model has at most one, the other is "can't find".)
const STATE: &str = "ptime\nshow \"cpu0.VMX.in_vmx\"\nshow \"cpu0.VMX.in_vmx_guest\"\nshow \"cpu0.SVM.in_svm_guest\"\nshow \"cpu0.SVM.gif\"\nshow \"cpu0.in_smm\"\ncreg\nr\n";

/// Runs the session until Bochs quits or goes away.
pub fn drive(to: ChildStdin, from: ChildStdout, transcript: File, plan: &Plan) {
    let mut s = Session {
        to,
        from: BufReader::new(from),
        transcript,
        marker: MARKER_BASE,
    };
    let image = &plan.image;
    let Some(finish) = image.finish else { return };
    let Some(_) = s.stop(&format!("pb {:#x}\ncontinue\nptime\n", image.entry)) else {
        return;
    };
    // Breakpoint 1 (the entry) goes: the guest kit's code lives at the same low addresses.
    let mut next = format!("d 1\nvmexitbp\nlb {finish:#x}\ncontinue\n{STATE}");
    let mut window: Vec<Mapping> = Vec::new();
    let mut exits_on = true;
    let mut smm_entry: Option<u64> = None;
    loop {
        let Some(stop) = s.stop(&next) else { return };
        let vigil = stop.in_vigil_context();
        if stop.in_smm == Some(true) && smm_entry.is_some() {
            // SMM at the handler's entry: what it is about to run, read in SMM (SMRAM).
            let at = smm_entry.unwrap_or(0);
            let len = plan.smi_handler.as_ref().map_or(64, |h| h.len());
            if s.exchange(&format!("xp /{}gx {at:#x}\n", len.div_ceil(8)))
                .is_none()
            {
                return;
            }
            next = format!("continue\n{STATE}");
            continue;
        }
        if vigil {
            let Some(text) = s.exchange("info tab\n") else {
                return;
            };
            let tables = parse_stops(&format!("ptime: 0\n{text}"))
                .pop()
                .map(|t| t.window())
                .unwrap_or_default();
            if window.is_empty() {
                window = tables;
            }
        }
        match stop.reason {
            Some(Reason::VmExit) if exits_on => {
                // The first VM exit: a first view of the image, then no more VM-exit stops; a
                // stop wherever SMM would start running (SMBASE + 0x8000, SDM Vol. 3C 32.5.1).
                exits_on = false;
                let dump = plan.dump_commands(&window);
                if s.exchange(&dump).is_none() {
                    return;
                }
                let Some(text) = s.exchange("show \"cpu0.smbase\"\n") else {
                    return;
                };
                let smbase = parse_stops(&format!("ptime: 0\n{text}"))
                    .pop()
                    .and_then(|t| t.smbase);
                next = String::from("vmexitbp\n");
                if let Some(b) = smbase {
                    // Linear: SMM starts with paging off and CS.base = SMBASE, so its first
                    // fetch is at linear SMBASE + 0x8000. (A physical breakpoint would make
                    // Bochs translate every instruction's address.) Bochs checks breakpoints
                    // before the next instruction at the end of each one, so the first
                    // instruction after the SMI is never stopped at: the breakpoints cover
                    // where the second one can start.
                    smm_entry = Some(b + 0x8000);
                    for second in 1..=SMM_FIRST_INSTRUCTION_MAX {
                        next.push_str(&format!("lb {:#x}\n", b + 0x8000 + second));
                    }
                }
                next.push_str(&format!("continue\n{STATE}"));
            }
            Some(Reason::Breakpoint(a))
                if smm_entry
                    .is_some_and(|e| (e + 1..=e + SMM_FIRST_INSTRUCTION_MAX).contains(&a)) =>
            {
                // The guest's own code at that physical address, outside SMM.
                next = format!("continue\n{STATE}");
            }
            Some(Reason::Breakpoint(a)) if a == finish && !vigil => {
                // The guest's own code at Vigil's end address.
                next = format!("continue\n{STATE}");
            }
            _ => {
                let dump = plan.dump_commands(&window);
                let _ = s.exchange(&dump);
                let _ = s.to.write_all(b"quit\n");
                let _ = s.to.flush();
                let _ = writeln!(s.transcript, "oracle> quit");
                // Keep the rest of the output (Bochs' last words).
                let mut rest = Vec::new();
                let _ = std::io::Read::read_to_end(s.from.get_mut(), &mut rest);
                let _ = s.transcript.write_all(&rest);
                return;
            }
        }
    }
}
