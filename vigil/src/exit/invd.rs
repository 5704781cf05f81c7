//! INVD (exit reason 13, unconditional). Dropping the caches without writing them back could
//! destroy Vigil's own data, so the write-back form is executed instead; the guest cannot tell
//! the difference except by losing dirty lines it should never rely on.

use super::Action;
use crate::vmm::Vcpu;

pub fn handle(_vcpu: &mut Vcpu) -> Action {
    // SAFETY: WBINVD only writes back and invalidates caches.
    unsafe { core::arch::asm!("wbinvd", options(nostack, preserves_flags)) };
    Action::Advance
}
