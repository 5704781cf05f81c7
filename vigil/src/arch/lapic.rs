//! This processor's local APIC, for the little Vigil does with it: its ID, the INIT and start-up
//! IPIs that bring the other processors into VMX at boot, and the reset an INIT would have done
//! to it when the INIT itself was caught on its way to the guest (SDM Vol. 3A chapter 11).
//!
//! The local APICs belong to the guest: Vigil touches one only before the guest runs (boot) or
//! on behalf of the guest's own INIT. In xAPIC mode the registers are at the physical address in
//! IA32_APIC_BASE (identity-mapped in Vigil's tables); in x2APIC mode they are MSRs 0x800 +
//! offset / 16 (11.12.1.2).

use super::regs::{rdmsr, wrmsr};

const IA32_APIC_BASE: u32 = 0x1B;
const APIC_BASE_EXTD: u64 = 1 << 10;

const ID: u32 = 0x20;
const TPR: u32 = 0x80;
const EOI: u32 = 0xB0;
const LDR: u32 = 0xD0;
const DFR: u32 = 0xE0;
const SVR: u32 = 0xF0;
const ISR: u32 = 0x100;
const ESR: u32 = 0x280;
const ICR_LOW: u32 = 0x300;
const ICR_HIGH: u32 = 0x310;
/// LVT timer, thermal, performance counters, LINT0, LINT1, error.
const LVTS: [u32; 6] = [0x320, 0x330, 0x340, 0x350, 0x360, 0x370];
const TIMER_INITIAL: u32 = 0x380;
const TIMER_DIVIDE: u32 = 0x3E0;
const LVT_MASKED: u32 = 1 << 16;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;

/// INIT, level-triggered assert (ICR bits 10:8 = 101b, bit 14, bit 15).
pub const ICR_INIT_ASSERT: u32 = 0x0000_C500;
/// Start-up, with the vector (the page number of the code) in bits 7:0.
pub const ICR_STARTUP: u32 = 0x0000_0600;

/// This processor's local APIC as it is programmed now: x2APIC mode or the xAPIC page.
struct Apic {
    x2apic: bool,
    base: u64,
}

impl Apic {
    fn now() -> Apic {
        let msr = rdmsr(IA32_APIC_BASE);
        Apic {
            x2apic: msr & APIC_BASE_EXTD != 0,
            base: msr & 0xF_FFFF_F000,
        }
    }

    fn read(&self, reg: u32) -> u32 {
        if self.x2apic {
            rdmsr(0x800 + reg / 16) as u32
        } else {
            // SAFETY: the APIC's register page, identity-mapped; reads have no side effect on
            // the registers read here.
            unsafe { ((self.base + reg as u64) as *const u32).read_volatile() }
        }
    }

    fn write(&self, reg: u32, value: u32) {
        if self.x2apic {
            // SAFETY: an architectural x2APIC register; the caller knows what the write does.
            unsafe { wrmsr(0x800 + reg / 16, value as u64) };
        } else {
            // SAFETY: as for `read`.
            unsafe { ((self.base + reg as u64) as *mut u32).write_volatile(value) };
        }
    }
}

/// This processor's APIC ID.
pub fn id() -> u32 {
    let apic = Apic::now();
    if apic.x2apic {
        apic.read(ID)
    } else {
        apic.read(ID) >> 24
    }
}

/// Sends an IPI (`low`: the ICR's low half, delivery mode and vector) to the processor with APIC
/// ID `dest`, and waits until the local APIC has sent it. In xAPIC mode the high half is put
/// back afterwards, so a guest that had written it is not disturbed.
pub fn send(low: u32, dest: u32) {
    let apic = Apic::now();
    if apic.x2apic {
        // SAFETY: the x2APIC ICR, one write sends (SDM Vol. 3A 11.12.9).
        unsafe { wrmsr(0x800 + ICR_LOW / 16, (dest as u64) << 32 | low as u64) };
        return;
    }
    let high = apic.read(ICR_HIGH);
    apic.write(ICR_HIGH, (dest & 0xFF) << 24 | (high & 0x00FF_FFFF));
    apic.write(ICR_LOW, low);
    while apic.read(ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
    apic.write(ICR_HIGH, high);
}

/// Puts the local APIC into the state an INIT leaves it in (SDM Vol. 3A 11.4.7.3), as far as
/// software can: TPR, LDR and the timer cleared, DFR all ones (xAPIC), every LVT entry masked,
/// the in-service interrupts retired, the error status cleared, and the APIC software-disabled
/// (SVR 0xFF). Requests already in the IRR cannot be withdrawn by software; they stay pending.
pub fn init_reset() {
    let apic = Apic::now();
    apic.write(TPR, 0);
    if !apic.x2apic {
        // In x2APIC mode LDR is read-only and DFR does not exist (11.12.1.2).
        apic.write(LDR, 0);
        apic.write(DFR, 0xFFFF_FFFF);
    }
    for lvt in LVTS {
        apic.write(lvt, LVT_MASKED);
    }
    apic.write(TIMER_INITIAL, 0);
    apic.write(TIMER_DIVIDE, 0);
    // Each EOI retires the highest-priority interrupt in service.
    for _ in 0..256 {
        if (0..8).all(|i| apic.read(ISR + 0x10 * i) == 0) {
            break;
        }
        apic.write(EOI, 0);
    }
    apic.write(ESR, 0);
    apic.write(ESR, 0);
    apic.write(SVR, 0xFF);
}
