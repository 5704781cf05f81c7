//! Which Bochs runs the scenarios, and what that Bochs can do.
//!
//! The reference emulator is Bochs 3.0, built once from Debian's source package and cached
//! outside the checkout (`bochs_build.rs`). Debian bookworm's own package (Bochs 2.7) is still
//! served: `--bochs 2.7`, or `VIGIL_BOCHS=2.7`. Any other build is `--bochs PATH`. The choice is
//! made once per xtask command ([`select`]); every Bochs that xtask starts, probes or debugs with
//! is then [`current`], and every run prints which one it is.
//!
//! Everything that differs between emulator versions lives here: the bochsrc lines one version
//! needs and another refuses ([`Emulator::sound_line`]), and the emulator defects that make a
//! scenario meaningless on an older Bochs ([`Emulator::lacks`]). docs/platform.md lists the
//! defects and what Vigil does about each.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::layout::Layout;

/// The environment variable that picks the emulator when `--bochs` is not given.
pub const ENV: &str = "VIGIL_BOCHS";

/// What the user asked for (`--bochs`, else `VIGIL_BOCHS`, else the default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Bochs 3.0 built from Debian's source package (the reference platform; the default).
    Built,
    /// Debian's `bochs` package (2.7 on bookworm), on PATH.
    System,
    /// A Bochs binary the user built.
    Path(PathBuf),
}

impl Choice {
    pub fn parse(text: &str) -> Result<Choice, String> {
        match text {
            "" => Err("--bochs needs 3.0, 2.7 or the path of a Bochs binary".into()),
            "3.0" | "3" | "built" => Ok(Choice::Built),
            "2.7" | "system" | "debian" => Ok(Choice::System),
            path if path.contains('/') => Ok(Choice::Path(PathBuf::from(path))),
            other => Err(format!(
                "--bochs {other:?}: use 3.0 (built from Debian's source package), 2.7 (Debian's \
                 package) or the path of a Bochs binary (with a `/`)"
            )),
        }
    }

    /// `--bochs` if given, else `$VIGIL_BOCHS`, else the reference build.
    pub fn resolve(flag: Option<&str>) -> Result<Choice, String> {
        match flag {
            Some(text) => Choice::parse(text),
            None => match std::env::var(ENV) {
                Ok(text) if !text.trim().is_empty() => {
                    Choice::parse(text.trim()).map_err(|e| format!("{ENV}={text}: {e}"))
                }
                _ => Ok(Choice::Built),
            },
        }
    }
}

/// A Bochs version, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// An emulator feature that some Bochs versions lack, and that a scenario may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// The monitor trap flag (SDM Vol. 3C 26.5.2): `tigerlake` and `corei7_icelake_u` report
    /// it in every version, but Bochs acts on the control only from 2.8.
    MonitorTrapFlag,
    /// Application processors in VMX non-root operation waiting for a start-up IPI: 2.7 keeps
    /// the INIT of an INIT exit pending and saves "blocking by SMI" after wait-for-SIPI, so the
    /// next VM entry fails; fixed in 2.8.
    SmpUnderVmx,
    /// The CPU models of Bochs 3.0 (`sapphire_rapids`, `arrow_lake` and the models table of
    /// `scenarios_transparent.rs`).
    CpuModels3,
    /// Linux on an AMD model: on 2.7 Debian's 6.1 kernel stops making progress on `ryzen` after
    /// its I/O APIC set-up, bare as under Vigil (the run times out); it boots on 3.0.
    LinuxOnAmd,
    /// SVM's SHUTDOWN intercept: 2.7 ends the emulation with a panic ("3rd exception with no
    /// resolution") at a guest's triple fault under SVM instead of exiting to the hypervisor.
    SvmShutdown,
}

impl Feature {
    /// The first Bochs version that has it.
    pub fn since(self) -> Version {
        match self {
            Feature::MonitorTrapFlag | Feature::SmpUnderVmx => Version(2, 8),
            Feature::CpuModels3 | Feature::LinuxOnAmd | Feature::SvmShutdown => Version(3, 0),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Feature::MonitorTrapFlag => {
                "the monitor trap flag (reported by tigerlake, but delivered only from Bochs 2.8)"
            }
            Feature::SmpUnderVmx => {
                "processors waiting for a start-up IPI under VMX (broken before Bochs 2.8)"
            }
            Feature::CpuModels3 => "Bochs 3.0's CPU models",
            Feature::SvmShutdown => {
                "SVM's SHUTDOWN intercept (2.7 panics at a guest's triple fault under SVM)"
            }
            Feature::LinuxOnAmd => {
                "Linux on an AMD model (2.7: the kernel stops after its I/O APIC set-up, bare too)"
            }
        }
    }
}

/// The chosen Bochs.
#[derive(Clone, Debug)]
pub struct Emulator {
    /// The program to start (`bochs` on PATH for Debian's package: its wrapper script).
    pub program: PathBuf,
    pub version: Version,
    /// Where it came from, for the line every run prints.
    pub origin: String,
    /// Whether it was built with sound support (then a `sound:` line is needed, see
    /// [`Emulator::sound_line`]).
    pub sound: bool,
}

impl Emulator {
    /// The bochsrc line about sound, if this build needs one. Debian's 2.7 has its sound
    /// modules and aborts in its ALSA mixer thread on a machine without a sound card unless
    /// told `driver=dummy`; the 3.0 built here has no sound support and refuses any `sound:`
    /// line as a fatal configuration error.
    pub fn sound_line(&self) -> Option<&'static str> {
        self.sound.then_some("sound: driver=dummy")
    }

    /// The features of `needs` that this Bochs lacks.
    pub fn lacks(&self, needs: &[Feature]) -> Vec<Feature> {
        needs
            .iter()
            .copied()
            .filter(|f| self.version < f.since())
            .collect()
    }

    /// `Bochs 3.0 (/path/to/bochs; built from …)`.
    pub fn describe(&self) -> String {
        format!(
            "Bochs {} ({}; {})",
            self.version,
            self.program.display(),
            self.origin
        )
    }

    /// The flag that makes this Bochs run its debugger (and so the `-rc` command file): 3.0
    /// starts its debugger only when asked with `-debugger`; 2.7 has no such flag (it refuses
    /// it) because its debugger is always active when compiled in. Without it, 3.0 ignores the
    /// command file and just runs, which is what a plain run wants.
    pub fn debugger_flag(&self) -> Option<&'static str> {
        (self.version >= Version(3, 0)).then_some("-debugger")
    }

    /// A `Command` for this Bochs (Debian's wrapper script adds `-q` itself; another `-q` is
    /// harmless).
    pub fn command(&self) -> Command {
        Command::new(&self.program)
    }
}

static CURRENT: OnceLock<Emulator> = OnceLock::new();

/// Makes `choice` the emulator of this command: builds the reference Bochs first if it is not
/// cached yet, checks the version of any other, and prints which Bochs runs.
pub fn select(layout: &Layout, choice: &Choice) -> Result<&'static Emulator, String> {
    if let Some(e) = CURRENT.get() {
        return Ok(e);
    }
    let emulator = match choice {
        Choice::Built => crate::bochs_build::ensure(layout)?,
        Choice::System => {
            let program = on_path("bochs").unwrap_or_else(|| PathBuf::from("bochs"));
            let version = probe_version(&program)?;
            Emulator {
                program,
                version,
                origin: "Debian's bochs package".into(),
                sound: true,
            }
        }
        Choice::Path(path) => {
            if !path.is_file() {
                return Err(format!("--bochs {}: no such file", path.display()));
            }
            let program = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            let version = probe_version(&program)?;
            Emulator {
                program,
                version,
                origin: "given with --bochs".into(),
                // Bochs 2.x builds usually carry Debian's sound modules; a 3.x build made
                // like the reference one has none (see `sound_line`).
                sound: version < Version(3, 0),
            }
        }
    };
    crate::step(&format!("emulator: {}", emulator.describe()));
    Ok(CURRENT.get_or_init(|| emulator))
}

/// `name` as the shell would find it on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The emulator chosen by [`select`].
pub fn current() -> &'static Emulator {
    CURRENT
        .get()
        .expect("emulator::select runs before any Bochs is started")
}

/// Bochs' version from its banner (`Bochs x86 Emulator 3.0`): with no configuration file and
/// no input it prints the banner and leaves its configuration menu at once.
pub fn probe_version(program: &Path) -> Result<Version, String> {
    let out = Command::new(program)
        .arg("-n")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .current_dir(std::env::temp_dir())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    parse_banner(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        format!(
            "{} printed no `Bochs x86 Emulator X.Y` banner: is it Bochs?",
            program.display()
        )
    })
}

fn parse_banner(text: &str) -> Option<Version> {
    let rest = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Bochs x86 Emulator "))?;
    let word = rest.split_whitespace().next()?;
    let mut parts = word.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()
        .map(|m| {
            m.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    Some(Version(major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices() {
        assert_eq!(Choice::parse("3.0").unwrap(), Choice::Built);
        assert_eq!(Choice::parse("2.7").unwrap(), Choice::System);
        assert_eq!(
            Choice::parse("/opt/bochs/bin/bochs").unwrap(),
            Choice::Path("/opt/bochs/bin/bochs".into())
        );
        assert_eq!(
            Choice::parse("./bochs").unwrap(),
            Choice::Path("./bochs".into())
        );
        assert!(Choice::parse("2.6").is_err());
        assert!(Choice::parse("").is_err());
        assert_eq!(Choice::resolve(Some("2.7")).unwrap(), Choice::System);
    }

    #[test]
    fn banners() {
        let v3 = "====\n                        Bochs x86 Emulator 3.0\n   Built from GitHub";
        assert_eq!(parse_banner(v3), Some(Version(3, 0)));
        assert_eq!(
            parse_banner("  Bochs x86 Emulator 2.7\n"),
            Some(Version(2, 7))
        );
        assert_eq!(
            parse_banner("Bochs x86 Emulator 2.8.devel\n"),
            Some(Version(2, 8))
        );
        assert_eq!(parse_banner("Usage: bochs [flags]"), None);
    }

    #[test]
    fn features_and_bochsrc_lines_by_version() {
        let e = |major, minor, sound| Emulator {
            program: "bochs".into(),
            version: Version(major, minor),
            origin: String::new(),
            sound,
        };
        assert_eq!(
            e(2, 7, true).lacks(&[Feature::MonitorTrapFlag]),
            vec![Feature::MonitorTrapFlag]
        );
        assert!(e(2, 8, true).lacks(&[Feature::MonitorTrapFlag]).is_empty());
        assert!(e(3, 0, false).lacks(&[Feature::MonitorTrapFlag]).is_empty());
        assert_eq!(e(2, 7, true).sound_line(), Some("sound: driver=dummy"));
        assert_eq!(e(3, 0, false).sound_line(), None);
    }
}
