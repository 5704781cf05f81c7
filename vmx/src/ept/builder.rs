//! Building an EPT address space: map, unmap and re-protect guest-physical ranges, always with
//! the largest page that fits and splitting a large page when only part of it changes.

use super::walk::{coverage, index, is_leaf, walk_with};
use super::{
    entry, EptError, EptPerms, FrameAllocator, MemType, PageSize, PhysRead, Translation, WalkError,
};
use crate::mtrr::{MemTypeOrMixed, Mtrrs};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// The highest guest-physical address plus one that 4-level EPT translates.
const LIMIT: u64 = 1 << 48;

/// Non-leaf entries allow everything; the leaves decide (SDM Vol. 3C 29.3.3: the access rights
/// of a translation are the AND of all its entries').
const TABLE_ENTRY_BITS: u64 = entry::RWX;

/// An EPT hierarchy under construction. Tables come from `A`; the PML4 is allocated up front.
pub struct EptBuilder<A: FrameAllocator> {
    alloc: A,
    pml4: u64,
    largest: PageSize,
}

impl<A: FrameAllocator> EptBuilder<A> {
    /// An empty address space using pages up to `largest` (see [`PageSize::largest_supported`]).
    pub fn new(mut alloc: A, largest: PageSize) -> Result<Self, EptError> {
        let pml4 = alloc.alloc_zeroed().ok_or(EptError::OutOfFrames)?;
        Ok(EptBuilder {
            alloc,
            pml4,
            largest,
        })
    }

    /// Opens an existing hierarchy whose PML4 is at `pml4` (one this builder made earlier), to
    /// change it in place; new tables come from `alloc`.
    pub fn attach(alloc: A, pml4: u64, largest: PageSize) -> Self {
        EptBuilder {
            alloc,
            pml4: pml4 & entry::ADDRESS,
            largest,
        }
    }

    /// Physical address of the PML4, for [`super::Eptp::new`].
    pub fn pml4(&self) -> u64 {
        self.pml4
    }

    pub fn allocator(&mut self) -> &mut A {
        &mut self.alloc
    }

    pub fn into_allocator(self) -> A {
        self.alloc
    }

    fn check_range(gpa: u64, len: u64) -> Result<u64, EptError> {
        if gpa & 0xfff != 0 || len & 0xfff != 0 {
            return Err(EptError::Unaligned);
        }
        gpa.checked_add(len)
            .filter(|&end| end <= LIMIT)
            .ok_or(EptError::OutOfRange)
    }

    /// Maps `[gpa, gpa + len)` to `[hpa, hpa + len)` with one memory type, replacing whatever
    /// was mapped there.
    pub fn map(
        &mut self,
        gpa: u64,
        hpa: u64,
        len: u64,
        perms: EptPerms,
        memtype: MemType,
    ) -> Result<(), EptError> {
        self.map_typed(gpa, hpa, len, perms, &mut |_, _| Some(memtype))
    }

    /// Maps like [`Self::map`] but takes each page's memory type from the MTRRs of the host
    /// range it maps, using a large page only where the MTRRs give the whole page one type.
    pub fn map_with_mtrrs(
        &mut self,
        gpa: u64,
        hpa: u64,
        len: u64,
        perms: EptPerms,
        mtrrs: &Mtrrs,
    ) -> Result<(), EptError> {
        self.map_typed(gpa, hpa, len, perms, &mut |start, size| match mtrrs
            .type_of_range(start, size)
        {
            MemTypeOrMixed::Uniform(t) => Some(t),
            MemTypeOrMixed::Mixed => None,
        })
    }

    /// `type_of(hpa, size)` gives the memory type of a candidate page, or `None` if the page
    /// would span more than one type and a smaller page must be tried.
    fn map_typed(
        &mut self,
        gpa: u64,
        hpa: u64,
        len: u64,
        perms: EptPerms,
        type_of: &mut dyn FnMut(u64, u64) -> Option<MemType>,
    ) -> Result<(), EptError> {
        let end = Self::check_range(gpa, len)?;
        if hpa & 0xfff != 0 {
            return Err(EptError::Unaligned);
        }
        if !perms.is_valid() {
            return Err(EptError::WriteWithoutRead);
        }
        let mut off = 0;
        while gpa + off < end {
            let (g, h, left) = (gpa + off, hpa + off, end - gpa - off);
            let sizes = [PageSize::Size1G, PageSize::Size2M, PageSize::Size4K];
            let (size, memtype) = sizes
                .into_iter()
                .filter(|s| {
                    *s <= self.largest
                        && g.is_multiple_of(s.bytes())
                        && h.is_multiple_of(s.bytes())
                        && left >= s.bytes()
                })
                .find_map(|s| type_of(h, s.bytes()).map(|t| (s, t)))
                .unwrap_or((PageSize::Size4K, MemType::Uncacheable));
            let leaf = h
                | perms.bits()
                | ((memtype as u64) << entry::MEMTYPE_SHIFT)
                | entry::SOFTWARE_MAPPED
                | if size == PageSize::Size4K {
                    0
                } else {
                    entry::LARGE
                };
            self.install(g, size.level(), leaf)?;
            off += size.bytes();
        }
        Ok(())
    }

    /// Writes `leaf` at `level` for `gpa`, creating tables on the way down and splitting larger
    /// leaves in the way. A table previously hanging there is freed.
    fn install(&mut self, gpa: u64, target: u8, leaf: u64) -> Result<(), EptError> {
        let mut table = self.pml4;
        for level in (target + 1..=4).rev() {
            let i = index(gpa, level);
            let e = self.alloc.table(table)[i];
            if e == 0 {
                let next = self.alloc.alloc_zeroed().ok_or(EptError::OutOfFrames)?;
                self.alloc.table(table)[i] = next | TABLE_ENTRY_BITS;
                table = next;
            } else if is_leaf(e, level) {
                table = self.split(table, i, level)?;
            } else {
                table = e & entry::ADDRESS;
            }
        }
        let i = index(gpa, target);
        let old = self.alloc.table(table)[i];
        self.alloc.table(table)[i] = leaf;
        if old != 0 && !is_leaf(old, target) {
            self.free_tree(old & entry::ADDRESS, target - 1);
        }
        Ok(())
    }

    /// Replaces the large leaf at `table[i]` (a `level` entry) by a table of 512 leaves one level
    /// down with the same permissions, type and addresses. Returns the new table.
    fn split(&mut self, table: u64, i: usize, level: u8) -> Result<u64, EptError> {
        let e = self.alloc.table(table)[i];
        let next = self.alloc.alloc_zeroed().ok_or(EptError::OutOfFrames)?;
        let child = coverage(level - 1);
        let attrs = e
            & !entry::ADDRESS
            & if level - 1 == 1 {
                !entry::LARGE
            } else {
                u64::MAX
            };
        let base = e & entry::ADDRESS;
        let t = self.alloc.table(next);
        for (j, slot) in t.iter_mut().enumerate() {
            *slot = (base + j as u64 * child) | attrs;
        }
        self.alloc.table(table)[i] = next | TABLE_ENTRY_BITS;
        Ok(next)
    }

    /// Frees the table at `table` (of `level`) and every table under it.
    fn free_tree(&mut self, table: u64, level: u8) {
        if level > 1 {
            let children: Vec<u64> = self
                .alloc
                .table(table)
                .iter()
                .filter(|&&e| e != 0 && !is_leaf(e, level))
                .map(|&e| e & entry::ADDRESS)
                .collect();
            for c in children {
                self.free_tree(c, level - 1);
            }
        }
        self.alloc.free(table);
    }

    /// Applies `f` to every leaf covering `[gpa, gpa + len)`, splitting leaves that stick out of
    /// the range so that nothing outside it changes. Unmapped parts are skipped.
    fn for_each_leaf_in(
        &mut self,
        gpa: u64,
        len: u64,
        f: &mut dyn FnMut(u64) -> u64,
    ) -> Result<(), EptError> {
        let end = Self::check_range(gpa, len)?;
        let mut at = gpa;
        'outer: while at < end {
            let mut table = self.pml4;
            let mut level = 4u8;
            loop {
                let i = index(at, level);
                let e = self.alloc.table(table)[i];
                let size = coverage(level);
                if e == 0 {
                    at = (at & !(size - 1)) + size;
                    continue 'outer;
                }
                if is_leaf(e, level) {
                    if at.is_multiple_of(size) && end - at >= size {
                        self.alloc.table(table)[i] = f(e);
                        at += size;
                        continue 'outer;
                    }
                    table = self.split(table, i, level)?;
                } else {
                    table = e & entry::ADDRESS;
                }
                level -= 1;
            }
        }
        Ok(())
    }

    /// Removes every mapping in `[gpa, gpa + len)`.
    pub fn unmap(&mut self, gpa: u64, len: u64) -> Result<(), EptError> {
        self.for_each_leaf_in(gpa, len, &mut |_| 0)
    }

    /// Changes the permissions of every mapped page in `[gpa, gpa + len)`. Pages given no
    /// permission at all stop translating but keep their address and type, so a later
    /// `protect` can bring them back.
    pub fn protect(&mut self, gpa: u64, len: u64, perms: EptPerms) -> Result<(), EptError> {
        if !perms.is_valid() {
            return Err(EptError::WriteWithoutRead);
        }
        self.for_each_leaf_in(gpa, len, &mut |e| (e & !entry::RWX) | perms.bits())
    }

    /// Sets the permissions of the one 4-KiB page at `gpa` (any permissions, execute-only and
    /// none included), splitting the larger page that holds it so nothing else changes. The
    /// page keeps its address and memory type. `Ok(false)` if nothing is mapped there.
    pub fn set_page_perms(&mut self, gpa: u64, perms: EptPerms) -> Result<bool, EptError> {
        if !perms.is_valid() {
            return Err(EptError::WriteWithoutRead);
        }
        let mut found = false;
        self.for_each_leaf_in(gpa & !0xfff, 4096, &mut |e| {
            found = true;
            (e & !entry::RWX) | perms.bits() | entry::SOFTWARE_MAPPED
        })?;
        Ok(found)
    }

    /// Where `gpa` leads, if anywhere.
    pub fn translate(&mut self, gpa: u64) -> Option<Translation> {
        self.try_translate(gpa).ok()
    }

    /// Like [`Self::translate`] but says why a translation fails.
    pub fn try_translate(&mut self, gpa: u64) -> Result<Translation, WalkError> {
        let alloc = &mut self.alloc;
        walk_with(self.pml4, gpa, &mut |phys| {
            Some(alloc.table(phys & entry::ADDRESS)[(phys as usize & 0xfff) / 8])
        })
    }

    /// Every leaf that translates, as (first guest-physical address, translation of it), in
    /// address order. Adjacent leaves are not merged.
    pub fn mappings(&mut self) -> Vec<(u64, Translation)> {
        let mut out = Vec::new();
        self.collect(self.pml4, 4, 0, &mut out);
        out
    }

    fn collect(&mut self, table: u64, level: u8, base: u64, out: &mut Vec<(u64, Translation)>) {
        let entries: Box<[u64; 512]> = Box::new(*self.alloc.table(table));
        for (i, &e) in entries.iter().enumerate() {
            let gpa = base + i as u64 * coverage(level);
            if e == 0 {
                continue;
            }
            if is_leaf(e, level) {
                if let Some(t) = self.translate(gpa) {
                    out.push((gpa, t));
                }
            } else {
                self.collect(e & entry::ADDRESS, level - 1, gpa, out);
            }
        }
    }
}

/// A frame allocator over heap memory, for host tests and tools: frame `n` has the physical
/// address `base + n * 4096`. Freed frames are reused.
pub struct ArenaFrames {
    base: u64,
    frames: Vec<Box<[u64; 512]>>,
    free: Vec<u64>,
    limit: usize,
}

impl ArenaFrames {
    /// An arena whose frames start at physical `base` (4-KiB aligned), holding at most `limit`.
    pub fn new(base: u64, limit: usize) -> Self {
        ArenaFrames {
            base,
            frames: Vec::new(),
            free: Vec::new(),
            limit,
        }
    }

    /// Frames handed out and not freed.
    pub fn in_use(&self) -> usize {
        self.frames.len() - self.free.len()
    }

    fn slot(&self, phys: u64) -> usize {
        let n = phys.checked_sub(self.base).map(|off| (off / 4096) as usize);
        match n {
            Some(n) if n < self.frames.len() => n,
            _ => panic!("physical address {phys:#x} is not an arena frame"),
        }
    }
}

impl FrameAllocator for ArenaFrames {
    fn alloc_zeroed(&mut self) -> Option<u64> {
        if let Some(phys) = self.free.pop() {
            let n = self.slot(phys);
            self.frames[n].fill(0);
            return Some(phys);
        }
        if self.frames.len() >= self.limit {
            return None;
        }
        self.frames.push(Box::new([0; 512]));
        Some(self.base + (self.frames.len() as u64 - 1) * 4096)
    }

    fn table(&mut self, phys: u64) -> &mut [u64; 512] {
        let n = self.slot(phys);
        &mut self.frames[n]
    }

    fn free(&mut self, phys: u64) {
        self.free.push(phys & !0xfff);
    }
}

impl PhysRead for ArenaFrames {
    fn read_u64(&self, phys: u64) -> Option<u64> {
        let n = phys.checked_sub(self.base)? / 4096;
        self.frames
            .get(n as usize)
            .map(|t| t[(phys as usize & 0xfff) / 8])
    }
}
