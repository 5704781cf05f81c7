//! The guest's nested page tables, built and changed with `svm::npt`'s builder: the same
//! address space as the VMX backend's EPT (`intel/ept.rs`) — an identity map of the physical
//! address space (all of MAXPHYADDR with 1-GiB leaves, else up to the top of RAM and at least
//! 4 GiB: `vigil::placement::ept_top`), minus Vigil's memory. Memory types need no work: the
//! leaves select PAT entry 0 (write-back) and the host's MTRRs apply to the system-physical
//! address, so RAM is write-back and device ranges stay uncacheable (APM Vol. 2 15.25.8).
//!
//! There are two, as under VMX: the guest's view with its A20 gate open, and the same with the
//! gate closed, where the odd megabytes of the emulated range map onto the even ones. The
//! platform layer switches between them when the guest moves its gate (`SvmVcpu::set_a20`);
//! the real gate never closes.
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

/// Builds the guest's two address spaces: the gate open (the identity map minus `vigil`) and
/// closed (`a20_view`). Returns both N_CR3 values.
pub fn build(guest: &MemoryMap, vigil: &[(u64, u64)], phys_bits: u8) -> Result<(u64, u64), String> {
    let first_frame = next_frame();
    let mut open = build_one(guest, vigil, phys_bits)?;
    let mut closed = build_one(guest, vigil, phys_bits)?;
    a20_view(&mut open, &mut closed).map_err(|e| format!("building the A20 view: {e}"))?;
    // The tables were allocated back to back; nothing may change them while the guest runs.
    protect(first_frame, next_frame());
    Ok((open.root(), closed.root()))
}

/// One address space: the identity map minus Vigil's memory.
fn build_one(
    guest: &MemoryMap,
    vigil: &[(u64, u64)],
    phys_bits: u8,
) -> Result<NptBuilder<PoolFrames>, String> {
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
    Ok(npt)
}

/// The view with the A20 gate closed: in the first `A20_EMULATED` bytes, each page of an odd
/// megabyte maps where the page one megabyte lower maps (the 8086's wrap-around). Where the
/// lower page is not the guest's (Vigil's memory) the odd page keeps its own mapping, so a
/// closed gate never reaches Vigil. The same rule as the EPT's view (`intel/ept.rs`).
fn a20_view(
    open: &mut NptBuilder<PoolFrames>,
    closed: &mut NptBuilder<PoolFrames>,
) -> Result<(), svm::npt::NptError> {
    const MIB: u64 = 1 << 20;
    let mut page = MIB;
    while page < vigil::placement::A20_EMULATED {
        if let Some(t) = open.translate(page - MIB) {
            closed.map(page, t.hpa & !0xFFF, 4096, t.perms)?;
        }
        page += 4096;
        if page & MIB == 0 {
            page += MIB;
        }
    }
    Ok(())
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
