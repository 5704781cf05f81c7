//! Changing the permissions of one 4-KiB page of the guest's EPT while it runs, for breakpoints
//! and watchpoints. The tables were built with the largest pages that fit
//! (`vmm/ept_space.rs`); a large page that holds a debugged page is split into 512 pages of the
//! next size with the same memory type, ignore-PAT bit and permissions (SDM Vol. 3C 29.3.2,
//! Tables 29-4 to 29-6), down to a 4-KiB leaf. New tables come from Vigil's pool. Afterwards the
//! processor's EPT-derived translations are invalidated (INVEPT, SDM Vol. 3C 29.4.3.4).

use crate::mem::alloc_frames;
use vmx::caps::VmxCaps;
use vmx::ept::{entry, invept, EptPerms, InveptType};

fn table(phys: u64) -> &'static mut [u64; 512] {
    // SAFETY: EPT tables live in Vigil's pool, identity-mapped, used only by this vCPU's EPT
    // and changed only here while the guest is not running.
    unsafe { &mut *(phys as *mut [u64; 512]) }
}

/// The 4-KiB leaf entry mapping `gpa`, splitting large pages on the way; `None` if `gpa` is not
/// mapped (a hole for Vigil's memory) or no frame is left for a table.
fn leaf(pml4: u64, gpa: u64) -> Option<&'static mut u64> {
    let mut t = pml4 & entry::ADDRESS;
    for level in (1..=4u32).rev() {
        let index = ((gpa >> (12 + 9 * (level - 1))) & 0x1FF) as usize;
        let e = &mut table(t)[index];
        if level == 1 {
            return Some(e);
        }
        if *e & entry::RWX == 0 && *e & entry::SOFTWARE_MAPPED == 0 {
            return None;
        }
        if *e & entry::LARGE != 0 {
            // Split: 512 entries of the next smaller size, same attributes.
            let frame = alloc_frames(1)?;
            let child_size = 1u64 << (12 + 9 * (level - 2));
            let base = *e & entry::ADDRESS;
            let attrs = *e & !entry::ADDRESS & !if level == 2 { entry::LARGE } else { 0 };
            for (i, c) in table(frame).iter_mut().enumerate() {
                *c = (base + i as u64 * child_size) | attrs;
            }
            *e = frame | entry::RWX;
        }
        t = *e & entry::ADDRESS;
    }
    None
}

/// Sets the permissions of the page at `gpa`; false if it is not mapped.
pub fn set_page_perms(caps: &VmxCaps, eptp: u64, gpa: u64, perms: EptPerms) -> bool {
    let Some(e) = leaf(eptp, gpa & !0xFFF) else {
        return false;
    };
    // The builder marks its leaves so a page whose permissions were all removed keeps its
    // address and type.
    *e = (*e & !entry::RWX) | perms.bits() | entry::SOFTWARE_MAPPED;
    let kind = if caps.invept_single() {
        InveptType::SingleContext
    } else {
        InveptType::AllContext
    };
    let _ = invept(kind, eptp);
    true
}
