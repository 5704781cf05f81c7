//! Local APIC relocation: IA32_APIC_BASE moves the APIC's 4 KiB register page anywhere in
//! physical memory (SDM Vol. 3A, "Relocating the Local APIC Registers"); the page then hides
//! whatever memory was there, for every access by the processor — Vigil's included.
//!
//! Bare, a move to a page of the guest's own takes effect (the APIC ID register reads there).
//! A move over Vigil's memory must not take effect (the MSR keeps its old base, or #GP); the
//! guest checks the MSR and the page.

use super::io::*;
use guest_kit::fault::{self, Caught};
use guest_kit::{cpu, fail, pass, Outcome};

const BASE_MASK: u64 = 0xF_FFFF_F000;
const EXTD: u64 = 1 << 10;

/// `Some(failure)` when moving the APIC over a page of the guest's own does not work as bare.
fn control() -> Option<Outcome> {
    let old = unsafe { cpu::rdmsr(0x1B) };
    let id = read32((old & BASE_MASK) + 0x20);
    let page = 0x40_0000u64;
    write32(page + 0x20, 0x5A5A_5A5A);
    let r = unsafe { fault::try_wrmsr(0x1B, (old & !BASE_MASK) | page) };
    let seen = read32(page + 0x20);
    let _ = unsafe { fault::try_wrmsr(0x1B, old) };
    match r {
        Ok(()) if seen == id => None,
        Ok(()) => Some(fail!(
            "control-move-no-effect seen={:#x} id={:#x}",
            seen,
            id
        )),
        Err(c) => Some(fail!("control-move-faulted vector={}", c.vector)),
    }
}

/// Move the APIC over the first page of each of Vigil's ranges (`pages` pages from the start of
/// each), with an exit (CPUID) while it is there, then put it back. `x2apic`: in x2APIC mode
/// (the MSR's base still moves; the MMIO page is off but the base field is kept). Leaving
/// x2APIC mode takes the APIC through disabled (SDM Vol. 3A 12.12.5), and Bochs cannot enable
/// an APIC again once disabled: the x2APIC case stays in x2APIC mode, so it runs after every
/// case that needs the xAPIC page.
pub fn relocate(pages: u64, x2apic: bool) -> Outcome {
    let t = find_targets();
    if let Some(o) = control() {
        return o;
    }
    let has_x2 = cpu::cpuid(1, 0).ecx & (1 << 21) != 0;
    if x2apic && has_x2 {
        let now = unsafe { cpu::rdmsr(0x1B) };
        if let Err(c) = unsafe { fault::try_wrmsr(0x1B, now | EXTD) } {
            return fail!("x2apic-enable-faulted vector={}", c.vector);
        }
    }
    let old = unsafe { cpu::rdmsr(0x1B) };
    let mut tried = 0;
    for &(start, end) in t.ranges() {
        for i in 0..pages {
            let page = start + i * PAGE;
            if page >= end {
                break;
            }
            tried += 1;
            let r = unsafe { fault::try_wrmsr(0x1B, (old & !BASE_MASK) | page) };
            let _ = cpu::cpuid(0, 0);
            let now = fault::try_rdmsr(0x1B).unwrap_or(0);
            let _ = unsafe { fault::try_wrmsr(0x1B, old) };
            match r {
                Err(Caught { vector: 13, .. }) => {}
                Err(c) => return fail!("wrong-exception vector={}", c.vector),
                Ok(()) if now & BASE_MASK == page => {
                    return fail!(
                        "apic-moved-over-vigil page={:#x} msr={:#x} x2apic={}",
                        page,
                        now,
                        old & EXTD != 0
                    )
                }
                Ok(()) => {}
            }
        }
    }
    pass!("control=moved targets={} x2apic={}", tried, old & EXTD != 0)
}
