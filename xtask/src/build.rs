//! Building Vigil and the guest kit for the bare-metal target with the workspace's cargo.

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::layout::{Layout, BARE_TARGET};

/// Bare-metal packages xtask builds, and the binaries each one produces.
pub const VIGIL: &str = "vigil";
pub const GUEST_KIT: &str = "guest-kit";
pub const GUEST_KIT_BINS: &[&str] = &["demo", "cases", "hostile", "debuggee", "debuggee32", "smp"];

/// `cargo build --release -p <package> --target x86_64-unknown-none`, output streamed through.
pub fn build(layout: &Layout, package: &str) -> Result<(), String> {
    let start = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", package, "--target", BARE_TARGET])
        .current_dir(&layout.root)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if crate::sys::interrupted() {
        return Err("interrupted".into());
    }
    if !status.success() {
        return Err(format!(
            "cargo build of {package} failed ({status}) after {}",
            crate::secs(start.elapsed())
        ));
    }
    crate::step(&format!(
        "built {package} ({})",
        crate::secs(start.elapsed())
    ));
    Ok(())
}
