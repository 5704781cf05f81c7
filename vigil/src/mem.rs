//! Vigil's own memory: its image, and right after it one contiguous pool holding the heap and
//! every page-granular structure (VMXON/VMCS regions, bitmaps, EPT tables), together at the top
//! of RAM below 4 GiB (`vigil::placement`). The pool and the image are reserved: they are absent
//! from the guest's EPT and memory map.

use core::sync::atomic::{AtomicU64, Ordering};
use linked_list_allocator::LockedHeap;
use spin::Mutex;
use vigil::memmap::{Kind, MemoryMap};
use vigil::placement::Needs;

pub const PAGE: u64 = 4096;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

extern "C" {
    static __text_start: u8;
    static __rodata_end: u8;
}

/// Memory that must never change once the guest runs: Vigil's code and read-only data, and the
/// structures that confine the guest (EPT tables, MSR and I/O bitmaps). Its checksum before and
/// after a hostile guest shows the guest could not write to it.
static PROTECTED: Mutex<[(u64, u64); 8]> = Mutex::new([(0, 0); 8]);

/// Adds [start, end) to the protected set.
pub fn protect(start: u64, end: u64) {
    let mut p = PROTECTED.lock();
    if let Some(slot) = p.iter_mut().find(|r| r.1 == 0) {
        *slot = (start, end);
    }
}

/// FNV-1a over Vigil's code, read-only data and every protected range.
pub fn protected_checksum() -> u64 {
    let text = (
        core::ptr::addr_of!(__text_start) as u64,
        core::ptr::addr_of!(__rodata_end) as u64,
    );
    let ranges = *PROTECTED.lock();
    let mut hash = 0xCBF2_9CE4_8422_2325u64;
    for (start, end) in core::iter::once(text).chain(ranges.into_iter().filter(|r| r.1 > r.0)) {
        // SAFETY: each range is Vigil's own identity-mapped memory, only read here.
        let bytes =
            unsafe { core::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
        for &b in bytes {
            hash = (hash ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    hash
}

/// Vigil's image in physical memory, [start, end).
pub fn image_range() -> (u64, u64) {
    crate::arch::boot::image_phys()
}

struct Frames {
    next: u64,
    end: u64,
}

static FRAMES: Mutex<Frames> = Mutex::new(Frames { next: 0, end: 0 });
static POOL_START: AtomicU64 = AtomicU64::new(0);
static POOL_END: AtomicU64 = AtomicU64::new(0);
static FRAMES_START: AtomicU64 = AtomicU64::new(0);

/// Starts the pool at `start` (right after the moved image), starts the heap, and marks
/// Vigil's memory as reserved in `map`.
pub fn init(map: &mut MemoryMap, start: u64, needs: &Needs) -> Result<(), &'static str> {
    let image = image_range();
    let end = start + needs.pool();
    map.set(image.0, image.1, Kind::Reserved)
        .map_err(|_| "memory map too fragmented")?;
    map.set(start, end, Kind::Reserved)
        .map_err(|_| "memory map too fragmented")?;
    POOL_START.store(start, Ordering::Relaxed);
    POOL_END.store(end, Ordering::Relaxed);
    // SAFETY: the heap range is RAM reserved for Vigil alone, identity-mapped, and unused.
    unsafe { HEAP.lock().init(start as *mut u8, needs.heap as usize) };
    FRAMES_START.store(start + needs.heap, Ordering::Relaxed);
    *FRAMES.lock() = Frames {
        next: start + needs.heap,
        end,
    };
    Ok(())
}

/// Bytes of the heap in use now, and its size.
pub fn heap_usage() -> (usize, usize) {
    let heap = HEAP.lock();
    (heap.used(), heap.size())
}

/// Frames handed out so far, and how many the pool has.
pub fn frame_usage() -> (u64, u64) {
    let f = FRAMES.lock();
    let start = FRAMES_START.load(Ordering::Relaxed);
    ((f.next - start) / PAGE, (f.end - start) / PAGE)
}

/// Vigil's pool, [start, end).
pub fn pool_range() -> (u64, u64) {
    (
        POOL_START.load(Ordering::Relaxed),
        POOL_END.load(Ordering::Relaxed),
    )
}

/// The address the next frame allocation will return.
pub fn next_frame() -> u64 {
    FRAMES.lock().next
}

/// `count` contiguous zeroed 4 KiB frames; returns the physical (= virtual) address.
pub fn alloc_frames(count: u64) -> Option<u64> {
    let mut f = FRAMES.lock();
    let at = f.next;
    if at + count * PAGE > f.end {
        return None;
    }
    f.next += count * PAGE;
    // SAFETY: the frames are in Vigil's pool, identity-mapped and handed out once.
    unsafe { core::ptr::write_bytes(at as *mut u8, 0, (count * PAGE) as usize) };
    Some(at)
}

/// The facts Vigil's footprint depends on, read without the heap (it does not exist yet):
/// the largest leaf of the nested tables (EPT or NPT), MAXPHYADDR, 1 GiB pages for Vigil's own map, and the edges of the
/// host's variable MTRR ranges (the guest's EPT splits large pages there). Returns the machine
/// and how many of `edges` it filled.
pub fn machine_facts(edges: &mut [u64]) -> (vigil::placement::Machine, usize) {
    use crate::arch::regs::{cpuid, rdmsr};
    use vigil::placement::{Leaf, Machine};
    let max_ext = cpuid(0x8000_0000, 0)[0];
    let phys_bits = if max_ext >= 0x8000_0008 {
        (cpuid(0x8000_0008, 0)[0] & 0xFF) as u8
    } else {
        36
    };
    let host_1g_pages = max_ext >= 0x8000_0001 && cpuid(0x8000_0001, 0)[3] & (1 << 26) != 0;
    // SDM Vol. 3D A.3.2, A.3.3, A.10: the EPT capability MSR exists only when the secondary
    // controls and their "enable EPT" bit may be 1.
    let vmx = cpuid(1, 0)[2] & (1 << 5) != 0;
    // Nested page tables use the host's own page sizes (APM Vol. 2 15.25.3): 2 MiB always, 1 GiB
    // with 1-GiB pages.
    let npt = !vmx
        && max_ext >= 0x8000_000A
        && cpuid(0x8000_0001, 0)[2] & (1 << 2) != 0
        && cpuid(0x8000_000A, 0)[3] & 1 != 0;
    let ept_leaf = if vmx && rdmsr(0x482) & (1 << 63) != 0 && rdmsr(0x48B) & (1 << 33) != 0 {
        let cap = rdmsr(0x48C);
        match (cap & (1 << 16) != 0, cap & (1 << 17) != 0) {
            (true, true) => Leaf::Size1G,
            (true, false) => Leaf::Size2M,
            _ => Leaf::Size4K,
        }
    } else if npt && host_1g_pages {
        Leaf::Size1G
    } else if npt {
        Leaf::Size2M
    } else {
        Leaf::Size4K
    };
    let mut n = 0;
    // MTRRs (SDM Vol. 3A 12.11.2): present with CPUID.1:EDX[12], on with IA32_MTRR_DEF_TYPE.E.
    if cpuid(1, 0)[3] & (1 << 12) != 0 {
        let cap = rdmsr(0xFE);
        let def = rdmsr(0x2FF);
        let addr_mask = ((1u64 << phys_bits) - 1) & !0xFFF;
        if def & (1 << 11) != 0 {
            if def & (1 << 10) != 0 && cap & (1 << 8) != 0 && n < edges.len() {
                // Fixed ranges cover the first MiB in pieces down to 4 KiB.
                edges[n] = 0x1000;
                n += 1;
            }
            for i in 0..(cap & 0xFF) as u32 {
                let mask = rdmsr(0x201 + 2 * i);
                let bits = mask & addr_mask;
                if mask & (1 << 11) == 0 || bits == 0 || n + 2 > edges.len() {
                    continue;
                }
                let base = rdmsr(0x200 + 2 * i) & addr_mask;
                edges[n] = base;
                edges[n + 1] = base + (1u64 << bits.trailing_zeros());
                n += 2;
            }
        }
    }
    (
        Machine {
            ept_leaf,
            phys_bits,
            host_1g_pages,
            // The caller counts the processors (the MADT).
            cpus: 1,
        },
        n,
    )
}
