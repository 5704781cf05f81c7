//! Bochs: the per-run bochsrc, starting Bochs headless and non-interactive, following its
//! serial ports, and stopping it (with its whole process group) on timeout or Ctrl-C.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::emulator::Emulator;
use crate::gdb::GdbHookup as GdbHookupScript;
use crate::iso::write;
use crate::layout::RunDir;
use crate::outcome::{End, Mode, Outcome};
use crate::stream::{Capture, Echo, Port, Progress, SerialTail};
use crate::sys;

pub const DEFAULT_CPU_MODEL: &str = "corei7_skylake_x";
/// The BIOS every run boots (Debian's `bochsbios`).
pub const ROM_IMAGE: &str = "/usr/share/bochs/BIOS-bochs-latest";
pub const DEFAULT_MEGS: u32 = 256;
pub const DEFAULT_CPUS: u32 = 1;
/// The most processors a run may have: Vigil's per-CPU blocks (`vigil/src/percpu.rs`).
pub const MAX_CPUS: u32 = 8;
/// Emulated instructions per emulated second. With `clock: sync=none` this only sets how fast
/// emulated time runs relative to the work done; the run itself is repeatable.
pub const IPS: u64 = 50_000_000;
/// The CMOS clock at power-on (2020-01-01 00:00:00 UTC): fixed for repeatable runs.
pub const TIME0: u64 = 1_577_836_800;
/// How long Bochs may take to exit after the run's last line (`run ended: …` under Vigil, the
/// guest-kit summary bare) before it counts as hung.
pub const END_GRACE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(5);

/// The emulated machine.
#[derive(Clone, Debug)]
pub struct Machine {
    pub megs: u32,
    pub cpu_model: String,
    /// Processors (`cpu: count=N`): the firmware lists each in the MADT, and the extra ones wait
    /// for a start-up IPI as on a real machine.
    pub cpus: u32,
}

impl Default for Machine {
    fn default() -> Machine {
        Machine {
            megs: DEFAULT_MEGS,
            cpu_model: DEFAULT_CPU_MODEL.to_string(),
            cpus: DEFAULT_CPUS,
        }
    }
}

/// The bochsrc of one run on `emulator`; every file it names lives in `dir`. Lines that
/// differ between Bochs versions come from the emulator (`emulator.rs`).
pub fn bochsrc(emulator: &Emulator, machine: &Machine, iso: &Path, dir: &Path) -> String {
    let p = |name: &str| dir.join(name).display().to_string();
    let sound = match emulator.sound_line() {
        Some(line) => format!(
            "# This Bochs has sound support: without a sound card its default driver aborts.\n\
             {line}\n"
        ),
        None => String::new(),
    };
    format!(
        "# Written by cargo xtask for this run.\n\
         {memory}\n\
         # A triple fault stops the emulator (a Bochs panic) instead of rebooting forever.\n\
         cpu: model={model}, count={cpus}, ips={IPS}, reset_on_triple_fault=0\n\
         clock: sync=none, time0={TIME0}\n\
         romimage: file={ROM_IMAGE}\n\
         vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
         ata0-master: type=cdrom, path={iso}, status=inserted\n\
         boot: cdrom\n\
         com1: enabled=1, mode=file, dev={com1}\n\
         com2: enabled=1, mode=file, dev={com2}\n\
         # Headless: a VNC listener that does not wait for a client. Each Bochs takes the first\n\
         # free port from 5900 on, so parallel runs do not collide.\n\
         display_library: rfb, options=\"timeout=0\"\n\
         {sound}\
         speaker: enabled=0\n\
         log: {log}\n\
         panic: action=fatal\n\
         error: action=report\n",
        memory = memory_line(machine.megs),
        model = machine.cpu_model,
        cpus = machine.cpus,
        iso = iso.display(),
        com1 = p("com1.txt"),
        com2 = p("com2.txt"),
        log = p("bochs.log"),
    )
}

/// Bochs' largest `megs:` (its host allocation) is 2048; more guest RAM, up to [`MAX_MEGS`], is
/// `memory: guest=N, host=2048` (Bochs then keeps the part touched beyond the host allocation in
/// a swap file). The BIOS's memory map ends RAM below 4 GiB at 3 GiB, and shows what is beyond
/// 4096 MiB above 4 GiB.
pub const MAX_MEGS: u32 = 8192;

fn memory_line(megs: u32) -> String {
    if megs <= 2048 {
        format!("megs: {megs}")
    } else {
        format!("memory: guest={megs}, host=2048")
    }
}

/// The Bochs debugger commands of a run: run to the end, or stop after `ticks` emulated
/// instructions (a time breakpoint, `sb`) and quit — a budget that is the same for every run,
/// whatever the machine's load.
pub fn debugger_commands(ticks: Option<u64>) -> String {
    match ticks {
        Some(t) => format!("sb {t}\ncontinue\nquit\n"),
        None => "continue\nquit\n".to_string(),
    }
}

/// The one way xtask starts Bochs: the chosen emulator (`emulator.rs`) on the run's bochsrc
/// and debugger command file, in the run directory. Callers add the standard streams.
/// `debugger`: the command file does more than run to the end (breakpoints, a tick budget, an
/// interactive session), so the emulator's debugger must be active.
pub fn command(rc: &Path, cmds: &Path, dir: &Path, debugger: bool) -> Command {
    let emulator = crate::emulator::current();
    let mut c = emulator.command();
    c.arg("-q").arg("-f").arg(rc);
    if debugger {
        c.args(emulator.debugger_flag());
    }
    c.arg("-rc").arg(cmds).current_dir(dir);
    c
}

/// Everything one Bochs run needs.
pub struct RunSpec<'a> {
    pub dir: &'a RunDir,
    pub iso: PathBuf,
    pub machine: Machine,
    pub mode: Mode,
    pub timeout: Duration,
    pub echo: Echo,
}

/// Write the bochsrc and debugger commands, run Bochs until it exits (or the timeout, or
/// Ctrl-C), and return what the serial ports printed.
pub fn run(spec: &RunSpec) -> Result<Outcome, String> {
    let dir = spec.dir;
    let rc = dir.file("bochsrc");
    let cmds = dir.file("bochs.cmds");
    let com1 = dir.file("com1.txt");
    let com2 = dir.file("com2.txt");
    let log = dir.file("bochs.log");
    let out = dir.file("bochs.out");
    for stale in [&com1, &com2] {
        let _ = fs::remove_file(stale);
    }
    let mut rc_text = bochsrc(
        crate::emulator::current(),
        &spec.machine,
        &spec.iso,
        &dir.path,
    );
    // With gdb, COM2 is a socket that xtask relays (gdb.rs); the log still ends in com2.txt.
    let hookup = crate::gdb::hookup_for(&dir.path);
    let mut relay = None;
    if let Some(h) = &hookup {
        let bochs_port = crate::gdb::free_port()?;
        rc_text = crate::gdb::socket_com2(&rc_text, bochs_port);
        let r = crate::gdb::Relay::start(bochs_port, h.listen, &com2, h.load)?;
        if matches!(spec.echo, Echo::Live) {
            crate::step(&format!(
                "gdb stub: connect with `set remotetimeout 30` and `target remote localhost:{}`",
                r.gdb_port
            ));
        }
        relay = Some(r);
    }
    // --- emulator-side oracle (oracle.rs): its bochsrc lines, debugger commands and flag.
    let oracle = crate::oracle::hookup_for(&dir.path);
    if oracle.is_some() {
        rc_text = crate::oracle::bochsrc(&rc_text);
    }
    let budget = crate::scenarios_guests::tick_budget_for(&dir.path);
    // The oracle drives the debugger over stdin (oracle_drive.rs); other runs get a command
    // file. The debugger must act on the commands only when they do more than run to the end.
    let debugger = oracle.is_some() || budget.is_some();
    // --- end of the oracle's hook.
    write(&rc, &rc_text)?;
    // The debugger is compiled in: without commands Bochs stops at t=0 and waits for input.
    write(&cmds, &debugger_commands(budget))?;

    let (mut child, start) = start(&rc, &cmds, debugger, oracle.is_some(), dir, &log, &out)?;
    let pgid = child.id();
    // --- emulator-side oracle: its session with the debugger runs beside the run.
    let driver = match (&oracle, child.stdin.take(), child.stdout.take()) {
        (Some(plan), Some(to), Some(from)) => {
            let transcript = fs::OpenOptions::new()
                .append(true)
                .open(&out)
                .map_err(|e| format!("cannot open {}: {e}", out.display()))?;
            let plan = plan.clone();
            Some(thread::spawn(move || {
                crate::oracle_drive::drive(to, from, transcript, &plan)
            }))
        }
        _ => None,
    };
    // --- end of the oracle's hook.
    let mut gdb = match (&hookup, &relay) {
        (
            Some(GdbHookupScript {
                script: Some(script),
                ..
            }),
            Some(r),
        ) => Some(crate::gdb::spawn_gdb(script, r.gdb_port, &dir.path)?),
        _ => None,
    };

    let mut tails = [
        SerialTail::new(Port::Guest, com1),
        SerialTail::new(Port::Vigil, com2),
    ];
    let mut capture = Capture::default();
    let mut progress = Progress::new(matches!(spec.echo, Echo::Live));
    let mut first_byte = None;
    let mut ended_at: Option<Instant> = None;

    let end = loop {
        let exited = child
            .try_wait()
            .map_err(|e| format!("waiting for bochs: {e}"))?;
        let finishing = exited.is_some();
        for tail in tails.iter_mut() {
            let lines = if finishing {
                tail.finish()
            } else {
                tail.poll()
            };
            if first_byte.is_none() && tail.bytes > 0 {
                first_byte = Some(start.elapsed());
                progress.done();
            }
            for line in lines {
                spec.echo.line(tail.port, &line);
                if ended_at.is_none() && spec.mode.is_last_line(tail.port, &line) {
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
        if start.elapsed() >= spec.timeout {
            break End::TimedOut;
        }
        if ended_at.is_some_and(|t| t.elapsed() >= END_GRACE) {
            break End::HungAfterLastLine;
        }
        if first_byte.is_none() {
            progress.tick(start.elapsed());
        }
        thread::sleep(POLL);
    };
    progress.done();
    let elapsed = start.elapsed();
    // --- emulator-side oracle: a run that did not end by itself first gets SIGINT, which
    // Bochs' debugger turns into a stop that dumps memory (oracle.rs); then it is killed.
    if oracle.is_some() && !matches!(end, End::Exited(_) | End::Interrupted) {
        crate::oracle::interrupt(pgid);
        let deadline = Instant::now() + END_GRACE;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
    }
    // --- end of the oracle's hook.
    if !matches!(end, End::Exited(_)) {
        sys::kill_process_group(pgid);
        let _ = child.wait();
        // Lines that arrived since the last poll.
        for tail in tails.iter_mut() {
            for line in tail.finish() {
                spec.echo.line(tail.port, &line);
                capture.lines.push((tail.port, line));
            }
        }
    }
    // The group may hold more than the leader; make sure nothing is left behind.
    sys::kill_process_group(pgid);
    if let Some(d) = driver {
        // Bochs is gone: the session reads EOF and ends.
        let _ = d.join();
    }
    if let Some(g) = gdb.as_mut() {
        // gdb ends when the stub goes away; give it a moment to write its last lines.
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(g.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        let _ = g.kill();
        let _ = g.wait();
    }
    if let Some(r) = relay {
        r.stop();
    }

    Ok(Outcome {
        mode: spec.mode,
        capture,
        end,
        elapsed,
        first_byte,
        timeout: spec.timeout,
        bochs_problems: problems(&log, &out),
        dir: dir.path.clone(),
    })
}

/// How often Bochs is started again when its VNC listener found no port.
const START_ATTEMPTS: u32 = 4;

/// Start Bochs headless; returns it and the moment it started.
///
/// Bochs 2.7's RFB display binds the first free port from 5900 on, but when two Bochs start at
/// the same moment the loser's `listen` fails on the port the other just bound, and it then
/// fails every other port with the same socket: "RFB could not bind any port between 5900 and
/// 5949", and it dies. So starts are serialized machine-wide (a lock file in the temporary
/// directory, held until this Bochs listens), and a start that still lost is retried.
#[allow(clippy::too_many_arguments)]
fn start(
    rc: &Path,
    cmds: &Path,
    debugger: bool,
    interactive: bool,
    dir: &RunDir,
    log: &Path,
    out: &Path,
) -> Result<(Child, Instant), String> {
    let lock_path = std::env::temp_dir().join("vigil-xtask-bochs-start.lock");
    let mut attempt = 1;
    loop {
        let lock = File::create(&lock_path)
            .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
        lock.lock()
            .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
        for stale in [log, out] {
            let _ = fs::remove_file(stale);
        }
        let out_file =
            File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        let started = Instant::now();
        let mut cmd = if interactive {
            // The oracle's session: the debugger reads its commands from stdin, and its answers
            // are appended to bochs.out by the session, beside Bochs' own stderr.
            drop(out_file);
            let err_file = fs::OpenOptions::new()
                .append(true)
                .open(out)
                .map_err(|e| format!("{e}"))?;
            let mut c = crate::emulator::current().command();
            c.arg("-q").arg("-f").arg(rc);
            c.args(crate::emulator::current().debugger_flag());
            c.current_dir(&dir.path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(err_file);
            c
        } else {
            let err_file = out_file.try_clone().map_err(|e| format!("{e}"))?;
            let mut c = command(rc, cmds, &dir.path, debugger);
            c.stdin(Stdio::null()).stdout(out_file).stderr(err_file);
            c
        };
        let mut child = cmd
            // Its own process group: the terminal's Ctrl-C reaches only xtask, which then
            // kills the whole group (the `bochs` wrapper script execs `bochs-bin`).
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start bochs: {e}"))?;
        let listening = wait_for_listener(&mut child, log);
        drop(lock);
        match listening {
            Listener::Lost if attempt < START_ATTEMPTS => {
                sys::kill_process_group(child.id());
                let _ = child.wait();
                attempt += 1;
                thread::sleep(Duration::from_millis(200));
            }
            _ => return Ok((child, started)),
        }
    }
}

enum Listener {
    /// Listening, or Bochs ended or took too long for another reason (the run will tell).
    Settled,
    /// "RFB could not bind any port".
    Lost,
}

fn wait_for_listener(child: &mut Child, log: &Path) -> Listener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read(log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        if text.contains("could not bind any port") {
            return Listener::Lost;
        }
        if text.contains("listening for connections on port")
            || !matches!(child.try_wait(), Ok(None))
            || Instant::now() >= deadline
            || sys::interrupted()
        {
            return Listener::Settled;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The CPU models the chosen Bochs knows (`bochs --help cpu`).
pub fn cpu_models() -> Result<Vec<String>, String> {
    let out = crate::emulator::current()
        .command()
        .args(["--help", "cpu"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bochs: {e}"))?;
    // The list goes to stderr (with the log lines), the banner to stdout.
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    Ok(parse_cpu_models(&text))
}

fn parse_cpu_models(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.contains("Supported CPU models:"))
        .skip(1)
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .filter(|l| l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(String::from)
        .collect()
}

/// Refuse a CPU model Bochs does not know, listing the ones it does.
pub fn check_cpu_model(model: &str) -> Result<(), String> {
    let models = cpu_models()?;
    if models.is_empty() || models.iter().any(|m| m == model) {
        Ok(())
    } else {
        Err(format!(
            "Bochs has no CPU model {model:?}; it knows: {}",
            models.join(" ")
        ))
    }
}

/// Bochs' own complaints worth showing with a failure: panics from bochs.log (except the
/// shutdown port, which is how a run ends) and its exit message from its stdout/stderr.
fn problems(log: &Path, out: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let log = fs::read(log).unwrap_or_default();
    for line in String::from_utf8_lossy(&log).lines() {
        if line.contains(">>PANIC<<") && !line.contains("Shutdown port: shutdown requested") {
            found.push(format!("bochs.log: {}", line.trim()));
        }
    }
    let out = fs::read(out).unwrap_or_default();
    for line in String::from_utf8_lossy(&out).lines() {
        let l = line.trim();
        if l.contains("buffer overflow")
            || l.starts_with("*** ")
            || (l.contains("PANIC") && !l.contains("Shutdown port"))
            || l.starts_with("Message:")
            || l.contains("ERROR:")
        {
            found.push(format!("bochs: {l}"));
        }
    }
    found.truncate(10);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_list() {
        let text = "00000000000i[      ] LTDL_LIBRARY_PATH not set\nSupported CPU models:\n\n\
                    bx_generic\npentium\ncorei7_skylake_x\ntigerlake\n\n\
                    00000000000i[SIM   ] quit_sim called with exit code 0\n";
        assert_eq!(
            parse_cpu_models(text),
            vec!["bx_generic", "pentium", "corei7_skylake_x", "tigerlake"]
        );
    }

    #[test]
    fn bochsrc_is_headless_deterministic_and_names_the_run_files() {
        let machine = Machine {
            megs: 128,
            cpu_model: "tigerlake".into(),
            cpus: 1,
        };
        let debian = Emulator {
            program: "bochs".into(),
            version: crate::emulator::Version(2, 7),
            origin: String::new(),
            sound: true,
        };
        let rc = bochsrc(
            &debian,
            &machine,
            Path::new("/r/vigil.iso"),
            Path::new("/r"),
        );
        for want in [
            "megs: 128\n",
            "cpu: model=tigerlake, count=1, ips=50000000, reset_on_triple_fault=0\n",
            "clock: sync=none, time0=1577836800\n",
            "romimage: file=/usr/share/bochs/BIOS-bochs-latest\n",
            "vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n",
            "ata0-master: type=cdrom, path=/r/vigil.iso, status=inserted\n",
            "boot: cdrom\n",
            "com1: enabled=1, mode=file, dev=/r/com1.txt\n",
            "com2: enabled=1, mode=file, dev=/r/com2.txt\n",
            "display_library: rfb, options=\"timeout=0\"\n",
            "sound: driver=dummy\n",
            "log: /r/bochs.log\n",
            "panic: action=fatal\n",
            "error: action=report\n",
        ] {
            assert!(rc.contains(want), "missing {want:?} in\n{rc}");
        }
        // The reference build has no sound support and refuses a `sound:` line.
        let built = Emulator {
            version: crate::emulator::Version(3, 0),
            sound: false,
            ..debian.clone()
        };
        let rc = bochsrc(&built, &machine, Path::new("/r/vigil.iso"), Path::new("/r"));
        assert!(!rc.contains("\nsound:"), "{rc}");
        assert!(rc.contains("speaker: enabled=0\n"));
        let big = Machine {
            megs: 4096,
            cpus: 4,
            ..machine
        };
        let rc = bochsrc(&debian, &big, Path::new("/r/vigil.iso"), Path::new("/r"));
        assert!(rc.contains("memory: guest=4096, host=2048\n"), "{rc}");
        assert!(rc.contains("cpu: model=tigerlake, count=4, "), "{rc}");
        assert!(!rc.contains("megs:"));
        assert_eq!(debugger_commands(None), "continue\nquit\n");
        assert_eq!(debugger_commands(Some(5)), "sb 5\ncontinue\nquit\n");
    }
}
