//! Physical memory as the platform layer judges addresses the guest hands to hardware: the
//! guest's RAM (the machine's RAM minus Vigil's) and Vigil's own ranges. A DMA descriptor, a
//! relocated APIC page, a trace buffer or a BAR is checked against these before it can take
//! effect.

use alloc::vec::Vec;

/// Ranges are half-open, `[start, end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestMemory {
    /// RAM the guest owns, sorted, not overlapping.
    pub ram: Vec<(u64, u64)>,
    /// Vigil's image and pool.
    pub vigil: Vec<(u64, u64)>,
}

impl GuestMemory {
    pub fn new(mut ram: Vec<(u64, u64)>, vigil: Vec<(u64, u64)>) -> GuestMemory {
        ram.retain(|r| r.1 > r.0);
        ram.sort_unstable();
        GuestMemory { ram, vigil }
    }

    /// Whether every byte of `[start, end)` is guest RAM (adjacent regions count as one).
    pub fn is_ram(&self, start: u64, end: u64) -> bool {
        if end <= start {
            return end == start;
        }
        let mut at = start;
        for &(s, e) in &self.ram {
            if s <= at && at < e {
                at = e;
                if at >= end {
                    return true;
                }
            }
        }
        false
    }

    /// Whether `[start, end)` shares a byte with Vigil's memory.
    pub fn touches_vigil(&self, start: u64, end: u64) -> bool {
        self.vigil.iter().any(|&(s, e)| start < e && s < end)
    }

    /// Whether a 4 KiB page is guest RAM.
    pub fn is_ram_page(&self, page: u64) -> bool {
        let page = page & !0xFFF;
        self.is_ram(page, page + 0x1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_spans_adjacent_regions_and_stops_at_holes() {
        let m = GuestMemory::new(
            alloc::vec![(0x10_0000, 0x20_0000), (0, 0x9F000), (0x20_0000, 0x30_0000)],
            alloc::vec![(0x30_0000, 0x40_0000)],
        );
        assert!(m.is_ram(0x1F_F000, 0x20_1000), "adjacent regions are one");
        assert!(!m.is_ram(0x9E000, 0xA0000));
        assert!(!m.is_ram(0x2F_F000, 0x30_1000));
        assert!(m.touches_vigil(0x2F_F000, 0x30_0001));
        assert!(!m.touches_vigil(0x2F_F000, 0x30_0000));
        assert!(m.is_ram_page(0x9E123) && !m.is_ram_page(0x9F000));
    }
}
