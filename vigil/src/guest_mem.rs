//! Guest-physical memory as Vigil touches it on the guest's behalf. Guest-physical addresses
//! equal host-physical ones for guest RAM (the EPT is an identity map minus Vigil), and every
//! access is checked against the guest's RAM first, so no guest-chosen address can make Vigil
//! read or write its own memory or a device.

use spin::Once;
use vigil::loader::{GuestMemory, LoadError};
use vigil::memmap::MemoryMap;

static GUEST_RAM: Once<MemoryMap> = Once::new();
/// The end of Vigil's own identity map: guest RAM above it cannot be touched by Vigil.
static REACHABLE_END: Once<u64> = Once::new();

/// Records the guest's memory map (machine map minus Vigil), and how far Vigil's own page
/// tables reach, once.
pub fn init(map: MemoryMap, reachable_end: u64) {
    GUEST_RAM.call_once(|| map);
    REACHABLE_END.call_once(|| reachable_end);
}

pub fn map() -> &'static MemoryMap {
    GUEST_RAM
        .get()
        .expect("guest memory map is set before any guest access")
}

fn is_ram(gpa: u64, len: u64) -> bool {
    let reachable = REACHABLE_END.get().copied().unwrap_or(0);
    gpa.checked_add(len)
        .is_some_and(|end| end <= reachable && map().is_ram(gpa, end))
}

/// Copies guest RAM into `buf`; false (and nothing read) if any byte is not guest RAM.
pub fn read(gpa: u64, buf: &mut [u8]) -> bool {
    if !is_ram(gpa, buf.len() as u64) {
        return false;
    }
    // SAFETY: the range is guest RAM, identity-mapped in Vigil's page tables, and not Vigil's.
    unsafe { core::ptr::copy_nonoverlapping(gpa as *const u8, buf.as_mut_ptr(), buf.len()) };
    true
}

/// Copies `bytes` into guest RAM; false (and nothing written) if any byte is not guest RAM.
pub fn write(gpa: u64, bytes: &[u8]) -> bool {
    if !is_ram(gpa, bytes.len() as u64) {
        return false;
    }
    // SAFETY: the range is guest RAM, identity-mapped in Vigil's page tables, and not Vigil's.
    unsafe { core::ptr::copy(bytes.as_ptr(), gpa as *mut u8, bytes.len()) };
    true
}

/// Guest memory for the loaders.
pub struct Loader;

impl GuestMemory for Loader {
    fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), LoadError> {
        if !is_ram(gpa, bytes.len() as u64) {
            return Err(LoadError::NotGuestRam {
                what: "data",
                start: gpa,
                end: gpa + bytes.len() as u64,
            });
        }
        // SAFETY: checked above: guest RAM, identity-mapped.
        unsafe { core::ptr::copy(bytes.as_ptr(), gpa as *mut u8, bytes.len()) };
        Ok(())
    }

    fn zero(&mut self, gpa: u64, len: u64) -> Result<(), LoadError> {
        if !is_ram(gpa, len) {
            return Err(LoadError::NotGuestRam {
                what: "data",
                start: gpa,
                end: gpa + len,
            });
        }
        // SAFETY: checked above: guest RAM, identity-mapped.
        unsafe { core::ptr::write_bytes(gpa as *mut u8, 0, len as usize) };
        Ok(())
    }
}
