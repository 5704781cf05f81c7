//! The physical memory map: what the firmware reported, what Vigil takes for itself, and what is
//! left for the guest. Pure data manipulation, tested on the host.

use core::fmt;

/// Region kinds, numbered as in the E820 / multiboot memory map (ACPI 6.5 table 15.312).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ram,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Bad,
}

impl Kind {
    pub fn from_e820(kind: u32) -> Kind {
        match kind {
            1 => Kind::Ram,
            3 => Kind::AcpiReclaimable,
            4 => Kind::AcpiNvs,
            5 => Kind::Bad,
            _ => Kind::Reserved,
        }
    }

    pub fn e820(self) -> u32 {
        match self {
            Kind::Ram => 1,
            Kind::Reserved => 2,
            Kind::AcpiReclaimable => 3,
            Kind::AcpiNvs => 4,
            Kind::Bad => 5,
        }
    }
}

/// A half-open physical range [start, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub kind: Kind,
}

impl Region {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "[{:#011x}-{:#011x}) {:?}",
            self.start, self.end, self.kind
        )
    }
}

pub const MAX_REGIONS: usize = 128;

#[derive(Debug)]
pub enum MapError {
    TooManyRegions,
}

/// A sorted, non-overlapping memory map of fixed capacity (no heap: it is built before the heap
/// exists). Where firmware entries overlap, the more restrictive kind wins.
#[derive(Clone)]
pub struct MemoryMap {
    regions: [Region; MAX_REGIONS],
    len: usize,
}

impl Default for MemoryMap {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryMap {
    pub const fn new() -> Self {
        Self {
            regions: [Region {
                start: 0,
                end: 0,
                kind: Kind::Reserved,
            }; MAX_REGIONS],
            len: 0,
        }
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// Adds a region; the part of it that overlaps existing regions takes the more restrictive
    /// kind (anything but RAM beats RAM).
    pub fn add(&mut self, start: u64, end: u64, kind: Kind) -> Result<(), MapError> {
        if end <= start {
            return Ok(());
        }
        if kind == Kind::Ram {
            // Only fill the holes: RAM never overrides what is already known.
            let mut cursor = start;
            let existing = self.clone();
            for r in existing
                .regions()
                .iter()
                .filter(|r| r.end > start && r.start < end)
            {
                if r.start > cursor {
                    self.set(cursor, r.start, Kind::Ram)?;
                }
                cursor = cursor.max(r.end);
            }
            if cursor < end {
                self.set(cursor, end, Kind::Ram)?;
            }
            Ok(())
        } else {
            self.set(start, end, kind)
        }
    }

    /// Sets [start, end) to `kind`, replacing whatever was there.
    pub fn set(&mut self, start: u64, end: u64, kind: Kind) -> Result<(), MapError> {
        if end <= start {
            return Ok(());
        }
        let mut out = MemoryMap::new();
        for r in self.regions() {
            // Keep the parts of r outside [start, end).
            for (s, e) in [(r.start, r.end.min(start)), (r.start.max(end), r.end)] {
                if s < e {
                    out.push(Region {
                        start: s,
                        end: e,
                        kind: r.kind,
                    })?;
                }
            }
        }
        out.push(Region { start, end, kind })?;
        out.sort_and_merge();
        *self = out;
        Ok(())
    }

    fn push(&mut self, r: Region) -> Result<(), MapError> {
        if self.len == MAX_REGIONS {
            return Err(MapError::TooManyRegions);
        }
        self.regions[self.len] = r;
        self.len += 1;
        Ok(())
    }

    fn sort_and_merge(&mut self) {
        let len = self.len;
        self.regions[..len].sort_unstable_by_key(|r| r.start);
        let mut w = 0;
        for i in 0..len {
            let r = self.regions[i];
            if w > 0 && self.regions[w - 1].end == r.start && self.regions[w - 1].kind == r.kind {
                self.regions[w - 1].end = r.end;
            } else {
                self.regions[w] = r;
                w += 1;
            }
        }
        self.len = w;
    }

    /// The kind of the byte at `addr`, if the map covers it.
    pub fn kind_at(&self, addr: u64) -> Option<Kind> {
        self.regions()
            .iter()
            .find(|r| r.start <= addr && addr < r.end)
            .map(|r| r.kind)
    }

    /// True when all of [start, end) is RAM.
    pub fn is_ram(&self, start: u64, end: u64) -> bool {
        let mut cursor = start;
        for r in self.regions().iter().filter(|r| r.kind == Kind::Ram) {
            if r.start <= cursor && cursor < r.end {
                cursor = r.end;
            }
            if cursor >= end {
                return true;
            }
        }
        cursor >= end
    }

    pub fn ram(&self) -> impl Iterator<Item = &Region> {
        self.regions().iter().filter(|r| r.kind == Kind::Ram)
    }

    pub fn ram_bytes(&self) -> u64 {
        self.ram().map(Region::len).sum()
    }

    /// Highest address of any RAM.
    pub fn ram_end(&self) -> u64 {
        self.ram().map(|r| r.end).max().unwrap_or(0)
    }

    /// The highest `size`-byte, `align`-aligned range of RAM that lies below `limit` and does
    /// not intersect any of `avoid`.
    pub fn find_top(&self, size: u64, align: u64, limit: u64, avoid: &[(u64, u64)]) -> Option<u64> {
        for r in self.regions().iter().rev().filter(|r| r.kind == Kind::Ram) {
            let mut top = r.end.min(limit);
            while top >= r.start + size {
                let start = (top - size) & !(align - 1);
                if start < r.start {
                    break;
                }
                match avoid
                    .iter()
                    .filter(|(s, e)| *s < start + size && start < *e)
                    .map(|(s, _)| *s)
                    .min()
                {
                    // Slide below the lowest conflicting range and try again.
                    Some(s) => top = s,
                    None => return Some(start),
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bochs_like() -> MemoryMap {
        let mut m = MemoryMap::new();
        m.add(0, 0x9F000, Kind::Ram).unwrap();
        m.add(0x9F000, 0xA0000, Kind::Reserved).unwrap();
        m.add(0xE8000, 0x100000, Kind::Reserved).unwrap();
        m.add(0x100000, 0x0FFF_0000, Kind::Ram).unwrap();
        m.add(0x0FFF_0000, 0x1000_0000, Kind::AcpiReclaimable)
            .unwrap();
        m.add(0xFFFC_0000, 0x1_0000_0000, Kind::Reserved).unwrap();
        m
    }

    #[test]
    fn overlapping_ram_does_not_override_reserved() {
        let mut m = bochs_like();
        m.add(0, 0x1000_0000, Kind::Ram).unwrap();
        assert_eq!(m.kind_at(0x9F800), Some(Kind::Reserved));
        assert_eq!(m.kind_at(0x0FFF_8000), Some(Kind::AcpiReclaimable));
        assert_eq!(m.kind_at(0xA0000), Some(Kind::Ram), "holes are filled");
    }

    #[test]
    fn reserving_splits_and_merges() {
        let mut m = bochs_like();
        let before = m.ram_bytes();
        m.set(0x400_0000, 0x480_0000, Kind::Reserved).unwrap();
        assert_eq!(m.ram_bytes(), before - 0x80_0000);
        assert!(!m.is_ram(0x3FF_F000, 0x400_1000));
        assert!(m.is_ram(0x100000, 0x400_0000));
        m.set(0x400_0000, 0x480_0000, Kind::Ram).unwrap();
        assert_eq!(m.ram_bytes(), before);
        assert_eq!(
            m.regions().iter().filter(|r| r.kind == Kind::Ram).count(),
            2,
            "merged again"
        );
    }

    #[test]
    fn find_top_avoids_ranges_and_respects_alignment() {
        let m = bochs_like();
        let top = m.find_top(0x80_0000, 0x20_0000, u64::MAX, &[]).unwrap();
        assert_eq!(top, 0x0F60_0000);
        let avoided = m
            .find_top(
                0x80_0000,
                0x20_0000,
                u64::MAX,
                &[(0x0F00_0000, 0x0F80_0000)],
            )
            .unwrap();
        assert_eq!(avoided, 0x0E80_0000);
        assert!(m.find_top(0x2000_0000, 0x1000, u64::MAX, &[]).is_none());
    }

    #[test]
    fn too_many_regions_is_an_error_not_a_panic() {
        let mut m = MemoryMap::new();
        let mut result = Ok(());
        for i in 0..(MAX_REGIONS as u64 + 4) {
            result = result.and(m.add(i * 0x2000, i * 0x2000 + 0x1000, Kind::Ram));
        }
        assert!(matches!(result, Err(MapError::TooManyRegions)));
    }
}
