//! The few POSIX calls std does not offer: signal handling, process-group kill, effective uid.
//! std already links the C library, so these are plain declarations, no extra crate.

use std::sync::atomic::{AtomicBool, Ordering};

const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn kill(pid: i32, sig: i32) -> i32;
    fn geteuid() -> u32;
}

extern "C" fn on_interrupt(_signum: i32) {
    // Only an atomic store: async-signal-safe. The loops that wait on Bochs poll the flag.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C (SIGINT) and SIGTERM set a flag instead of killing xtask, so that xtask can kill the
/// Bochs process groups it started (they do not get the terminal's SIGINT themselves).
pub fn install_interrupt_handler() {
    let handler = on_interrupt as extern "C" fn(i32) as usize;
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        signal(SIGINT, handler);
        signal(SIGTERM, handler);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// SIGKILL to every process of the process group `pgid` (a child started with
/// `process_group(0)` leads a group whose id is its pid).
pub fn kill_process_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        if pgid > 1 {
            // SAFETY: plain syscall; a group that no longer exists gives ESRCH, which is fine.
            unsafe {
                kill(-pgid, SIGKILL);
            }
        }
    }
}

/// Whether a process with this pid exists (signal 0 probes without sending anything).
pub fn process_alive(pid: u32) -> bool {
    match i32::try_from(pid) {
        // SAFETY: signal 0 only checks for existence and permission.
        Ok(pid) if pid > 0 => unsafe { kill(pid, 0) == 0 },
        _ => false,
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { geteuid() == 0 }
}
