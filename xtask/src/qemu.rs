//! QEMU's TCG as a second AMD platform: Debian's `qemu-system-x86` (7.2) emulates SVM with
//! nested paging but without NRIP save, decode assists or flush-by-ASID, so Vigil's SVM
//! backend runs there on its fallbacks (instruction lengths and operands decoded from the
//! guest's bytes, every TLB flush a full one).
//!
//! The same ISO as Bochs boots from `-cdrom`; COM1 and COM2 go to files that the same serial
//! tails read. QEMU has no Bochs shutdown port: an `isa-debug-exit` device at 0x8900 ends QEMU
//! at the first byte written there (the `S` of `Shutdown`), with exit status `(0x53 << 1) | 1`.
//! Under Vigil that port is Vigil's: the guest's write is trapped and Vigil writes it itself
//! after printing its statistics, exactly as in Bochs.
//!
//! Time in QEMU is the host's: tick counts follow the machine xtask runs on, so QEMU runs check
//! behaviour, never cost.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::layout::RunDir;
use crate::outcome::{End, Mode, Outcome};
use crate::stream::{Capture, Echo, Port, SerialTail};
use crate::sys;

/// The binary.
pub const PROGRAM: &str = "qemu-system-x86_64";
/// The "CPU model" a scenario names to run on QEMU: the flags go to `-cpu`.
pub const MODEL: &str = "qemu64,+svm,+npt,+rdtscp";
/// What the isa-debug-exit device makes QEMU exit with when Vigil (or a bare guest) writes the
/// `S` of the shutdown sequence.
pub const SHUTDOWN_STATUS: i32 = (0x53 << 1) | 1;

const POLL: Duration = Duration::from_millis(100);
/// How long QEMU may take to exit after the run's last line.
const END_GRACE: Duration = Duration::from_secs(10);

pub fn is_qemu_model(model: &str) -> bool {
    model == MODEL
}

/// Where QEMU is, if installed.
pub fn program() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(PROGRAM))
        .find(|p| p.is_file())
}

/// Why a QEMU scenario cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    program()
        .is_none()
        .then(|| format!("needs {PROGRAM} (Debian's qemu-system-x86), which is not installed"))
}

/// The command line for one run.
pub fn arguments(iso: &Path, megs: u32, com1: &Path, com2: &Path) -> Vec<String> {
    ["-accel", "tcg", "-machine", "pc", "-cpu", MODEL, "-m"]
        .iter()
        .map(|s| s.to_string())
        .chain([
            megs.to_string(),
            "-cdrom".into(),
            iso.display().to_string(),
            "-boot".into(),
            "d".into(),
            "-display".into(),
            "none".into(),
            "-serial".into(),
            format!("file:{}", com1.display()),
            "-serial".into(),
            format!("file:{}", com2.display()),
            "-device".into(),
            "isa-debug-exit,iobase=0x8900,iosize=1".into(),
            "-no-reboot".into(),
        ])
        .collect()
}

/// Boots `iso` in QEMU and collects what the serial ports printed, as a Bochs run does.
pub fn run(
    dir: &RunDir,
    iso: &Path,
    megs: u32,
    mode: Mode,
    timeout: Duration,
    echo: &Echo,
) -> Result<Outcome, String> {
    let program = program().ok_or_else(|| missing().unwrap_or_default())?;
    let (com1, com2, out) = (
        dir.file("com1.txt"),
        dir.file("com2.txt"),
        dir.file("qemu.out"),
    );
    for stale in [&com1, &com2, &out] {
        let _ = fs::remove_file(stale);
    }
    let args = arguments(iso, megs, &com1, &com2);
    fs::write(
        dir.file("qemu.cmd"),
        format!("{} {}\n", program.display(), args.join(" ")),
    )
    .map_err(|e| format!("cannot write the QEMU command line: {e}"))?;
    let out_file = fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let err_file = out_file.try_clone().map_err(|e| format!("{e}"))?;
    let start = Instant::now();
    let mut child = Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(out_file)
        .stderr(err_file)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let pgid = child.id();
    let mut tails = [
        SerialTail::new(Port::Guest, com1),
        SerialTail::new(Port::Vigil, com2),
    ];
    let mut capture = Capture::default();
    let (mut first_byte, mut ended_at) = (None, None::<Instant>);
    let end = loop {
        let exited = child
            .try_wait()
            .map_err(|e| format!("waiting for QEMU: {e}"))?;
        for tail in tails.iter_mut() {
            let lines = if exited.is_some() {
                tail.finish()
            } else {
                tail.poll()
            };
            if first_byte.is_none() && tail.bytes > 0 {
                first_byte = Some(start.elapsed());
            }
            for line in lines {
                echo.line(tail.port, &line);
                if ended_at.is_none() && mode.is_last_line(tail.port, &line) {
                    ended_at = Some(Instant::now());
                }
                capture.lines.push((tail.port, line));
            }
        }
        if let Some(status) = exited {
            break End::Exited(status);
        }
        if sys::interrupted() {
            break End::Interrupted;
        }
        if start.elapsed() >= timeout {
            break End::TimedOut;
        }
        if ended_at.is_some_and(|t| t.elapsed() >= END_GRACE) {
            break End::HungAfterLastLine;
        }
        thread::sleep(POLL);
    };
    let elapsed = start.elapsed();
    sys::kill_process_group(pgid);
    if !matches!(end, End::Exited(_)) {
        let _ = child.wait();
        for tail in tails.iter_mut() {
            for line in tail.finish() {
                echo.line(tail.port, &line);
                capture.lines.push((tail.port, line));
            }
        }
    }
    let problems = fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("qemu: {l}"))
        .collect();
    Ok(Outcome {
        mode,
        capture,
        end,
        elapsed,
        first_byte,
        timeout,
        bochs_problems: problems,
        dir: dir.path.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_boots_the_cd_with_svm_and_the_exit_port() {
        let args = arguments(
            Path::new("/r/vigil.iso"),
            256,
            Path::new("/r/com1.txt"),
            Path::new("/r/com2.txt"),
        );
        let line = args.join(" ");
        assert!(line.contains("-accel tcg"));
        assert!(line.contains("-cpu qemu64,+svm,+npt,+rdtscp"));
        assert!(line.contains("-cdrom /r/vigil.iso -boot d"));
        assert!(line.contains("-serial file:/r/com1.txt -serial file:/r/com2.txt"));
        assert!(line.contains("isa-debug-exit,iobase=0x8900,iosize=1"));
        assert!(line.contains("-m 256"));
        assert_eq!(SHUTDOWN_STATUS, 167);
        assert!(is_qemu_model(MODEL) && !is_qemu_model("ryzen"));
    }
}
