//! The local APIC's place and its IPIs.
//!
//! IA32_APIC_BASE moves the APIC's 4 KiB register page anywhere in physical memory (SDM Vol. 3A
//! 12.4.4); from then on every access by the processor to that page — Vigil's own included —
//! reaches the APIC instead of memory. Over Vigil's MSR or I/O bitmaps the guest would untrap
//! MSRs and ports; over its stack or EPT tables it would crash Vigil. So the MSR is Vigil's, in
//! xAPIC and x2APIC mode alike (x2APIC keeps the base field): a write whose base is neither a
//! page of guest RAM nor the default page (0xFEE00000) keeps the old base — every other bit of
//! the write takes effect, and the processor checks the rest (reserved bits, the xAPIC/x2APIC
//! transitions of 12.12.5) as it would on bare metal. The guest reads back the base it has.
//!
//! In x2APIC mode the interrupt command register is an MSR (0x830): a write with the SMI
//! delivery mode (010b, SDM Vol. 3A 12.6.1) would take the processor into SMM; Vigil drops it.
//! Every other IPI is sent as written.

use super::memory::GuestMemory;

/// The architectural default base (SDM Vol. 3A 12.4.4).
pub const DEFAULT_BASE: u64 = 0xFEE0_0000;
const DELIVERY_MODE: u64 = 7 << 8;
const DELIVERY_SMI: u64 = 2 << 8;

/// The value a write of `value` to IA32_APIC_BASE stores, given the current `old` value and
/// the physical-address width; `Err(base)` names a base that does not take effect (the value
/// then keeps the old base).
pub fn base_write(old: u64, value: u64, phys_bits: u8, memory: &GuestMemory) -> (u64, Option<u64>) {
    let mask = ((1u64 << phys_bits.min(52)) - 1) & !0xFFF;
    let (old_base, new_base) = (old & mask, value & mask);
    let allowed = new_base == old_base
        || new_base == DEFAULT_BASE
        || (memory.is_ram_page(new_base) && !memory.touches_vigil(new_base, new_base + 0x1000));
    if allowed {
        (value, None)
    } else {
        ((value & !mask) | old_base, Some(new_base))
    }
}

/// Whether an x2APIC ICR value asks for an SMI IPI.
pub fn is_smi_ipi(icr: u64) -> bool {
    icr & DELIVERY_MODE == DELIVERY_SMI
}
