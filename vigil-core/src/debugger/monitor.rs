//! `monitor` commands: what gdb cannot ask for with its own packets. Each command writes text
//! to gdb's console; a mistake gets a line saying what was expected. They act through the vCPU
//! that stopped (gdb does not say which thread a `monitor` command is for).

use super::target::DebugTarget;
use super::threads::Threads;
use super::Info;
use core::fmt::{self, Write};

pub const HELP: &str = "\
monitor commands:
  cr                     control registers, EFER, DR7, mode and CPL
  msr N                  an MSR as the guest reads it (N decimal or 0x hex)
  vmcs                   every VMCS field
  stats                  the exit-statistics table
  translate ADDR         ADDR guest-virtual -> guest-physical -> host-physical, with both walks
  phys ADDR [LEN]        hex dump of guest-physical memory (LEN up to 256, default 64)
  phys-write ADDR HEX    write bytes (hex digits) to guest-physical memory
  status                 breakpoints, watchpoints, single-step mechanism, time mode,
                         gdb's retransmitted packets
  vigil-panic            make Vigil panic (checks its symbolized panic report; ends the run)
  help                   this list
";

fn number(s: Option<&str>) -> Option<u64> {
    let s = s?;
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Runs one command line.
pub fn run<C: Threads>(t: &mut DebugTarget<C>, cmd: &[u8], out: &mut dyn Write) -> fmt::Result {
    let Ok(line) = core::str::from_utf8(cmd) else {
        return writeln!(out, "error: the command is not text");
    };
    let mut words = line.split_ascii_whitespace();
    let name = words.next().unwrap_or("help");
    let (a, b) = (words.next(), words.next());
    match name {
        "help" => out.write_str(HELP),
        "cr" => t.cpu.current().info(Info::ControlRegs, out),
        "vmcs" => t.cpu.current().info(Info::Vmcs, out),
        "stats" => t.cpu.current().info(Info::Stats, out),
        "vigil-panic" => t.cpu.current().info(Info::Panic, out),
        "msr" => match number(a).filter(|&n| n <= u32::MAX as u64) {
            Some(n) => t.cpu.current().info(Info::Msr(n as u32), out),
            None => writeln!(out, "error: usage: msr N"),
        },
        "translate" | "xlate" => match number(a) {
            Some(addr) => t.cpu.current().info(Info::Translate(addr), out),
            None => writeln!(out, "error: usage: translate ADDR"),
        },
        "phys" => {
            let Some(addr) = number(a) else {
                return writeln!(out, "error: usage: phys ADDR [LEN]");
            };
            let len = match b {
                None => 64,
                Some(_) => match number(b) {
                    Some(n) if (1..=256).contains(&n) => n as usize,
                    _ => return writeln!(out, "error: LEN must be 1 to 256"),
                },
            };
            let mut buf = [0u8; 256];
            if !t.cpu.current().read_phys(addr, &mut buf[..len]) {
                return writeln!(out, "error: [{addr:#x}, +{len:#x}) is not guest RAM");
            }
            for (i, row) in buf[..len].chunks(16).enumerate() {
                write!(out, "{:#012x}:", addr + 16 * i as u64)?;
                for byte in row {
                    write!(out, " {byte:02x}")?;
                }
                writeln!(out)?;
            }
            Ok(())
        }
        "phys-write" => {
            let (Some(addr), Some(hex)) = (number(a), b) else {
                return writeln!(out, "error: usage: phys-write ADDR HEXBYTES");
            };
            let mut bytes = [0u8; 128];
            if hex.len() % 2 != 0 || hex.len() / 2 > bytes.len() || hex.is_empty() {
                return writeln!(
                    out,
                    "error: HEXBYTES must be 1 to 128 bytes as pairs of hex digits"
                );
            }
            for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
                match core::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
                {
                    Some(v) => bytes[i] = v,
                    None => return writeln!(out, "error: {hex:?} is not hex"),
                }
            }
            let n = hex.len() / 2;
            if t.cpu.current().write_phys(addr, &bytes[..n]) {
                writeln!(out, "wrote {n} bytes at guest-physical {addr:#x}")
            } else {
                writeln!(out, "error: [{addr:#x}, +{n:#x}) is not guest RAM")
            }
        }
        "status" => {
            writeln!(out, "registers: {}", t.layout.name())?;
            writeln!(
                out,
                "vCPUs: {} (gdb threads 1-{}); stopped on vCPU {}",
                t.cpu.count(),
                t.cpu.count(),
                t.cpu.current_index()
            )?;
            writeln!(out, "single-step: {}", t.step_mechanism)?;
            writeln!(out, "time while stopped: {}", t.time_mode)?;
            writeln!(
                out,
                "retransmitted packets answered once: {}",
                t.retransmissions
            )?;
            for bp in &t.state.sw {
                writeln!(
                    out,
                    "breakpoint {:#x} (gpa {:#x}, original byte {:#04x})",
                    bp.gva, bp.gpa, bp.original
                )?;
            }
            for (slot, a) in t.state.hw.iter().enumerate() {
                if let Some(a) = a {
                    writeln!(out, "hardware breakpoint DR{slot} {a:#x}")?;
                }
            }
            for w in &t.state.watches {
                writeln!(
                    out,
                    "watchpoint {:?} {:#x} len {} (gpa {:#x})",
                    w.kind, w.gva, w.len, w.gpa
                )?;
            }
            Ok(())
        }
        other => writeln!(out, "error: unknown command {other:?} (try `monitor help`)"),
    }
}
