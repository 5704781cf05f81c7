//! Where things are: the workspace, cargo's target directory, the bare-metal binaries, and the
//! per-run directories under `target/xtask/`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::sys;

/// The target triple of Vigil and the guest kit.
pub const BARE_TARGET: &str = "x86_64-unknown-none";

#[derive(Clone, Debug)]
pub struct Layout {
    /// The workspace root (holds Cargo.toml, .cargo/config.toml).
    pub root: PathBuf,
    /// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<root>/target`.
    pub target: PathBuf,
}

impl Layout {
    pub fn discover() -> Layout {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives in the workspace")
            .to_path_buf();
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() {
                    dir
                } else {
                    std::env::current_dir()
                        .map(|cwd| cwd.join(&dir))
                        .unwrap_or(dir)
                }
            }
            _ => root.join("target"),
        };
        Layout { root, target }
    }

    /// A release binary of the bare-metal target (`vigil`, `demo`, `cases`, `hostile`).
    pub fn bare_bin(&self, name: &str) -> PathBuf {
        self.target.join(BARE_TARGET).join("release").join(name)
    }

    pub fn xtask_dir(&self) -> PathBuf {
        self.target.join("xtask")
    }

    /// Path relative to the workspace root when it is inside it (shorter messages).
    pub fn show<'a>(&self, path: &'a Path) -> std::path::Display<'a> {
        path.strip_prefix(&self.root).unwrap_or(path).display()
    }
}

/// A run's own directory, `target/xtask/<name>/`, held through a `.lock` file with our pid so that
/// two xtask processes never share one: a second claimant gets `<name>.2`, `<name>.3`, ...
#[derive(Debug)]
pub struct RunDir {
    pub path: PathBuf,
    lock: PathBuf,
}

impl RunDir {
    pub fn claim(layout: &Layout, base: &str) -> io::Result<RunDir> {
        let parent = layout.xtask_dir();
        fs::create_dir_all(&parent)?;
        for n in 1..100 {
            let name = if n == 1 {
                base.to_string()
            } else {
                format!("{base}.{n}")
            };
            let path = parent.join(&name);
            fs::create_dir_all(&path)?;
            let lock = path.join(".lock");
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                Ok(mut file) => {
                    writeln!(file, "{}", std::process::id())?;
                    return Ok(RunDir { path, lock });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&lock)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    match holder {
                        // Held by a live process (possibly this one, for another run).
                        Some(pid) if sys::process_alive(pid) => continue,
                        // Stale lock of a process that is gone: take it over.
                        _ => {
                            fs::write(&lock, format!("{}\n", std::process::id()))?;
                            return Ok(RunDir { path, lock });
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "no free run directory for {base} under {}",
            parent.display()
        )))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.lock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_directories_are_not_shared() {
        let tmp = std::env::temp_dir().join(format!("xtask-layout-{}", std::process::id()));
        let layout = Layout {
            root: tmp.clone(),
            target: tmp.join("target"),
        };
        let first = RunDir::claim(&layout, "demo").unwrap();
        let second = RunDir::claim(&layout, "demo").unwrap();
        assert!(first.path.ends_with("xtask/demo"));
        assert!(second.path.ends_with("xtask/demo.2"));
        drop(first);
        let again = RunDir::claim(&layout, "demo").unwrap();
        assert!(again.path.ends_with("xtask/demo"));
        // A lock left by a process that is gone is taken over.
        drop(again);
        fs::write(tmp.join("target/xtask/demo/.lock"), "999999999\n").unwrap();
        let stale = RunDir::claim(&layout, "demo").unwrap();
        assert!(stale.path.ends_with("xtask/demo"));
        drop((stale, second));
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn bare_binaries_live_under_the_target_triple() {
        let layout = Layout {
            root: "/w".into(),
            target: "/w/target".into(),
        };
        assert_eq!(
            layout.bare_bin("vigil"),
            Path::new("/w/target/x86_64-unknown-none/release/vigil")
        );
        assert_eq!(layout.xtask_dir(), Path::new("/w/target/xtask"));
    }
}
