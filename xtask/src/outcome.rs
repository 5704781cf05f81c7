//! What a Bochs run left behind, and the verdict on it. Pass or fail is decided from the serial
//! text alone, never from Bochs' exit status (1 is its normal status after the shutdown port).

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::report;
use crate::stream::{Capture, Port};

/// Whether the guest runs under Vigil or bare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Vigil,
    Bare,
}

impl Mode {
    /// The line after which nothing more is expected and Bochs should exit by itself.
    pub fn is_last_line(self, port: Port, line: &str) -> bool {
        match (self, port) {
            (Mode::Vigil, Port::Vigil) => line.trim().starts_with("run ended:"),
            (Mode::Bare, Port::Guest) => report::summary_line(line).is_some(),
            _ => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Vigil => "vigil",
            Mode::Bare => "bare",
        }
    }
}

/// How the Bochs process ended.
#[derive(Clone, Copy, Debug)]
pub enum End {
    /// Bochs exited by itself.
    Exited(ExitStatus),
    /// The run's timeout passed; xtask killed Bochs.
    TimedOut,
    /// Ctrl-C or SIGTERM; xtask killed Bochs.
    Interrupted,
    /// The run's last line came, but Bochs did not exit within the grace period.
    HungAfterLastLine,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub mode: Mode,
    pub capture: Capture,
    pub end: End,
    /// Wall time from starting Bochs to its end.
    pub elapsed: Duration,
    /// Wall time from starting Bochs to the first serial byte on either port.
    pub first_byte: Option<Duration>,
    pub timeout: Duration,
    /// Panics and fatal messages from Bochs itself.
    pub bochs_problems: Vec<String>,
    /// The run directory (bochsrc, bochs.log, com1.txt, com2.txt).
    pub dir: PathBuf,
}

impl Outcome {
    pub fn exited_by_itself(&self) -> bool {
        matches!(self.end, End::Exited(_))
    }

    /// The end of the run as a phrase: "Bochs exited (exit status: 1)", "timed out after 120 s"…
    pub fn end_phrase(&self) -> String {
        match self.end {
            End::Exited(status) => format!("Bochs exited ({status})"),
            End::TimedOut => format!("timed out after {}", crate::secs(self.timeout)),
            End::Interrupted => "interrupted".to_string(),
            End::HungAfterLastLine => format!(
                "Bochs did not exit within {} after the run's last line",
                crate::secs(crate::bochs::END_GRACE)
            ),
        }
    }

    /// GRUB's own words when it could not load the boot files (it then writes them to COM2
    /// after [`crate::iso::GRUB_FAILED`] and ends the run: `iso::grub_entry`).
    pub fn grub_failure(&self) -> Option<String> {
        let com2 = self.capture.com2();
        let at = com2
            .iter()
            .position(|l| l.contains(crate::iso::GRUB_FAILED))?;
        let errors: Vec<&str> = com2[at + 1..]
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .take(2)
            .collect();
        Some(format!(
            "{} {}",
            crate::iso::GRUB_FAILED,
            if errors.is_empty() {
                "(no message)".to_string()
            } else {
                errors.join("; ")
            }
        ))
    }

    /// A normal end: under Vigil, COM2's last line is `run ended: ok`; bare, the guest-kit
    /// summary reports 0 failed. Either way Bochs must have exited by itself.
    /// `Ok` carries the deciding line.
    pub fn normal_end(&self) -> Result<String, String> {
        if let Some(why) = self.grub_failure() {
            return Err(why);
        }
        let serial = match self.mode {
            Mode::Vigil => match self.capture.last_line(Port::Vigil) {
                Some("run ended: ok") => Ok("run ended: ok".to_string()),
                Some(line) if line.starts_with("run ended:") => Err(format!("vigil: {line}")),
                Some(line) => Err(format!("Vigil's last line is not `run ended: …`: {line:?}")),
                None => Err("Vigil printed nothing on COM2".to_string()),
            },
            Mode::Bare => match report::summary(self.capture.port(Port::Guest)) {
                Some(s) if s.failed == 0 => Ok(s.line.clone()),
                Some(s) => Err(format!("guest: {}", s.line)),
                None if self.capture.com1().is_empty() => {
                    Err("the guest printed nothing on COM1".to_string())
                }
                None => Err("no `guest-kit: N passed, N failed, …` line on COM1".to_string()),
            },
        };
        match (serial, self.exited_by_itself()) {
            (Ok(line), true) => Ok(line),
            (Ok(line), false) => Err(format!("{} ({line})", self.end_phrase())),
            (Err(why), true) => Err(why),
            (Err(why), false) => Err(format!("{}; {why}", self.end_phrase())),
        }
    }

    /// `Err(reason)` plus Bochs' own complaints, for messages.
    pub fn explain(&self, reason: &str) -> String {
        let mut text = reason.to_string();
        for problem in &self.bochs_problems {
            text.push_str("\n    ");
            text.push_str(problem);
        }
        text
    }
}
