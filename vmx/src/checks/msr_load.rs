//! Checks on the entries of a VM-entry MSR-load area (SDM Vol. 3C 27.4). The area is in memory
//! the VMCS only points to, so the caller reads the entries and hands them over. A processor
//! reports a failure as a VM exit with reason 34 and the failing entry's number (from 1) as
//! exit qualification.

use super::rules::{MSR_LOAD_FORBIDDEN, MSR_LOAD_RESERVED};
use super::Violation;
use alloc::format;
use alloc::vec::Vec;

/// One 16-byte entry of an MSR-load or MSR-store area (SDM Vol. 3C 25.7.2, Table 25-15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct MsrEntry {
    pub index: u32,
    /// Bits 63:32 of the entry: reserved, must be 0.
    pub reserved: u32,
    pub value: u64,
}

const IA32_SMM_MONITOR_CTL: u32 = 0x9b;
const IA32_FS_BASE: u32 = 0xc000_0100;
const IA32_GS_BASE: u32 = 0xc000_0101;

/// Checks the entries VM entry would load. Each violation names the entry's number from 1, the
/// exit qualification a processor would report.
pub fn check_msr_load_entries(entries: &[MsrEntry]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let n = i + 1;
        if e.reserved != 0 {
            out.push(Violation {
                rule: MSR_LOAD_RESERVED.id,
                sdm: MSR_LOAD_RESERVED.sdm,
                summary: format!(
                    "entry {n} (MSR {:#x}) has reserved bits {:#x}",
                    e.index, e.reserved
                ),
                fields: Vec::new(),
            });
        }
        // FS/GS bases are loaded from the segment fields; x2APIC MSRs (0x800-0x8FF) and the SMM
        // monitor control may not be loaded this way at all.
        let why = match e.index {
            IA32_FS_BASE | IA32_GS_BASE => Some("FS/GS base comes from the guest-state area"),
            0x800..=0x8ff => Some("x2APIC MSRs cannot be loaded on entry"),
            IA32_SMM_MONITOR_CTL => Some("IA32_SMM_MONITOR_CTL cannot be loaded on entry"),
            _ => None,
        };
        if let Some(why) = why {
            out.push(Violation {
                rule: MSR_LOAD_FORBIDDEN.id,
                sdm: MSR_LOAD_FORBIDDEN.sdm,
                summary: format!("entry {n} loads MSR {:#x}: {why}", e.index),
                fields: Vec::new(),
            });
        }
    }
    out
}
