//! Memory types from the MTRRs (SDM Vol. 3A 12.11), given as data so that the same code answers
//! for the machine Vigil runs on and for tests.
//!
//! [`Mtrrs::type_of_range`] tells whether a whole range has one memory type, which is what an
//! EPT builder needs to decide whether a 2 MiB or 1 GiB page may cover it.

use alloc::vec::Vec;
use core::fmt;

/// A memory type as MTRRs, PAT and EPT encode it (SDM Vol. 3A 12.3, Table 12-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum MemType {
    Uncacheable = 0,
    WriteCombining = 1,
    WriteThrough = 4,
    WriteProtected = 5,
    WriteBack = 6,
}

impl MemType {
    /// The type with this encoding; 2, 3 and 7 and above are reserved.
    pub const fn from_bits(b: u8) -> Option<MemType> {
        Some(match b {
            0 => MemType::Uncacheable,
            1 => MemType::WriteCombining,
            4 => MemType::WriteThrough,
            5 => MemType::WriteProtected,
            6 => MemType::WriteBack,
            _ => return None,
        })
    }

    pub const fn bits(self) -> u8 {
        self as u8
    }

    pub const fn short_name(self) -> &'static str {
        match self {
            MemType::Uncacheable => "UC",
            MemType::WriteCombining => "WC",
            MemType::WriteThrough => "WT",
            MemType::WriteProtected => "WP",
            MemType::WriteBack => "WB",
        }
    }
}

impl fmt::Display for MemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// The memory type of a range: one type throughout, or more than one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemTypeOrMixed {
    Uniform(MemType),
    Mixed,
}

/// MTRR MSR numbers (SDM Vol. 3A 12.11.2, Table 12-9 lists them; Vol. 4 Table 2-2 numbers them).
pub mod msr {
    pub const IA32_MTRRCAP: u32 = 0xfe;
    pub const IA32_MTRR_PHYSBASE0: u32 = 0x200;
    pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
    /// The eleven fixed-range MTRRs, lowest addresses first.
    pub const FIXED: [u32; 11] = [
        0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
    ];
}

/// A variable-range MTRR pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VariableMtrr {
    /// IA32_MTRR_PHYSBASEn: base in bits MAXPHYADDR-1:12, type in 7:0.
    pub base: u64,
    /// IA32_MTRR_PHYSMASKn: mask in bits MAXPHYADDR-1:12, valid in bit 11.
    pub mask: u64,
}

/// The MTRR state of a processor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mtrrs {
    /// IA32_MTRRCAP: VCNT in 7:0, fixed ranges supported in bit 8.
    pub cap: u64,
    /// IA32_MTRR_DEF_TYPE: default type in 7:0, fixed ranges enabled in 10, MTRRs enabled in 11.
    pub def_type: u64,
    /// The fixed-range MTRRs in [`msr::FIXED`] order.
    pub fixed: [u64; 11],
    pub variable: Vec<VariableMtrr>,
    /// MAXPHYADDR: mask bits at and above it are ignored.
    pub phys_addr_width: u8,
}

const ONE_MIB: u64 = 1 << 20;

impl Mtrrs {
    /// Reads the MTRR MSRs; only the variable pairs IA32_MTRRCAP counts, and the fixed ranges only
    /// when IA32_MTRRCAP says they exist.
    pub fn from_msrs(rdmsr: &mut dyn FnMut(u32) -> u64, phys_addr_width: u8) -> Mtrrs {
        let cap = rdmsr(msr::IA32_MTRRCAP);
        let def_type = rdmsr(msr::IA32_MTRR_DEF_TYPE);
        let mut fixed = [0; 11];
        if cap & (1 << 8) != 0 {
            for (slot, m) in fixed.iter_mut().zip(msr::FIXED) {
                *slot = rdmsr(m);
            }
        }
        let variable = (0..(cap & 0xff) as u32)
            .map(|i| VariableMtrr {
                base: rdmsr(msr::IA32_MTRR_PHYSBASE0 + 2 * i),
                mask: rdmsr(msr::IA32_MTRR_PHYSBASE0 + 2 * i + 1),
            })
            .collect();
        Mtrrs {
            cap,
            def_type,
            fixed,
            variable,
            phys_addr_width,
        }
    }

    /// MTRRs are on (IA32_MTRR_DEF_TYPE.E, SDM Vol. 3A 12.11.2.1).
    pub fn enabled(&self) -> bool {
        self.def_type & (1 << 11) != 0
    }

    fn fixed_enabled(&self) -> bool {
        self.enabled() && self.def_type & (1 << 10) != 0 && self.cap & (1 << 8) != 0
    }

    fn default_type(&self) -> MemType {
        MemType::from_bits(self.def_type as u8).unwrap_or(MemType::Uncacheable)
    }

    /// Physical-address bits 12 and up that a mask may select.
    fn addr_bits(&self) -> u64 {
        let top = if self.phys_addr_width >= 64 {
            u64::MAX
        } else {
            (1u64 << self.phys_addr_width) - 1
        };
        top & !0xfff
    }

    /// The fixed-range type of an address below 1 MiB, and the size of the range it sits in
    /// (SDM Vol. 3A 12.11.2.2: 8 x 64 KiB, 16 x 16 KiB, 64 x 4 KiB).
    fn fixed_type(&self, addr: u64) -> (MemType, u64) {
        let (msr_index, size, offset) = match addr {
            0..=0x7_ffff => ((addr >> 16) / 8, 1 << 16, (addr >> 16) % 8),
            0x8_0000..=0xb_ffff => (
                1 + ((addr - 0x8_0000) >> 14) / 8,
                1 << 14,
                ((addr - 0x8_0000) >> 14) % 8,
            ),
            _ => (
                3 + ((addr - 0xc_0000) >> 12) / 8,
                1 << 12,
                ((addr - 0xc_0000) >> 12) % 8,
            ),
        };
        let byte = (self.fixed[msr_index as usize] >> (offset * 8)) as u8;
        (
            MemType::from_bits(byte).unwrap_or(MemType::Uncacheable),
            size,
        )
    }

    /// The memory type of one address.
    pub fn type_of(&self, addr: u64) -> MemType {
        match self.block_type(addr & !0xfff, 12) {
            MemTypeOrMixed::Uniform(t) => t,
            MemTypeOrMixed::Mixed => MemType::Uncacheable,
        }
    }

    /// The memory type of `[start, start + len)`, rounded out to 4-KiB pages.
    pub fn type_of_range(&self, start: u64, len: u64) -> MemTypeOrMixed {
        if len == 0 {
            return MemTypeOrMixed::Uniform(self.type_of(start));
        }
        let mut at = start & !0xfff;
        let end = start.saturating_add(len).saturating_add(0xfff) & !0xfff;
        let mut seen: Option<MemType> = None;
        while at < end {
            // The largest naturally aligned block at `at` that stays inside the range.
            let mut order = at.trailing_zeros().min(63);
            while order > 12 && at + (1u64 << order) > end {
                order -= 1;
            }
            match self.block_type(at, order) {
                MemTypeOrMixed::Mixed => return MemTypeOrMixed::Mixed,
                MemTypeOrMixed::Uniform(t) if seen.is_some_and(|s| s != t) => {
                    return MemTypeOrMixed::Mixed
                }
                MemTypeOrMixed::Uniform(t) => seen = Some(t),
            }
            at = match at.checked_add(1 << order) {
                Some(next) => next,
                None => break,
            };
        }
        MemTypeOrMixed::Uniform(seen.unwrap_or(MemType::Uncacheable))
    }

    /// The type of the naturally aligned block `[start, start + 2^order)`, splitting it only where
    /// a fixed range or a variable MTRR's mask makes part of it differ.
    fn block_type(&self, start: u64, order: u32) -> MemTypeOrMixed {
        if !self.enabled() {
            // With MTRRs disabled, all of memory is UC (SDM Vol. 3A 12.11.2.1).
            return MemTypeOrMixed::Uniform(MemType::Uncacheable);
        }
        let size = 1u64.checked_shl(order).unwrap_or(0);
        if self.fixed_enabled() && start < ONE_MIB {
            if size == 0 || start + size > ONE_MIB {
                return self.split(start, order);
            }
            let (t, range) = self.fixed_type(start);
            if size > range {
                return self.split(start, order);
            }
            return MemTypeOrMixed::Uniform(t);
        }
        let below = size.wrapping_sub(1) & self.addr_bits();
        let mut matched: Option<MemType> = None;
        let mut conflict = false;
        for v in self.variable.iter().filter(|v| v.mask & (1 << 11) != 0) {
            let mask = v.mask & self.addr_bits();
            if mask & below != 0 {
                // The MTRR matches only part of this block.
                return self.split(start, order);
            }
            if start & mask != v.base & mask {
                continue;
            }
            let t = MemType::from_bits(v.base as u8).unwrap_or(MemType::Uncacheable);
            matched = Some(match matched {
                None => t,
                Some(prev) => match overlap(prev, t) {
                    Some(t) => t,
                    None => {
                        conflict = true;
                        prev
                    }
                },
            });
        }
        if conflict {
            // Overlaps other than UC-with-anything and WT-with-WB are undefined; UC is the only
            // safe answer (SDM Vol. 3A 12.11.4.1).
            return MemTypeOrMixed::Uniform(MemType::Uncacheable);
        }
        MemTypeOrMixed::Uniform(matched.unwrap_or_else(|| self.default_type()))
    }

    fn split(&self, start: u64, order: u32) -> MemTypeOrMixed {
        if order <= 12 {
            // A 4-KiB page cannot be split; MTRRs never resolve finer than that.
            return MemTypeOrMixed::Uniform(MemType::Uncacheable);
        }
        let half = 1u64 << (order - 1);
        match (
            self.block_type(start, order - 1),
            self.block_type(start + half, order - 1),
        ) {
            (MemTypeOrMixed::Uniform(a), MemTypeOrMixed::Uniform(b)) if a == b => {
                MemTypeOrMixed::Uniform(a)
            }
            _ => MemTypeOrMixed::Mixed,
        }
    }
}

/// Precedence of two overlapping variable MTRRs (SDM Vol. 3A 12.11.4.1): UC wins over
/// everything, WT over WB; identical types agree; anything else is undefined (`None`).
fn overlap(a: MemType, b: MemType) -> Option<MemType> {
    use MemType::*;
    match (a, b) {
        _ if a == b => Some(a),
        (Uncacheable, _) | (_, Uncacheable) => Some(Uncacheable),
        (WriteThrough, WriteBack) | (WriteBack, WriteThrough) => Some(WriteThrough),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::MemType::*;
    use super::*;
    use alloc::vec;

    const VALID: u64 = 1 << 11;

    /// A typical PC: WB by default, the legacy VGA hole UC through the fixed ranges, the 3-4 GiB
    /// MMIO hole UC through one variable MTRR, and a WT frame buffer below it.
    fn pc() -> Mtrrs {
        let wb8 = 0x0606_0606_0606_0606;
        let mut fixed = [wb8; 11];
        fixed[2] = 0; // 0xA0000-0xBFFFF: UC
        fixed[3] = 0x0505_0505_0505_0505; // 0xC0000-0xC7FFF: WP (option ROMs)
        Mtrrs {
            cap: (1 << 8) | 8,
            def_type: (1 << 11) | (1 << 10) | 6,
            fixed,
            variable: vec![
                VariableMtrr {
                    base: 0xc000_0000,
                    mask: 0xf_c000_0000 | VALID,
                },
                VariableMtrr {
                    base: 0xb000_0000 | 4,
                    mask: 0xf_f000_0000 | VALID,
                },
            ],
            phys_addr_width: 36,
        }
    }

    #[test]
    fn fixed_ranges_below_1mib() {
        let m = pc();
        assert_eq!(m.type_of(0x9_f000), WriteBack);
        assert_eq!(m.type_of(0xa_0000), Uncacheable);
        assert_eq!(m.type_of(0xc_4000), WriteProtected);
        assert_eq!(m.type_of(0xc_8000), WriteBack);
        assert_eq!(
            m.type_of_range(0, 0xa_0000),
            MemTypeOrMixed::Uniform(WriteBack)
        );
        assert_eq!(m.type_of_range(0, ONE_MIB), MemTypeOrMixed::Mixed);
        // The first 2 MiB page straddles the VGA hole.
        assert_eq!(m.type_of_range(0, 2 * ONE_MIB), MemTypeOrMixed::Mixed);
        assert_eq!(
            m.type_of_range(ONE_MIB, ONE_MIB),
            MemTypeOrMixed::Uniform(WriteBack)
        );
    }

    #[test]
    fn variable_ranges_and_default() {
        let m = pc();
        assert_eq!(m.type_of(0x1000_0000), WriteBack);
        assert_eq!(m.type_of(0xb000_0000), WriteThrough);
        assert_eq!(m.type_of(0xfee0_0000), Uncacheable);
        assert_eq!(
            m.type_of_range(0x4000_0000, 0x4000_0000),
            MemTypeOrMixed::Uniform(WriteBack)
        );
        assert_eq!(
            m.type_of_range(0x8000_0000, 0x4000_0000),
            MemTypeOrMixed::Mixed
        );
        assert_eq!(
            m.type_of_range(0xc000_0000, 0x4000_0000),
            MemTypeOrMixed::Uniform(Uncacheable)
        );
        assert_eq!(
            m.type_of_range(0xbfe0_0000, 0x20_0000),
            MemTypeOrMixed::Uniform(WriteThrough)
        );
        assert_eq!(
            m.type_of_range(0xbfe0_0000, 0x40_0000),
            MemTypeOrMixed::Mixed
        );
        // Above 4 GiB nothing matches: default WB.
        assert_eq!(
            m.type_of_range(0x1_0000_0000, 0x4000_0000),
            MemTypeOrMixed::Uniform(WriteBack)
        );
    }

    #[test]
    fn overlap_precedence() {
        let mut m = pc();
        // WB over the whole low 4 GiB, overlapping the UC and WT ranges.
        m.variable.push(VariableMtrr {
            base: 6,
            mask: 0xf_0000_0000 | VALID,
        });
        assert_eq!(m.type_of(0xc000_0000), Uncacheable, "UC wins");
        assert_eq!(m.type_of(0xb000_0000), WriteThrough, "WT wins over WB");
        // WC overlapping WB is undefined: treated as UC.
        m.variable.push(VariableMtrr {
            base: 0x2000_0000 | 1,
            mask: 0xf_f000_0000 | VALID,
        });
        assert_eq!(m.type_of(0x2000_0000), Uncacheable);
        // An invalid pair is ignored.
        m.variable.push(VariableMtrr {
            base: 0x5000_0000,
            mask: 0xf_f000_0000,
        });
        assert_eq!(m.type_of(0x5000_0000), WriteBack);
    }

    #[test]
    fn disabled_mtrrs_make_everything_uc_and_fixed_can_be_off() {
        let mut m = pc();
        m.def_type &= !(1 << 11);
        assert_eq!(
            m.type_of_range(0, 1 << 32),
            MemTypeOrMixed::Uniform(Uncacheable)
        );
        let mut m = pc();
        m.def_type &= !(1 << 10);
        assert_eq!(
            m.type_of(0xa_0000),
            WriteBack,
            "fixed ranges disabled: default applies"
        );
    }

    #[test]
    fn non_contiguous_mask_is_split_exactly() {
        // Matches every other 4 KiB page in the low 1 MiB-aligned region: bit 12 selects.
        let m = Mtrrs {
            cap: 1,
            def_type: (1 << 11) | 6,
            fixed: [0; 11],
            variable: vec![VariableMtrr {
                base: 0x1000,
                mask: 0x1000 | VALID,
            }],
            phys_addr_width: 36,
        };
        assert_eq!(m.type_of(0x20_0000), WriteBack);
        assert_eq!(m.type_of(0x20_1000), Uncacheable);
        assert_eq!(
            m.type_of_range(0x20_1000, 0x1000),
            MemTypeOrMixed::Uniform(Uncacheable)
        );
        assert_eq!(m.type_of_range(0x20_0000, 0x2000), MemTypeOrMixed::Mixed);
    }

    #[test]
    fn from_msrs_reads_what_mtrrcap_announces() {
        let p = pc();
        let mut read = vec![];
        let m = Mtrrs::from_msrs(
            &mut |n| {
                read.push(n);
                match n {
                    msr::IA32_MTRRCAP => (1 << 8) | 2,
                    msr::IA32_MTRR_DEF_TYPE => p.def_type,
                    0x200 => p.variable[0].base,
                    0x201 => p.variable[0].mask,
                    0x202 => p.variable[1].base,
                    0x203 => p.variable[1].mask,
                    n => {
                        p.fixed[msr::FIXED
                            .iter()
                            .position(|&f| f == n)
                            .expect("unexpected MSR")]
                    }
                }
            },
            36,
        );
        assert_eq!(m.variable, p.variable);
        assert_eq!(m.fixed, p.fixed);
        assert!(!read.contains(&0x204));
    }
}
