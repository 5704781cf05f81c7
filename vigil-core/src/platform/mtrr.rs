//! The guest's MTRRs (SDM Vol. 3A 12.11). The real ones are the host's: they type Vigil's own
//! memory, and with EPT they no longer type the guest's (the EPT memory types, built from the
//! firmware's MTRRs at boot, do; 29.3.7). So the guest gets its own copy, started from the
//! host's values: it reads back what it wrote, writes are checked as the processor checks them
//! (valid memory types, no reserved bits: #GP otherwise), and a variable range that would cover
//! Vigil's memory is refused with #GP as well — the guest's copy never names Vigil's memory.

use super::memory::GuestMemory;
use crate::owners::{IA32_MTRRCAP, IA32_MTRR_DEF_TYPE};

const FIXED: [u32; 11] = [
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F,
];
const MAX_VARIABLE: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mtrrs {
    pub cap: u64,
    pub def_type: u64,
    pub fixed: [u64; 11],
    /// (PHYSBASE, PHYSMASK) pairs.
    pub variable: [(u64, u64); MAX_VARIABLE],
}

/// Valid memory types: UC, WC, WT, WP, WB (SDM Vol. 3A Table 12-8).
fn valid_type(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

impl Mtrrs {
    /// The host's MTRRs, read through `rdmsr`.
    pub fn from_host(rdmsr: &mut dyn FnMut(u32) -> Option<u64>) -> Mtrrs {
        let cap = rdmsr(IA32_MTRRCAP).unwrap_or(0);
        let mut m = Mtrrs {
            cap,
            def_type: rdmsr(IA32_MTRR_DEF_TYPE).unwrap_or(0),
            fixed: [0; 11],
            variable: [(0, 0); MAX_VARIABLE],
        };
        for (i, &msr) in FIXED.iter().enumerate() {
            m.fixed[i] = rdmsr(msr).unwrap_or(0);
        }
        for i in 0..m.count() {
            m.variable[i] = (
                rdmsr(0x200 + 2 * i as u32).unwrap_or(0),
                rdmsr(0x201 + 2 * i as u32).unwrap_or(0),
            );
        }
        m
    }

    fn count(&self) -> usize {
        ((self.cap & 0xFF) as usize).min(MAX_VARIABLE)
    }

    fn has_fixed(&self) -> bool {
        self.cap & (1 << 8) != 0
    }

    /// RDMSR of an MTRR; `None` is #GP.
    pub fn read(&self, msr: u32) -> Option<u64> {
        match msr {
            IA32_MTRRCAP => Some(self.cap),
            IA32_MTRR_DEF_TYPE => Some(self.def_type),
            _ => {
                if let Some(i) = FIXED.iter().position(|&f| f == msr) {
                    return self.has_fixed().then_some(self.fixed[i]);
                }
                let i = msr.checked_sub(0x200)? as usize;
                (i / 2 < self.count()).then(|| {
                    let (base, mask) = self.variable[i / 2];
                    if i.is_multiple_of(2) {
                        base
                    } else {
                        mask
                    }
                })
            }
        }
    }

    /// WRMSR of an MTRR: false is #GP.
    pub fn write(&mut self, msr: u32, v: u64, phys_bits: u8, memory: &GuestMemory) -> bool {
        let above = !((1u64 << phys_bits.min(52)) - 1);
        match msr {
            IA32_MTRRCAP => false,
            IA32_MTRR_DEF_TYPE => {
                // Type in 7:0, FE bit 10, E bit 11; the rest reserved.
                if v & !0xCFF != 0 || !valid_type(v & 0xFF) {
                    return false;
                }
                self.def_type = v;
                true
            }
            _ => {
                if let Some(i) = FIXED.iter().position(|&f| f == msr) {
                    if !self.has_fixed() || !(0..8).all(|b| valid_type((v >> (8 * b)) & 0xFF)) {
                        return false;
                    }
                    self.fixed[i] = v;
                    return true;
                }
                let Some(i) = msr.checked_sub(0x200).map(|i| i as usize) else {
                    return false;
                };
                if i / 2 >= self.count() {
                    return false;
                }
                let (mut base, mut mask) = self.variable[i / 2];
                if i % 2 == 0 {
                    if v & (0xF00 | above) != 0 || !valid_type(v & 0xFF) {
                        return false;
                    }
                    base = v;
                } else {
                    if v & (0x7FF | above) != 0 {
                        return false;
                    }
                    mask = v;
                }
                if covers_vigil(base, mask, memory) {
                    log::info!(
                        "MTRR {msr:#x} <- {v:#x} refused: the range would cover Vigil's memory"
                    );
                    return false;
                }
                self.variable[i / 2] = (base, mask);
                true
            }
        }
    }
}

/// Whether a valid variable range (PHYSMASK bit 11) matches a page of Vigil's memory: an
/// address is in the range when `address & mask == base & mask` (SDM Vol. 3A 12.11.2.3).
fn covers_vigil(base: u64, mask: u64, memory: &GuestMemory) -> bool {
    if mask & (1 << 11) == 0 {
        return false;
    }
    let m = mask & !0xFFF;
    let b = base & m;
    memory.vigil.iter().any(|&(s, e)| {
        let mut page = s & !0xFFF;
        while page < e {
            if page & m == b {
                return true;
            }
            page += 0x1000;
        }
        false
    })
}
