//! Where Vigil puts itself, and how much memory it takes: plain arithmetic over the memory map,
//! tested on the host.
//!
//! Vigil's memory is one range at the top of RAM below 4 GiB — its image, then its pool (heap and
//! page frames) — just under what the firmware keeps there (ACPI tables), where guests expect
//! reserved memory anyway and never a hole in the RAM they count on from 1 MiB up. The pool is
//! sized from what this machine needs: the guest's EPT tables for its address space, Vigil's own
//! identity map, the VMX regions and bitmaps, spare tables for the debugger, and the heap.

use crate::memmap::MemoryMap;

pub const PAGE: u64 = 4096;
const GIB: u64 = 1 << 30;
const MIB2: u64 = 1 << 21;

/// The heap: set-up, reports, the debugger's buffers. The exit path does not allocate.
pub const HEAP_SIZE: u64 = 1 << 20;
/// The backend's own pages: VMXON region, VMCS, MSR bitmap and two I/O bitmaps for VMX; for SVM
/// the host save area, Vigil's VMLOAD/VMSAVE state, the VMCB, two MSR permission map pages and
/// three I/O permission map pages.
pub const BACKEND_FRAMES: u64 = 8;
/// Tables for the debugger's EPT splits (breakpoints and watchpoints on pages held by large
/// leaves: at most two tables per debugged page).
pub const DEBUGGER_FRAMES: u64 = 32;
/// Each further processor: its stack (64 KiB), its VMXON region and its VMCS (the bitmaps and
/// the EPT are shared).
pub const AP_STACK_FRAMES: u64 = 16;
pub const AP_FRAMES: u64 = AP_STACK_FRAMES + 2;
/// Each further processor's heap: its exit statistics (about 470 KiB: `vigil_core::stats`) and
/// its debugger state.
pub const AP_HEAP: u64 = 512 << 10;
/// How much of the physical address space the guest's closed A20 gate is emulated for
/// (`intel::ept`): 16 MiB, the 286's whole address space.
pub const A20_EMULATED: u64 = 16 << 20;
/// The A20 view's own tables beyond the second EPT: a page table per 2 MiB of the emulated
/// range, and a page directory for it.
pub const A20_FRAMES: u64 = A20_EMULATED / MIB2 + 1;
/// The platform's pages: one PRD copy per IDE channel (`vigil_core::platform::dma`).
pub const PLATFORM_FRAMES: u64 = 2;

/// The largest EPT leaf the processor supports (SDM Vol. 3D A.10), as a paging level:
/// 1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Leaf {
    Size4K = 1,
    Size2M = 2,
    Size1G = 3,
}

/// How far the guest's EPT reaches. With 1 GiB leaves the whole physical address space the
/// processor reports (MAXPHYADDR, at most the 48 bits 4-level EPT translates) costs a few tables,
/// so device ranges anywhere — 64-bit BARs above RAM included — are reachable as on bare metal.
/// Without them it stops at the top of RAM, and at least 4 GiB for the devices below it.
pub fn ept_top(leaf: Leaf, phys_bits: u8, ram_end: u64) -> u64 {
    let low = ram_end.max(4 * GIB).next_multiple_of(GIB);
    match leaf {
        Leaf::Size1G => (1u64 << phys_bits.clamp(32, 48)).max(low),
        _ => low,
    }
}

/// An upper bound on the EPT tables an identity map of `[0, top)` takes when every address in
/// `edges` may start or end a range of its own (memory-map regions, Vigil's ranges, MTRR ranges):
/// a table is needed at a level only where an edge is not aligned to that level's leaves.
/// `spare_edges` accounts for edges not listed (Vigil's own range, placed later).
pub fn ept_frames_bound(
    leaf: Leaf,
    top: u64,
    edges: impl Iterator<Item = u64>,
    spare_edges: u64,
) -> u64 {
    let pml4 = 1;
    let pdpts = top.div_ceil(512 * GIB);
    // Distinct 1 GiB and 2 MiB blocks holding an unaligned edge (sorted, no allocation).
    let (mut pds, mut pts) = (0u64, 0u64);
    let mut blocks_1g = [u64::MAX; 64];
    let mut blocks_2m = [u64::MAX; 64];
    let mut overflow = 0u64;
    for e in edges.filter(|&e| e < top) {
        if !e.is_multiple_of(GIB) && !note(&mut blocks_1g, e / GIB) {
            overflow += 1;
        }
        if !e.is_multiple_of(MIB2) && !note(&mut blocks_2m, e / MIB2) {
            overflow += 1;
        }
    }
    let distinct = |b: &[u64; 64]| b.iter().filter(|&&x| x != u64::MAX).count() as u64;
    match leaf {
        Leaf::Size1G => {
            pds += distinct(&blocks_1g) + overflow + spare_edges;
            pts += distinct(&blocks_2m) + overflow + spare_edges;
        }
        Leaf::Size2M => {
            pds += top.div_ceil(GIB);
            pts += distinct(&blocks_2m) + overflow + spare_edges;
        }
        Leaf::Size4K => {
            pds += top.div_ceil(GIB);
            pts += top.div_ceil(MIB2);
        }
    }
    pml4 + pdpts + pds + pts
}

/// Records `block` in a small set; false when the set is full (the caller counts it apart).
fn note(set: &mut [u64; 64], block: u64) -> bool {
    if set.contains(&block) {
        return true;
    }
    match set.iter_mut().find(|x| **x == u64::MAX) {
        Some(slot) => {
            *slot = block;
            true
        }
        None => false,
    }
}

/// What Vigil needs from this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    pub image: u64,
    pub heap: u64,
    pub frames: u64,
}

impl Needs {
    pub fn pool(&self) -> u64 {
        self.heap + self.frames * PAGE
    }

    pub fn total(&self) -> u64 {
        self.image.next_multiple_of(PAGE) + self.pool()
    }
}

/// The machine facts the pool's size depends on.
#[derive(Clone, Copy, Debug)]
pub struct Machine {
    pub ept_leaf: Leaf,
    /// MAXPHYADDR (CPUID.80000008H:EAX[7:0]).
    pub phys_bits: u8,
    /// 1 GiB pages in Vigil's own paging (CPUID.80000001H:EDX[26]): its identity map above
    /// 4 GiB then needs no tables.
    pub host_1g_pages: bool,
    /// Processors (each one a vCPU).
    pub cpus: u32,
}

/// Vigil's needs on a machine with memory map `map`; `extra_edges` are further range edges the
/// guest's EPT will have (MTRR ranges).
pub fn needs(map: &MemoryMap, image: u64, m: &Machine, extra_edges: &[u64]) -> Needs {
    let ram_end = map.ram_end();
    let top = ept_top(m.ept_leaf, m.phys_bits, ram_end);
    let edges = map
        .regions()
        .iter()
        .flat_map(|r| [r.start, r.end])
        .chain(extra_edges.iter().copied());
    // Vigil's image and pool: three edges, placed once the size is known.
    let ept = ept_frames_bound(m.ept_leaf, top, edges, 3);
    let identity = if m.host_1g_pages || ram_end <= 4 * GIB {
        0
    } else {
        (ram_end.min(512 * GIB) - 4 * GIB).div_ceil(GIB)
    };
    let aps = m.cpus.max(1) as u64 - 1;
    Needs {
        image,
        heap: HEAP_SIZE + aps * AP_HEAP,
        // Two EPTs: the guest's, and its view with A20 closed.
        frames: BACKEND_FRAMES
            + DEBUGGER_FRAMES
            + PLATFORM_FRAMES
            + identity
            + 2 * ept
            + A20_FRAMES
            + aps * AP_FRAMES,
    }
}

/// Where Vigil goes: the highest page-aligned range of `size` bytes of RAM below 4 GiB that
/// avoids `avoid` (the boot information, the modules, the image's own load address).
pub fn place(map: &MemoryMap, size: u64, avoid: &[(u64, u64)]) -> Option<u64> {
    // Not below 1 MiB: conventional memory is where boot protocols put their data.
    let mut all = [(0u64, 0u64); 24];
    all[0] = (0, 0x10_0000);
    let n = avoid.len().min(all.len() - 1);
    all[1..=n].copy_from_slice(&avoid[..n]);
    map.find_top(size, PAGE, 4 * GIB, &all[..=n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memmap::Kind;
    use alloc::boxed::Box;
    use alloc::vec::Vec;
    use vmx::ept::{EptBuilder, EptPerms, FrameAllocator, MemType, PageSize};

    /// Frames from the heap, counted; never reused (like Vigil's bump allocator).
    #[derive(Default)]
    struct Counting {
        tables: Vec<Box<[u64; 512]>>,
    }

    impl FrameAllocator for Counting {
        fn alloc_zeroed(&mut self) -> Option<u64> {
            self.tables.push(Box::new([0; 512]));
            Some((self.tables.len() as u64) << 12)
        }
        fn table(&mut self, phys: u64) -> &mut [u64; 512] {
            &mut self.tables[(phys >> 12) as usize - 1]
        }
    }

    fn bochs(megs: u64) -> MemoryMap {
        let mut m = MemoryMap::new();
        m.add(0, 0x9F000, Kind::Ram).unwrap();
        m.add(0x9F000, 0xA0000, Kind::Reserved).unwrap();
        m.add(0xE8000, 0x10_0000, Kind::Reserved).unwrap();
        let low_end = (megs << 20).min(0xE000_0000);
        m.add(0x10_0000, low_end - 0x1_0000, Kind::Ram).unwrap();
        m.add(low_end - 0x1_0000, low_end, Kind::AcpiReclaimable)
            .unwrap();
        m.add(0xFFFC_0000, 0x1_0000_0000, Kind::Reserved).unwrap();
        if megs << 20 > 0xE000_0000 {
            let above = (megs << 20) - 0xE000_0000;
            m.add(1 << 32, (1 << 32) + above, Kind::Ram).unwrap();
        }
        m
    }

    /// Builds the guest's EPT the way `vmm/ept_space.rs` does without MTRRs; returns the frames
    /// it took.
    fn build(map: &MemoryMap, vigil: (u64, u64), leaf: Leaf, top: u64) -> u64 {
        let largest = match leaf {
            Leaf::Size4K => PageSize::Size4K,
            Leaf::Size2M => PageSize::Size2M,
            Leaf::Size1G => PageSize::Size1G,
        };
        let mut ept = EptBuilder::new(Counting::default(), largest).unwrap();
        ept.map(0, 0, top, EptPerms::RWX, MemType::Uncacheable)
            .unwrap();
        for r in map.ram() {
            let (s, e) = (r.start.next_multiple_of(4096), r.end & !0xFFF);
            if s < e {
                ept.map(s, s, e - s, EptPerms::RWX, MemType::WriteBack)
                    .unwrap();
            }
        }
        ept.unmap(vigil.0, vigil.1 - vigil.0).unwrap();
        ept.into_allocator().tables.len() as u64
    }

    #[test]
    fn the_bound_holds_for_every_size_and_leaf() {
        for megs in [32, 64, 256, 3072, 3584, 4096, 6144] {
            for leaf in [Leaf::Size1G, Leaf::Size2M, Leaf::Size4K] {
                if leaf == Leaf::Size4K && megs > 256 {
                    continue; // millions of host allocations, nothing new to learn
                }
                let mut map = bochs(megs);
                let m = Machine {
                    ept_leaf: leaf,
                    phys_bits: 40,
                    host_1g_pages: true,
                    cpus: 1,
                };
                let needs = needs(&map, 0xC_7000, &m, &[]);
                let base = place(&map, needs.total(), &[]).unwrap();
                let end = base + needs.total();
                map.set(base, end, Kind::Reserved).unwrap();
                let top = ept_top(leaf, 40, map.ram_end());
                let used = build(&map, (base, end), leaf, top);
                assert!(
                    used <= needs.frames - BACKEND_FRAMES - DEBUGGER_FRAMES,
                    "{megs} MiB {leaf:?}: {used} EPT tables, bound {}",
                    needs.frames
                );
            }
        }
    }

    #[test]
    fn footprint_is_small_and_vigil_sits_at_the_top_of_low_ram() {
        let m = Machine {
            ept_leaf: Leaf::Size1G,
            phys_bits: 40,
            host_1g_pages: true,
            cpus: 1,
        };
        for megs in [32, 256, 4096] {
            let map = bochs(megs);
            let needs = needs(&map, 0xC_7000, &m, &[]);
            assert!(needs.total() <= 8 << 20, "{megs} MiB: {needs:?}");
            let base = place(&map, needs.total(), &[]).unwrap();
            let low_end = (megs << 20).min(0xE000_0000) - 0x1_0000;
            assert_eq!(base + needs.total(), low_end, "flush under the ACPI tables");
        }
        // Without 1 GiB leaves a 4 GiB machine still fits the goal.
        let m2 = Machine {
            ept_leaf: Leaf::Size2M,
            ..m
        };
        assert!(needs(&bochs(4096), 0xC_7000, &m2, &[]).total() <= 8 << 20);
        // Each further processor adds its stack, VMX regions and statistics, no more.
        let one = needs(&bochs(256), 0xC_7000, &m, &[]);
        let four = needs(&bochs(256), 0xC_7000, &Machine { cpus: 4, ..m }, &[]);
        assert_eq!(four.heap - one.heap, 3 * AP_HEAP);
        assert_eq!(four.frames - one.frames, 3 * AP_FRAMES);
        assert!(four.total() <= 8 << 20, "{four:?}");
    }

    #[test]
    fn placement_avoids_modules_and_low_memory() {
        let map = bochs(32);
        let top = place(&map, 0x20_0000, &[]).unwrap();
        let module = (top + 0x1000, top + 0x2000);
        let below = place(&map, 0x20_0000, &[module]).unwrap();
        assert!(below + 0x20_0000 <= module.0);
        assert!(
            place(&map, 32 << 20, &[]).is_none(),
            "more than the machine has"
        );
        let mut tiny = MemoryMap::new();
        tiny.add(0, 0x9F000, Kind::Ram).unwrap();
        assert!(
            place(&tiny, 0x1000, &[]).is_none(),
            "never in conventional memory"
        );
    }

    #[test]
    fn ept_reaches_maxphyaddr_with_1g_leaves_only() {
        assert_eq!(ept_top(Leaf::Size1G, 40, 256 << 20), 1 << 40);
        assert_eq!(ept_top(Leaf::Size2M, 40, 256 << 20), 4 * GIB);
        assert_eq!(ept_top(Leaf::Size2M, 40, 5 * GIB + 1), 6 * GIB);
        assert_eq!(
            ept_top(Leaf::Size1G, 52, 0),
            1 << 48,
            "4-level EPT stops at 48 bits"
        );
    }
}
