//! The guest's EPT address spaces, built and changed with `vmx::ept`'s builder: an identity map
//! of the physical address space (all of MAXPHYADDR with 1 GiB leaves, else up to the top of RAM
//! and at least 4 GiB: `vigil::placement::ept_top`), minus Vigil's memory. Memory types come from the host's MTRRs, as bare metal would
//! have used them; with MTRRs off, RAM is write-back and everything else uncacheable.
//!
//! There are two: the guest's view with its A20 gate open, and the same with the gate closed,
//! where the odd megabytes of the first 16 MiB map onto the even ones. The platform layer
//! switches between them when the guest moves its gate (`VmxVcpu::set_a20`); the real gate
//! never closes, so no host-physical address is ever masked.
//!
//! The debugger changes the permissions of single pages while the guest runs
//! ([`set_page_perms`]): the same builder splits the large page that holds one (SDM Vol. 3C
//! 29.3.2), with new tables from Vigil's pool, and INVEPT drops what the processor cached
//! (29.4.3.4). Large-page splitting exists once, in the builder.

use crate::arch::regs::{cpuid, rdmsr};
use crate::mem::{alloc_frames, next_frame, protect};
use alloc::format;
use alloc::string::String;
use vigil::memmap::MemoryMap;
use vigil_core::nested::Perms;
use vmx::caps::VmxCaps;
use vmx::ept::{invept, EptBuilder, EptPerms, Eptp, FrameAllocator, InveptType, PageSize};
use vmx::mtrr::{MemType, Mtrrs};

struct PoolFrames;

impl FrameAllocator for PoolFrames {
    fn alloc_zeroed(&mut self) -> Option<u64> {
        alloc_frames(1)
    }

    fn table(&mut self, phys: u64) -> &mut [u64; 512] {
        // SAFETY: `phys` is a frame this allocator handed out: Vigil's pool, identity-mapped,
        // owned by the EPT.
        unsafe { &mut *(phys as *mut [u64; 512]) }
    }
}

/// Builds the guest's two address spaces: its EPT with the A20 gate open (the identity map
/// minus Vigil), and the view with the gate closed (`a20_view`). Returns both EPT pointers.
pub fn build(
    guest: &MemoryMap,
    vigil: &[(u64, u64)],
    caps: &VmxCaps,
) -> Result<(u64, u64), String> {
    let first_frame = next_frame();
    let mut open = build_one(guest, vigil, caps)?;
    let mut closed = build_one(guest, vigil, caps)?;
    a20_view(&mut open.0, &mut closed.0).map_err(|e| format!("building the A20 view: {e}"))?;
    // The tables were allocated back to back; nothing may change them while the guest runs.
    protect(first_frame, next_frame());
    Ok((open.1, closed.1))
}

/// One EPT: the identity map of the physical address space minus Vigil's memory. Returns the
/// builder (for the A20 view) and the EPT pointer.
fn build_one(
    guest: &MemoryMap,
    vigil: &[(u64, u64)],
    caps: &VmxCaps,
) -> Result<(EptBuilder<PoolFrames>, u64), String> {
    let err = |e| format!("building the EPT: {e}");
    let largest = PageSize::largest_supported(caps);
    let phys_bits = (cpuid(0x8000_0008, 0)[0] & 0xFF) as u8;
    let leaf = match largest {
        PageSize::Size1G => vigil::placement::Leaf::Size1G,
        PageSize::Size2M => vigil::placement::Leaf::Size2M,
        PageSize::Size4K => vigil::placement::Leaf::Size4K,
    };
    let top = vigil::placement::ept_top(leaf, phys_bits, guest.ram_end());
    let mut ept = EptBuilder::new(PoolFrames, largest).map_err(err)?;
    let mtrrs = Mtrrs::from_msrs(&mut |msr| rdmsr(msr), phys_bits);
    if mtrrs.enabled() {
        ept.map_with_mtrrs(0, 0, top, EptPerms::RWX, &mtrrs)
            .map_err(err)?;
    } else {
        log::debug!("MTRRs are off: EPT maps RAM write-back, the rest uncacheable");
        ept.map(0, 0, top, EptPerms::RWX, MemType::Uncacheable)
            .map_err(err)?;
        for r in guest.ram() {
            let (s, e) = (r.start.next_multiple_of(4096), r.end & !0xFFF);
            if s < e {
                ept.map(s, s, e - s, EptPerms::RWX, MemType::WriteBack)
                    .map_err(err)?;
            }
        }
    }
    for &(start, end) in vigil {
        let (s, e) = (start & !0xFFF, end.next_multiple_of(4096));
        ept.unmap(s, e - s).map_err(err)?;
    }
    let eptp = Eptp::new(ept.pml4(), MemType::WriteBack, 4, false).0;
    Ok((ept, eptp))
}

/// The guest's view with its A20 gate closed: in the first `A20_EMULATED` bytes, each page of
/// an odd megabyte maps where the page one megabyte lower maps (the 8086's wrap-around, which
/// A20M# makes the processor reproduce), with that page's memory type. Where the lower page is
/// not the guest's (Vigil's memory), the odd page keeps its own mapping: a closed gate never
/// reaches Vigil. Above the emulated range the gate stays open for the guest
/// (docs/security.md: software that needs the wrap-around runs in real mode, within the first
/// 1 MiB + 64 KiB).
fn a20_view(
    open: &mut EptBuilder<PoolFrames>,
    closed: &mut EptBuilder<PoolFrames>,
) -> Result<(), vmx::ept::EptError> {
    const MIB: u64 = 1 << 20;
    let mut page = MIB;
    while page < vigil::placement::A20_EMULATED {
        if let Some(t) = open.translate(page - MIB) {
            closed.map(page, t.hpa & !0xFFF, 4096, t.perms, t.memtype)?;
        }
        page += 4096;
        if page & MIB == 0 {
            page += MIB;
        }
    }
    Ok(())
}

/// Sets the permissions of the 4-KiB page at `gpa` in one of the guest's EPTs; false if the
/// page is not mapped (a hole for Vigil's memory) or no frame is left for a table.
pub fn set_page_perms(caps: &VmxCaps, eptp: u64, gpa: u64, perms: Perms) -> bool {
    let mut ept = EptBuilder::attach(
        PoolFrames,
        Eptp(eptp).pml4(),
        PageSize::largest_supported(caps),
    );
    let perms = EptPerms::from_bits(perms.bits());
    let changed = matches!(ept.set_page_perms(gpa & !0xFFF, perms), Ok(true));
    if changed {
        invalidate(caps, eptp);
    }
    changed
}

/// Drops what this processor cached from the EPT at `eptp` (SDM Vol. 3C 29.4.3.4): after a
/// change here, and on every other vCPU's processor before its next entry.
pub fn invalidate(caps: &VmxCaps, eptp: u64) {
    let kind = if caps.invept_single() {
        InveptType::SingleContext
    } else {
        InveptType::AllContext
    };
    let _ = invept(kind, eptp);
}

/// Where `gpa` leads through the EPT, for `monitor translate`.
pub fn describe(eptp: u64, gpa: u64, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
    // The EPT tables are Vigil's own memory, identity-mapped.
    let host_read = |phys: u64| -> Option<u64> {
        // SAFETY: the walker only reads entries of the tables the EPT pointer leads to.
        Some(unsafe { core::ptr::read_volatile(phys as *const u64) })
    };
    match vmx::ept::walk(&host_read, eptp, gpa) {
        Ok(t) => writeln!(out, "  EPT: gpa {gpa:#x} -> {t}"),
        Err(e) => writeln!(out, "  EPT: gpa {gpa:#x} {e}"),
    }
}
