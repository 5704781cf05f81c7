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

/// Whether `[gpa, gpa + len)` is memory the guest reaches itself that is not RAM (a device,
/// a ROM, the VGA window): outside Vigil's image and pool, inside Vigil's identity map.
fn is_device(gpa: u64, len: u64) -> bool {
    let reachable = REACHABLE_END.get().copied().unwrap_or(0);
    let Some(end) = gpa.checked_add(len) else {
        return false;
    };
    let clear = |(start, stop): (u64, u64)| end <= start || gpa >= stop;
    len != 0
        && end <= reachable
        && clear(crate::mem::image_range())
        && clear(crate::mem::pool_range())
        && !map().is_ram(gpa, end)
}

/// A device read on the guest's behalf: one access of exactly `buf.len()` bytes (1, 2, 4 or 8;
/// other lengths byte by byte), as the guest's own instruction would make it. False (nothing
/// read) for memory the guest does not reach as a device.
pub fn read_device(gpa: u64, buf: &mut [u8]) -> bool {
    if !is_device(gpa, buf.len() as u64) {
        return false;
    }
    // SAFETY: the range is identity-mapped in Vigil's page tables and is neither RAM nor
    // Vigil's: a device the guest itself may read; the access has the guest's width.
    unsafe {
        let p = gpa as *const u8;
        match buf.len() {
            1 => buf[0] = access_read::<1>(p) as u8,
            2 => buf.copy_from_slice(&(access_read::<2>(p) as u16).to_le_bytes()),
            4 => buf.copy_from_slice(&(access_read::<4>(p) as u32).to_le_bytes()),
            8 => buf.copy_from_slice(&access_read::<8>(p).to_le_bytes()),
            _ => {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = access_read::<1>(p.add(i)) as u8;
                }
            }
        }
    }
    true
}

/// A device write on the guest's behalf, like [`read_device`].
pub fn write_device(gpa: u64, bytes: &[u8]) -> bool {
    if !is_device(gpa, bytes.len() as u64) {
        return false;
    }
    let mut v = [0u8; 8];
    // SAFETY: as for `read_device`: the guest's own access to a device it may write.
    unsafe {
        let p = gpa as *mut u8;
        match bytes.len() {
            n @ (1 | 2 | 4 | 8) => {
                v[..n].copy_from_slice(bytes);
                let value = u64::from_le_bytes(v);
                match n {
                    1 => access_write::<1>(p, value),
                    2 => access_write::<2>(p, value),
                    4 => access_write::<4>(p, value),
                    _ => access_write::<8>(p, value),
                }
            }
            _ => {
                for (i, b) in bytes.iter().enumerate() {
                    access_write::<1>(p.add(i), *b as u64);
                }
            }
        }
    }
    true
}

/// One `mov` of `N` bytes from `p` (no splitting, no merging: a device register sees one access).
///
/// # Safety
/// `p` must be mapped and readable for `N` bytes.
unsafe fn access_read<const N: usize>(p: *const u8) -> u64 {
    let v: u64;
    unsafe {
        match N {
            1 => {
                core::arch::asm!("movzx {v:e}, byte ptr [{p}]", p = in(reg) p, v = out(reg) v, options(nostack, readonly))
            }
            2 => {
                core::arch::asm!("movzx {v:e}, word ptr [{p}]", p = in(reg) p, v = out(reg) v, options(nostack, readonly))
            }
            4 => {
                core::arch::asm!("mov {v:e}, dword ptr [{p}]", p = in(reg) p, v = out(reg) v, options(nostack, readonly))
            }
            _ => {
                core::arch::asm!("mov {v}, qword ptr [{p}]", p = in(reg) p, v = out(reg) v, options(nostack, readonly))
            }
        }
    }
    v
}

/// # Safety
/// `p` must be mapped and writable for `N` bytes.
unsafe fn access_write<const N: usize>(p: *mut u8, v: u64) {
    unsafe {
        match N {
            1 => {
                core::arch::asm!("mov byte ptr [{p}], {v:l}", p = in(reg) p, v = in(reg) v, options(nostack))
            }
            2 => {
                core::arch::asm!("mov word ptr [{p}], {v:x}", p = in(reg) p, v = in(reg) v, options(nostack))
            }
            4 => {
                core::arch::asm!("mov dword ptr [{p}], {v:e}", p = in(reg) p, v = in(reg) v, options(nostack))
            }
            _ => {
                core::arch::asm!("mov qword ptr [{p}], {v}", p = in(reg) p, v = in(reg) v, options(nostack))
            }
        }
    }
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
