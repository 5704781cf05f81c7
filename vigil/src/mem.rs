//! Vigil's own memory: one contiguous pool carved from the top of RAM below 4 GiB, holding the
//! heap and every page-granular structure (VMXON/VMCS regions, bitmaps, EPT tables). The pool and
//! the image are reserved: they are absent from the guest's EPT and memory map.

use core::sync::atomic::{AtomicU64, Ordering};
use linked_list_allocator::LockedHeap;
use spin::Mutex;
use vigil::memmap::{Kind, MemoryMap};

pub const PAGE: u64 = 4096;
pub const HEAP_SIZE: u64 = 8 << 20;
pub const FRAMES_SIZE: u64 = 8 << 20;
pub const POOL_SIZE: u64 = HEAP_SIZE + FRAMES_SIZE;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

extern "C" {
    static __vigil_start: u8;
    static __vigil_end: u8;
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

/// Vigil's image, [start, end).
pub fn image_range() -> (u64, u64) {
    (
        core::ptr::addr_of!(__vigil_start) as u64,
        core::ptr::addr_of!(__vigil_end) as u64,
    )
}

struct Frames {
    next: u64,
    end: u64,
}

static FRAMES: Mutex<Frames> = Mutex::new(Frames { next: 0, end: 0 });
static POOL_START: AtomicU64 = AtomicU64::new(0);
static POOL_END: AtomicU64 = AtomicU64::new(0);

/// Places the pool, starts the heap, and marks Vigil's memory as reserved in `map`.
/// `avoid` lists ranges the pool must not overlap (boot information, modules).
pub fn init(map: &mut MemoryMap, avoid: &[(u64, u64)]) -> Result<(), &'static str> {
    let image = image_range();
    let mut all_avoid = [(0u64, 0u64); 16];
    all_avoid[0] = image;
    let n = avoid.len().min(15);
    all_avoid[1..=n].copy_from_slice(&avoid[..n]);
    let pool = map
        .find_top(POOL_SIZE, 2 << 20, 1 << 32, &all_avoid[..=n])
        .ok_or("no room below 4 GiB for Vigil's memory pool")?;
    map.set(image.0, image.1, Kind::Reserved)
        .map_err(|_| "memory map too fragmented")?;
    map.set(pool, pool + POOL_SIZE, Kind::Reserved)
        .map_err(|_| "memory map too fragmented")?;
    POOL_START.store(pool, Ordering::Relaxed);
    POOL_END.store(pool + POOL_SIZE, Ordering::Relaxed);
    // SAFETY: the heap range is RAM reserved for Vigil alone, identity-mapped, and unused.
    unsafe { HEAP.lock().init(pool as *mut u8, HEAP_SIZE as usize) };
    *FRAMES.lock() = Frames {
        next: pool + HEAP_SIZE,
        end: pool + POOL_SIZE,
    };
    Ok(())
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
