//! Building a nested address space: map, unmap and re-protect guest-physical ranges, always
//! with the largest page that fits, splitting a large page when only part of it changes.

use super::{entry, FrameAllocator, NptError, NptPerms, PageSize, Translation};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// The highest guest-physical address plus one that 4-level tables translate.
const LIMIT: u64 = 1 << 48;

/// Non-leaf entries allow everything (present, writable, user, executable); the leaves decide,
/// as a translation's rights are those all its entries allow together (Vol. 2 5.6).
/// Accessed is preset in every entry and dirty in every leaf (see [`PRESET`]).
const TABLE_ENTRY_BITS: u64 = entry::PRESENT | entry::WRITABLE | entry::USER | entry::ACCESSED;

/// Set in every leaf from the start. A processor sets accessed and dirty bits in nested
/// entries as in any page table (QEMU's TCG does; Bochs does not): preset, they are never
/// written, so the tables stay unchanged memory that the protected checksum can cover.
pub const PRESET: u64 = entry::ACCESSED | entry::DIRTY;

/// Bytes one entry of `level` covers.
const fn coverage(level: u8) -> u64 {
    1 << (12 + 9 * (level as u32 - 1))
}

/// The index of `gpa` in a table of `level`.
const fn index(gpa: u64, level: u8) -> usize {
    ((gpa >> (12 + 9 * (level as u32 - 1))) & 0x1ff) as usize
}

/// Whether `e`, at `level`, maps a page (or remembers one) rather than pointing at a table.
/// (Tables are always present; a large leaf keeps PS even while not present.)
fn is_leaf(e: u64, level: u8) -> bool {
    level == 1 || e & entry::LARGE != 0
}

/// A nested hierarchy under construction. Tables come from `A`; the PML4 is allocated up front.
pub struct NptBuilder<A: FrameAllocator> {
    alloc: A,
    pml4: u64,
    largest: PageSize,
    /// No-execute may be used (the host runs with EFER.NXE).
    nx: bool,
}

impl<A: FrameAllocator> NptBuilder<A> {
    /// An empty address space with pages up to `largest`.
    pub fn new(mut alloc: A, largest: PageSize, nx: bool) -> Result<Self, NptError> {
        let pml4 = alloc.alloc_zeroed().ok_or(NptError::OutOfFrames)?;
        Ok(NptBuilder {
            alloc,
            pml4,
            largest,
            nx,
        })
    }

    /// Opens an existing hierarchy whose PML4 is at `pml4` (one this builder made), to change
    /// it in place.
    pub fn attach(alloc: A, pml4: u64, largest: PageSize, nx: bool) -> Self {
        NptBuilder {
            alloc,
            pml4: pml4 & entry::ADDRESS,
            largest,
            nx,
        }
    }

    /// N_CR3: the PML4's physical address.
    pub fn root(&self) -> u64 {
        self.pml4
    }

    pub fn allocator(&mut self) -> &mut A {
        &mut self.alloc
    }

    pub fn into_allocator(self) -> A {
        self.alloc
    }

    fn check_range(gpa: u64, len: u64) -> Result<u64, NptError> {
        if gpa & 0xfff != 0 || len & 0xfff != 0 {
            return Err(NptError::Unaligned);
        }
        gpa.checked_add(len)
            .filter(|&end| end <= LIMIT)
            .ok_or(NptError::OutOfRange)
    }

    fn bits(&self, perms: NptPerms) -> Result<u64, NptError> {
        perms.entry_bits(self.nx).ok_or(NptError::Inexpressible)
    }

    /// Maps `[gpa, gpa + len)` to `[hpa, hpa + len)`, replacing whatever was mapped there.
    pub fn map(&mut self, gpa: u64, hpa: u64, len: u64, perms: NptPerms) -> Result<(), NptError> {
        let end = Self::check_range(gpa, len)?;
        if hpa & 0xfff != 0 {
            return Err(NptError::Unaligned);
        }
        let bits = self.bits(perms)?;
        let mut off = 0;
        while gpa + off < end {
            let (g, h, left) = (gpa + off, hpa + off, end - gpa - off);
            let size = [PageSize::Size1G, PageSize::Size2M, PageSize::Size4K]
                .into_iter()
                .find(|s| {
                    *s <= self.largest
                        && g.is_multiple_of(s.bytes())
                        && h.is_multiple_of(s.bytes())
                        && left >= s.bytes()
                })
                .unwrap_or(PageSize::Size4K);
            let leaf = h
                | bits
                | PRESET
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

    /// Writes `leaf` at `target` level for `gpa`, creating tables on the way down and splitting
    /// larger leaves in the way; a table previously hanging there is freed.
    fn install(&mut self, gpa: u64, target: u8, leaf: u64) -> Result<(), NptError> {
        let mut table = self.pml4;
        for level in (target + 1..=4).rev() {
            let i = index(gpa, level);
            let e = self.alloc.table(table)[i];
            if e == 0 {
                let next = self.alloc.alloc_zeroed().ok_or(NptError::OutOfFrames)?;
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

    /// Replaces the large leaf at `table[i]` (a `level` entry) by a table of 512 leaves one
    /// level down with the same rights and addresses. In a 4-KiB entry bit 7 is PAT, not PS, so
    /// it is cleared there (the builder's leaves select PAT entry 0 either way). Returns the new
    /// table.
    fn split(&mut self, table: u64, i: usize, level: u8) -> Result<u64, NptError> {
        let e = self.alloc.table(table)[i];
        let next = self.alloc.alloc_zeroed().ok_or(NptError::OutOfFrames)?;
        let child = coverage(level - 1);
        let mut attrs = (e & !entry::ADDRESS) | PRESET;
        if level - 1 == 1 {
            attrs &= !entry::LARGE;
        } else {
            // A remembered (not present) leaf keeps its size marker for its children.
            attrs |= entry::LARGE;
        }
        let base = e & entry::ADDRESS;
        let t = self.alloc.table(next);
        for (j, slot) in t.iter_mut().enumerate() {
            *slot = (base + j as u64 * child) | attrs;
        }
        self.alloc.table(table)[i] = next | TABLE_ENTRY_BITS;
        Ok(next)
    }

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
    /// the range so nothing outside it changes. Unmapped parts are skipped.
    fn for_each_leaf_in(
        &mut self,
        gpa: u64,
        len: u64,
        f: &mut dyn FnMut(u64) -> u64,
    ) -> Result<(), NptError> {
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
    pub fn unmap(&mut self, gpa: u64, len: u64) -> Result<(), NptError> {
        self.for_each_leaf_in(gpa, len, &mut |_| 0)
    }

    /// Changes the permissions of every mapped page in `[gpa, gpa + len)`, keeping addresses.
    pub fn protect(&mut self, gpa: u64, len: u64, perms: NptPerms) -> Result<(), NptError> {
        let bits = self.bits(perms)?;
        self.for_each_leaf_in(gpa, len, &mut |e| with_perms(e, bits))
    }

    /// Sets the permissions of the one 4-KiB page at `gpa`, splitting the larger page that holds
    /// it so nothing else changes. `Ok(false)` if nothing is mapped there.
    pub fn set_page_perms(&mut self, gpa: u64, perms: NptPerms) -> Result<bool, NptError> {
        let bits = self.bits(perms)?;
        let mut found = false;
        self.for_each_leaf_in(gpa & !0xfff, 4096, &mut |e| {
            found = true;
            with_perms(e, bits)
        })?;
        Ok(found)
    }

    /// Where `gpa` leads, if anywhere (through the tables as the processor walks them).
    pub fn translate(&mut self, gpa: u64) -> Option<Translation> {
        let alloc = core::cell::RefCell::new(&mut self.alloc);
        let read = |phys: u64| {
            let mut a = alloc.borrow_mut();
            Some(a.table(phys & entry::ADDRESS)[(phys as usize & 0xfff) / 8])
        };
        super::walk(&read, self.pml4, gpa, 52).ok()
    }

    /// Every leaf that translates, as (first guest-physical address, translation), in address
    /// order.
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

/// A leaf with new permission bits, keeping its address, size and the software mark.
fn with_perms(e: u64, bits: u64) -> u64 {
    let keep = e & (entry::ADDRESS | entry::LARGE);
    keep | bits | PRESET | entry::SOFTWARE_MAPPED
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

impl x86_arch::PhysRead for ArenaFrames {
    fn read_u64(&self, phys: u64) -> Option<u64> {
        let n = phys.checked_sub(self.base)? / 4096;
        self.frames
            .get(n as usize)
            .map(|t| t[(phys as usize & 0xfff) / 8])
    }
}
