//! Following the serial ports while Bochs runs: Bochs appends COM1/COM2 output to files
//! (`mode=file`); we tail them, split complete lines, echo them live as `guest| …` / `vigil| …`
//! and keep everything in memory for the checks.

use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Which serial port a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// COM1: the guest's.
    Guest,
    /// COM2: Vigil's.
    Vigil,
}

impl Port {
    pub fn prefix(self) -> &'static str {
        match self {
            Port::Guest => "guest| ",
            Port::Vigil => "vigil| ",
        }
    }
}

/// All serial lines of a run, in the order they were seen (the order between the two ports is
/// exact to one poll interval).
#[derive(Clone, Debug, Default)]
pub struct Capture {
    pub lines: Vec<(Port, String)>,
}

impl Capture {
    pub fn port(&self, port: Port) -> impl Iterator<Item = &str> + '_ {
        self.lines
            .iter()
            .filter(move |(p, _)| *p == port)
            .map(|(_, l)| l.as_str())
    }

    pub fn com1(&self) -> Vec<&str> {
        self.port(Port::Guest).collect()
    }

    pub fn com2(&self) -> Vec<&str> {
        self.port(Port::Vigil).collect()
    }

    /// The last non-blank line of a port.
    pub fn last_line(&self, port: Port) -> Option<&str> {
        self.port(port)
            .filter(|l| !l.trim().is_empty())
            .last()
            .map(str::trim)
    }

    /// The last `n` lines, prefixed with their port, for failure reports.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines[skip..]
            .iter()
            .map(|(p, l)| format!("{}{l}", p.prefix()))
            .collect()
    }
}

/// How lines are shown while a run goes on.
#[derive(Clone, Debug)]
pub enum Echo {
    /// Print each line as `guest| …` / `vigil| …` (plus the boot progress line on stderr).
    Live,
    /// Print each line as `<label> guest| …`.
    Labelled(String),
    /// Print nothing; the caller reports at the end.
    Quiet,
}

impl Echo {
    pub fn line(&self, port: Port, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = match self {
            Echo::Live => writeln!(out, "{}{line}", port.prefix()),
            Echo::Labelled(label) => writeln!(out, "{label} {}{line}", port.prefix()),
            Echo::Quiet => Ok(()),
        };
    }
}

/// Incremental reader of one serial output file, which may not exist yet.
pub struct SerialTail {
    pub port: Port,
    path: PathBuf,
    file: Option<File>,
    partial: Vec<u8>,
    /// Bytes seen so far.
    pub bytes: u64,
}

impl SerialTail {
    pub fn new(port: Port, path: PathBuf) -> SerialTail {
        SerialTail {
            port,
            path,
            file: None,
            partial: Vec::new(),
            bytes: 0,
        }
    }

    /// Complete lines that arrived since the last call.
    pub fn poll(&mut self) -> Vec<String> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(_) => return Vec::new(),
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Vec::new();
        };
        let mut fresh = Vec::new();
        if file.read_to_end(&mut fresh).is_err() {
            // Keep going from where we were on the next poll.
            let _ = file.seek(SeekFrom::Start(self.bytes));
            return Vec::new();
        }
        self.bytes += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        split_lines(&mut self.partial)
    }

    /// The last lines, including one without a final newline (called once the run is over).
    pub fn finish(&mut self) -> Vec<String> {
        let mut lines = self.poll();
        if !self.partial.is_empty() {
            lines.push(clean(&std::mem::take(&mut self.partial)));
        }
        lines
    }
}

/// Take the complete lines off the front of `buf` (`\n`-terminated; a `\r` before it dropped).
pub fn split_lines(buf: &mut Vec<u8>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
        let rest = buf.split_off(pos + 1);
        let mut line = std::mem::replace(buf, rest);
        line.pop();
        lines.push(clean(&line));
    }
    lines
}

fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.trim_end_matches('\r').replace('\r', "")
}

/// "booting Bochs… 3s" on stderr until the first serial byte: redrawn in place on a terminal,
/// printed once otherwise.
pub struct Progress {
    enabled: bool,
    terminal: bool,
    shown: bool,
    last_secs: u64,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            terminal: std::io::stderr().is_terminal(),
            shown: false,
            last_secs: u64::MAX,
        }
    }

    pub fn tick(&mut self, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let secs = elapsed.as_secs();
        if self.terminal {
            if secs != self.last_secs {
                eprint!("\r\x1b[Kbooting Bochs… {secs}s");
                let _ = std::io::stderr().flush();
                self.last_secs = secs;
                self.shown = true;
            }
        } else if !self.shown {
            eprintln!("booting Bochs…");
            self.shown = true;
        }
    }

    /// Remove the in-place line (first byte arrived, or the run ended) and stop showing it.
    pub fn done(&mut self) {
        if self.enabled && self.terminal && self.shown {
            eprint!("\r\x1b[K");
            let _ = std::io::stderr().flush();
        }
        self.enabled = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_on_newline_and_drop_carriage_returns() {
        let mut buf = b"one\r\ntwo\nthr".to_vec();
        assert_eq!(split_lines(&mut buf), vec!["one", "two"]);
        assert_eq!(buf, b"thr");
        buf.extend_from_slice(b"ee\n\n");
        assert_eq!(split_lines(&mut buf), vec!["three", ""]);
        assert!(buf.is_empty());
    }

    #[test]
    fn tail_follows_a_growing_file() {
        let dir = std::env::temp_dir().join(format!("xtask-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("com1.txt");
        let _ = std::fs::remove_file(&path);
        let mut tail = SerialTail::new(Port::Guest, path.clone());
        assert!(tail.poll().is_empty(), "file does not exist yet");
        std::fs::write(&path, "PASS a\nPAS").unwrap();
        assert_eq!(tail.poll(), vec!["PASS a"]);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"S b\nend").unwrap();
        assert_eq!(tail.poll(), vec!["PASS b"]);
        assert_eq!(tail.finish(), vec!["end"]);
        assert_eq!(tail.bytes, 17);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn capture_queries() {
        let capture = Capture {
            lines: vec![
                (Port::Guest, "hello".into()),
                (Port::Vigil, "run ended: ok".into()),
                (Port::Vigil, "  ".into()),
            ],
        };
        assert_eq!(capture.com1(), vec!["hello"]);
        assert_eq!(capture.last_line(Port::Vigil), Some("run ended: ok"));
        assert_eq!(capture.tail(2), vec!["vigil| run ended: ok", "vigil|   "]);
    }
}
