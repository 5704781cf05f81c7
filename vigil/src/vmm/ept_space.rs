//! The guest's EPT address space, built with `vmx::ept`: an identity map of the physical address
//! space (all of MAXPHYADDR with 1 GiB leaves, else up to the top of RAM and at least 4 GiB:
//! `vigil::placement::ept_top`), minus Vigil's memory. Memory types come from the host's MTRRs, as bare metal would have used them; with
//! MTRRs off, RAM is write-back and everything else uncacheable.

use crate::arch::regs::{cpuid, rdmsr};
use crate::mem::{alloc_frames, next_frame, protect};
use alloc::format;
use alloc::string::String;
use vigil::memmap::MemoryMap;
use vmx::caps::VmxCaps;
use vmx::ept::{EptBuilder, EptPerms, Eptp, FrameAllocator, PageSize};
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

/// Builds the tables; returns the EPT pointer.
pub fn build(guest: &MemoryMap, vigil: &[(u64, u64)], caps: &VmxCaps) -> Result<u64, String> {
    let first_frame = next_frame();
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
    // The tables were allocated back to back; nothing may change them while the guest runs.
    protect(first_frame, next_frame());
    Ok(Eptp::new(ept.pml4(), MemType::WriteBack, 4, false).0)
}
