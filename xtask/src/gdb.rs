//! Debugging runs: `--gdb PORT` (gdb attaches to Vigil's stub on COM2 through a TCP relay),
//! `--gdb-wait`, and `--debug-vigil` (Bochs' own debugger on Vigil, with its symbols).
//!
//! With `--gdb`, Bochs' COM2 is a socket server on a private port (`com2: mode=socket-server`).
//! xtask connects to it at once and relays: gdb's bytes go to COM2 unchanged; from COM2, GDB
//! packets and acks go to gdb, and everything else is Vigil's log, which goes to `com2.txt` and
//! so is shown live as `vigil| …` as in any run. Log lines Vigil sends as console-output
//! packets (`$O<hex>#cc`) while gdb is attached are both forwarded to gdb and decoded into
//! `com2.txt`. gdb may connect, detach and connect again; the log is never lost.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// `cargo xtask run` flags for debugging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebugArgs {
    /// `--gdb PORT`: the TCP port gdb connects to.
    pub gdb_port: Option<u16>,
    /// `--gdb-wait`: Vigil holds the guest before its first instruction until gdb continues.
    pub gdb_wait: bool,
    /// `--debug-vigil`: Bochs' internal debugger with Vigil's symbols, stopped at Vigil's entry.
    pub debug_vigil: bool,
}

impl DebugArgs {
    /// The Vigil options these flags imply, appended to the run's own.
    pub fn add_vigil_options(&self, options: &mut String) {
        let mut add = |w: &str| {
            if !options.split_whitespace().any(|o| o == w) {
                if !options.is_empty() {
                    options.push(' ');
                }
                options.push_str(w);
            }
        };
        if self.gdb_port.is_some() || self.gdb_wait {
            add("gdb=com2");
        }
        if self.gdb_wait {
            add("gdb-wait=on");
        }
    }
}

/// How a Bochs run connects gdb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GdbHookup {
    /// The port gdb connects to (0: any free port).
    pub listen: u16,
    /// A gdb command file to run in batch mode against the stub (`{PORT}` is replaced), with
    /// its output in `gdb.out` of the run directory.
    pub script: Option<String>,
    /// A deliberately loaded machine for the run (a test of the stub under load).
    pub load: Option<Load>,
}

/// What a loaded machine does to a gdb session: every CPU busy, and the stub's first answers
/// reaching gdb late, as on a machine too busy to run Bochs promptly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// Threads that spin for the whole run (one per CPU: the machine is saturated).
    pub busy_threads: usize,
    /// How many of the stub's first answers (acknowledgement and reply) the relay holds back.
    pub late_answers: u32,
    /// How long each is held: longer than gdb's remote timeout, so gdb retransmits.
    pub late_by: Duration,
}

/// Runs that connect gdb, by run directory: `run` and `test` register a hookup before
/// `bochs::run`, which takes it (so the run's other code paths need not know about gdb).
static HOOKUPS: Mutex<Vec<(PathBuf, GdbHookup)>> = Mutex::new(Vec::new());

pub fn register(dir: &Path, hookup: GdbHookup) {
    HOOKUPS.lock().unwrap().push((dir.to_path_buf(), hookup));
}

pub fn hookup_for(dir: &Path) -> Option<GdbHookup> {
    let mut all = HOOKUPS.lock().unwrap();
    let i = all.iter().position(|(d, _)| d == dir)?;
    Some(all.swap_remove(i).1)
}

/// The bochsrc with COM2 as a socket server on `port` instead of a file.
pub fn socket_com2(bochsrc: &str, port: u16) -> String {
    bochsrc
        .lines()
        .map(|l| {
            if l.starts_with("com2:") {
                format!("com2: enabled=1, mode=socket-server, dev=localhost:{port}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free TCP port: {e}"))
}

/// Splits the byte stream from COM2 into what goes to gdb and Vigil's log text.
#[derive(Default)]
pub struct Demux {
    packet: Vec<u8>,
    in_packet: bool,
    checksum_left: u8,
    at_line_start: bool,
}

/// Where demultiplexed bytes go.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub to_gdb: Vec<u8>,
    pub log: Vec<u8>,
}

impl Demux {
    pub fn new() -> Demux {
        Demux {
            at_line_start: true,
            ..Demux::default()
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> Split {
        let mut out = Split::default();
        for &b in bytes {
            if self.in_packet {
                self.packet.push(b);
                if self.checksum_left > 0 {
                    self.checksum_left -= 1;
                    if self.checksum_left == 0 {
                        self.in_packet = false;
                        let p = std::mem::take(&mut self.packet);
                        let body = &p[1..p.len().saturating_sub(3)];
                        if let Some(text) = decode_o(body) {
                            out.log.extend_from_slice(&text);
                        }
                        out.to_gdb.extend_from_slice(&p);
                        self.at_line_start = true;
                    }
                } else if b == b'#' {
                    self.checksum_left = 2;
                }
                continue;
            }
            match b {
                b'$' => {
                    self.in_packet = true;
                    self.packet = vec![b];
                }
                // An ack stands alone; a '+' inside a log line is text.
                b'+' if self.at_line_start => out.to_gdb.push(b),
                _ => {
                    out.log.push(b);
                    self.at_line_start = b == b'\n';
                }
            }
        }
        out
    }
}

/// The text of a console-output packet body `O<hex>` (not `OK`).
fn decode_o(body: &[u8]) -> Option<Vec<u8>> {
    let hex = body.strip_prefix(b"O")?;
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// A running relay; it ends when Bochs closes COM2 or on [`Relay::stop`].
pub struct Relay {
    pub gdb_port: u16,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Starts relaying Bochs' COM2 socket at `bochs_port` (connecting as soon as Bochs listens)
    /// and listening for gdb on `listen` (0: any free port); the log goes to `com2_path`. With
    /// a `load`, the machine is kept busy and the stub's first answers come late, until the
    /// relay stops.
    pub fn start(
        bochs_port: u16,
        listen: u16,
        com2_path: &Path,
        load: Option<Load>,
    ) -> Result<Relay, String> {
        let listener = TcpListener::bind(("127.0.0.1", listen))
            .map_err(|e| format!("cannot listen for gdb on port {listen}: {e}"))?;
        let gdb_port = listener.local_addr().map_err(|e| e.to_string())?.port();
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let bochs: Arc<Mutex<Option<TcpStream>>> = Arc::default();
        let client: Arc<Mutex<Option<TcpStream>>> = Arc::default();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(com2_path)
            .map_err(|e| format!("cannot open {}: {e}", com2_path.display()))?;

        let (stop1, bochs1, client1) = (stop.clone(), bochs.clone(), client.clone());
        let late = load.map_or((0, Duration::ZERO), |l| (l.late_answers, l.late_by));
        thread::spawn(move || from_bochs(bochs_port, log, stop1, bochs1, client1, late));
        for _ in 0..load.map_or(0, |l| l.busy_threads) {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1_000_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                }
            });
        }
        let stop2 = stop.clone();
        thread::spawn(move || accept_gdb(listener, stop2, bochs, client));
        Ok(Relay { gdb_port, stop })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn from_bochs(
    port: u16,
    mut log: File,
    stop: Arc<AtomicBool>,
    bochs: Arc<Mutex<Option<TcpStream>>>,
    client: Arc<Mutex<Option<TcpStream>>>,
    (mut late_answers, late_by): (u32, Duration),
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stream = loop {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return;
        }
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    if let Ok(w) = stream.try_clone() {
        *bochs.lock().unwrap() = Some(w);
    }
    let mut demux = Demux::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        let split = demux.push(&buf[..n]);
        if !split.log.is_empty() {
            let _ = log.write_all(&split.log);
            let _ = log.flush();
        }
        if !split.to_gdb.is_empty() {
            // A loaded machine: this answer reaches gdb late (everything behind it waits too).
            if late_answers > 0 && split.to_gdb.contains(&b'+') && client.lock().unwrap().is_some()
            {
                late_answers -= 1;
                thread::sleep(late_by);
            }
            if let Some(c) = client.lock().unwrap().as_mut() {
                let _ = c.write_all(&split.to_gdb);
            }
        }
    }
    if let Some(c) = client.lock().unwrap().take() {
        let _ = c.shutdown(Shutdown::Both);
    }
}

fn accept_gdb(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    bochs: Arc<Mutex<Option<TcpStream>>>,
    client: Arc<Mutex<Option<TcpStream>>>,
) {
    // Until COM2 is connected, clients wait in the listen queue (their bytes too).
    while bochs.lock().unwrap().is_none() && !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(20));
    }
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut conn, _)) = listener.accept() else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_nodelay(true);
        if let Ok(w) = conn.try_clone() {
            *client.lock().unwrap() = Some(w);
        }
        let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(b) = bochs.lock().unwrap().as_mut() {
                        let _ = b.write_all(&buf[..n]);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        *client.lock().unwrap() = None;
    }
}

/// A batch gdb run against the relay: `gdb -batch -nx -x SCRIPT`, output in `out`.
pub fn spawn_gdb(script: &str, port: u16, dir: &Path) -> Result<std::process::Child, String> {
    let file = dir.join("gdb.cmds");
    std::fs::write(&file, script.replace("{PORT}", &port.to_string()))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let out = File::create(dir.join("gdb.out")).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    std::process::Command::new("gdb")
        .args(["-batch", "-nx", "-x"])
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run gdb: {e}"))
}

/// `--debug-vigil`: Vigil's symbols for Bochs' `ldsym` (one `ADDRESS NAME` line each, from
/// `nm`) and the debugger commands that stop at Vigil's entry point.
pub fn debug_vigil_files(vigil: &Path, dir: &Path) -> Result<(PathBuf, u64), String> {
    let out = std::process::Command::new("nm")
        .args(["-n", "--defined-only", "-C"])
        .arg(vigil)
        .output()
        .map_err(|e| format!("cannot run nm (binutils): {e}"))?;
    if !out.status.success() {
        return Err(format!("nm {} failed", vigil.display()));
    }
    let (syms, entry) = symbol_file(&String::from_utf8_lossy(&out.stdout), elf_entry(vigil)?);
    let path = dir.join("vigil.sym");
    std::fs::write(&path, syms).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((path, entry))
}

/// `nm -n` output to Bochs' symbol format; returns it and the entry address.
pub fn symbol_file(nm: &str, entry: u64) -> (String, u64) {
    let mut syms = String::new();
    for line in nm.lines() {
        let mut words = line.splitn(3, ' ');
        let (Some(addr), Some(kind), Some(name)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        if kind.eq_ignore_ascii_case("t")
            || kind.eq_ignore_ascii_case("d")
            || kind.eq_ignore_ascii_case("b")
            || kind.eq_ignore_ascii_case("r")
        {
            if let Ok(a) = u64::from_str_radix(addr, 16) {
                syms.push_str(&format!("{a:x} {}\n", name.replace(' ', "_")));
            }
        }
    }
    (syms, entry)
}

/// The ELF64 entry point (e_entry at offset 24).
fn elf_entry(path: &Path) -> Result<u64, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() < 32 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return Err(format!("{} is not an ELF64 file", path.display()));
    }
    Ok(u64::from_le_bytes(bytes[24..32].try_into().unwrap()))
}

/// The Bochs debugger commands of `--debug-vigil`.
pub fn debug_vigil_commands(symbols: &Path, entry: u64) -> String {
    format!(
        "ldsym global \"{}\"\nlb {entry:#x}\ncontinue\n",
        symbols.display()
    )
}

/// `cargo xtask run --debug-vigil`: Bochs in the foreground with its debugger on this terminal,
/// Vigil's symbols loaded and a breakpoint at Vigil's entry point.
pub fn debug_vigil(
    layout: &crate::layout::Layout,
    args: &crate::cli::RunArgs,
    dir: &crate::layout::RunDir,
) -> Result<bool, String> {
    let vigil = layout.bare_bin(crate::build::VIGIL);
    let (symbols, entry) = debug_vigil_files(&vigil, &dir.path)?;
    let machine = crate::bochs::Machine {
        megs: args.megs,
        cpu_model: args.cpu_model.clone(),
        cpus: args.cpus,
    };
    let rc = dir.file("bochsrc");
    crate::iso::write(
        &rc,
        &crate::bochs::bochsrc(
            crate::emulator::current(),
            &machine,
            &dir.file("vigil.iso"),
            &dir.path,
        ),
    )?;
    let cmds = dir.file("bochs.cmds");
    crate::iso::write(&cmds, &debug_vigil_commands(&symbols, entry))?;
    crate::step(&format!(
        "Bochs debugger: Vigil's symbols from {}, stopping at Vigil's entry {entry:#x}",
        symbols.display()
    ));
    crate::step(
        "then: `vmexitbp` stops at every VM exit, `lb ADDR` / `lb SYMBOL` sets a breakpoint, \
         `r`, `sreg`, `x /4gx ADDR`, `info symbol`, `c` continues, `q` quits",
    );
    crate::step(&format!(
        "serial output goes to {} and {}",
        dir.file("com1.txt").display(),
        dir.file("com2.txt").display()
    ));
    // In the foreground, on this terminal: the debugger reads the user's commands.
    let status = crate::bochs::command(&rc, &cmds, &dir.path, true)
        .status()
        .map_err(|e| format!("cannot start bochs: {e}"))?;
    // Bochs exits with 1 after the guest's shutdown port, which is normal.
    Ok(status.success() || status.code() == Some(1))
}

#[cfg(test)]
#[path = "gdb_relay_tests.rs"]
mod tests;
