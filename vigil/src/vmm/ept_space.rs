//! The guest's EPT address space: an identity map of the machine's physical address space up to
//! the top of RAM (and at least 4 GiB, to cover the device ranges), minus Vigil's memory.
//! RAM is write-back; everything else uncacheable.

use super::super::mem::alloc_frames;
use vigil::memmap::{Kind, MemoryMap};

const READ: u64 = 1;
const WRITE: u64 = 2;
const EXEC: u64 = 4;
const LARGE: u64 = 1 << 7;
const MT_UC: u64 = 0;
const MT_WB: u64 = 6;
const SIZE_2M: u64 = 2 << 20;

fn table(phys: u64) -> &'static mut [u64; 512] {
    // SAFETY: `phys` is a zeroed frame from Vigil's pool, identity-mapped and owned by the EPT.
    unsafe { &mut *(phys as *mut [u64; 512]) }
}

/// Builds the tables; returns the PML4's physical address.
pub fn build(guest: &MemoryMap, vigil: &[(u64, u64)]) -> Result<u64, &'static str> {
    let top = guest.ram_end().max(1 << 32).next_multiple_of(1 << 30);
    let oom = "out of frames for EPT tables";
    let pml4 = alloc_frames(1).ok_or(oom)?;
    let first_frame = pml4;
    let in_vigil = |start: u64, end: u64| vigil.iter().any(|&(s, e)| s < end && start < e);
    let all_vigil = |start: u64, end: u64| vigil.iter().any(|&(s, e)| s <= start && end <= e);
    let mt = |addr: u64| {
        if guest.kind_at(addr) == Some(Kind::Ram) {
            MT_WB
        } else {
            MT_UC
        }
    };
    let mut chunk = 0;
    while chunk < top {
        let pml4e = &mut table(pml4)[(chunk >> 39) as usize & 511];
        if *pml4e == 0 {
            *pml4e = alloc_frames(1).ok_or(oom)? | READ | WRITE | EXEC;
        }
        let pdpt = *pml4e & !0xFFF;
        let pdpte = &mut table(pdpt)[(chunk >> 30) as usize & 511];
        if *pdpte == 0 {
            *pdpte = alloc_frames(1).ok_or(oom)? | READ | WRITE | EXEC;
        }
        let pd = *pdpte & !0xFFF;
        let pde = &mut table(pd)[(chunk >> 21) as usize & 511];
        let end = chunk + SIZE_2M;
        let uniform_type = guest
            .regions()
            .iter()
            .all(|r| r.end <= chunk || r.start >= end || (r.start <= chunk && end <= r.end));
        if all_vigil(chunk, end) {
            // Absent: the guest cannot name these bytes.
        } else if !in_vigil(chunk, end) && uniform_type {
            *pde = chunk | READ | WRITE | EXEC | LARGE | (mt(chunk) << 3);
        } else {
            let pt = alloc_frames(1).ok_or(oom)?;
            for (i, pte) in table(pt).iter_mut().enumerate() {
                let page = chunk + (i as u64) * 4096;
                if !in_vigil(page, page + 4096) {
                    *pte = page | READ | WRITE | EXEC | (mt(page) << 3);
                }
            }
            *pde = pt | READ | WRITE | EXEC;
        }
        chunk = end;
    }
    // The tables were allocated back to back; nothing may change them while the guest runs.
    crate::mem::protect(first_frame, crate::mem::next_frame());
    Ok(pml4)
}
