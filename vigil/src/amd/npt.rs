//! The guest's nested page tables, built and changed with `svm::npt`'s builder: the same
//! address space as the VMX backend's EPT (`intel/ept.rs`) — an identity map of the physical
//! address space (all of MAXPHYADDR with 1-GiB leaves, else up to the top of RAM and at least
//! 4 GiB: `vigil::placement::ept_top`), minus Vigil's memory. Memory types need no work: the
//! leaves select PAT entry 0 (write-back) and the host's MTRRs apply to the system-physical
//! address, so RAM is write-back and device ranges stay uncacheable (APM Vol. 2 15.25.8).
//!
//! The debugger changes single pages while the guest runs ([`set_page_perms`]); the builder
//! splits the large page that holds one, with tables from Vigil's pool. The guest's TLB entries
//! are flushed by the vCPU (`Vcpu::set_page_perms`).

use crate::mem::{alloc_frames, next_frame, protect};
use alloc::format;
use alloc::string::String;
use svm::npt::{FrameAllocator, NptBuilder, NptPerms, PageSize};
use vigil::memmap::MemoryMap;
use vigil_core::nested::Perms;

struct PoolFrames;

impl FrameAllocator for PoolFrames {
    fn alloc_zeroed(&mut self) -> Option<u64> {
        alloc_frames(1)
    }

    fn table(&mut self, phys: u64) -> &mut [u64; 512] {
        // SAFETY: `phys` is a frame this allocator handed out: Vigil's pool, identity-mapped,
        // owned by the nested tables.
        unsafe { &mut *(phys as *mut [u64; 512]) }
    }
}

/// Reads Vigil's own nested tables (identity-mapped pool memory) for a walk.
pub struct TablesRead;

impl x86_arch::PhysRead for TablesRead {
    fn read_u64(&self, phys: u64) -> Option<u64> {
        // SAFETY: the walker reads only entries of the tables N_CR3 leads to, which are in
        // Vigil's pool.
        Some(unsafe { core::ptr::read_volatile(phys as *const u64) })
    }
}

/// The largest nested leaf: 1 GiB where the processor's own paging has 1-GiB pages (the nested
/// tables use the host's format, 15.25.3), else 2 MiB.
pub fn largest_page() -> PageSize {
    if crate::arch::regs::cpuid(0x8000_0001, 0)[3] & (1 << 26) != 0 {
        PageSize::Size1G
    } else {
        PageSize::Size2M
    }
}

/// Builds the tables; returns N_CR3.
pub fn build(guest: &MemoryMap, vigil: &[(u64, u64)], phys_bits: u8) -> Result<u64, String> {
    let first_frame = next_frame();
    let err = |e| format!("building the nested page tables: {e}");
    let largest = largest_page();
    let leaf = match largest {
        PageSize::Size1G => vigil::placement::Leaf::Size1G,
        PageSize::Size2M => vigil::placement::Leaf::Size2M,
        PageSize::Size4K => vigil::placement::Leaf::Size4K,
    };
    let top = vigil::placement::ept_top(leaf, phys_bits, guest.ram_end());
    let mut npt = NptBuilder::new(PoolFrames, largest, true).map_err(err)?;
    npt.map(0, 0, top, NptPerms::RWX).map_err(err)?;
    for &(start, end) in vigil {
        let (s, e) = (start & !0xFFF, end.next_multiple_of(4096));
        npt.unmap(s, e - s).map_err(err)?;
    }
    // The tables were allocated back to back; nothing may change them while the guest runs.
    protect(first_frame, next_frame());
    Ok(npt.root())
}

/// Sets the permissions of the 4-KiB page at `gpa`; false if the page is not mapped (a hole for
/// Vigil's memory), the permissions cannot be expressed, or no frame is left for a table.
pub fn set_page_perms(ncr3: u64, largest: PageSize, gpa: u64, perms: Perms) -> bool {
    let mut npt = NptBuilder::attach(PoolFrames, ncr3, largest, true);
    matches!(
        npt.set_page_perms(gpa & !0xFFF, NptPerms::from_bits(perms.bits())),
        Ok(true)
    )
}

/// Where `gpa` leads through the nested tables, for `monitor translate`.
pub fn describe(
    ncr3: u64,
    phys_bits: u8,
    gpa: u64,
    out: &mut dyn core::fmt::Write,
) -> core::fmt::Result {
    match svm::npt::walk(&TablesRead, ncr3, gpa, phys_bits) {
        Ok(t) => writeln!(out, "  NPT: gpa {gpa:#x} -> {t}"),
        Err(e) => writeln!(out, "  NPT: gpa {gpa:#x} {e}"),
    }
}
