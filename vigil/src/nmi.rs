//! NMIs that reach Vigil. The guest owns NMIs: Vigil does not use NMI exiting, so while the guest
//! runs an NMI goes straight through the guest's IDT. One that arrives while Vigil runs (between
//! a VM exit and the next entry) is the guest's too, and must not be lost: the handler notes it
//! here and the backend injects it at an entry where the guest can take it.
//!
//! VM exits leave NMI blocking as it was (SDM Vol. 3C 28.5.5), so
//! an NMI reaches Vigil only while the guest could have taken one — or when the exit came from
//! an instruction that unblocks NMIs itself, as the reference emulator's IRET does before the
//! task switch it causes exits.

use core::sync::atomic::{AtomicU64, Ordering};

/// One bit per CPU (`percpu::MAX_CPUS` <= 64): an NMI is waiting for that CPU's guest.
static PENDING: AtomicU64 = AtomicU64::new(0);

fn bit() -> u64 {
    1 << (crate::percpu::current().map_or(0, |c| c.id) & 63)
}

/// Called by the NMI handler (in Vigil, never in the guest).
pub fn note() {
    PENDING.fetch_or(bit(), Ordering::SeqCst);
}

/// Takes the running CPU's waiting NMI, if there is one. Called before every VM entry: with
/// none waiting anywhere it is one load.
#[inline]
pub fn take() -> bool {
    if PENDING.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let b = bit();
    PENDING.fetch_and(!b, Ordering::SeqCst) & b != 0
}
