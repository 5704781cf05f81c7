//! Guest kit: small `no_std` multiboot1 guests that test Vigil.
//!
//! Every guest is an ELF64 image linked at physical 0x0010_0000 (`link.ld`) that GRUB's
//! `multiboot` command or Vigil's loader enters in 32-bit protected mode. [`boot`] switches to
//! long mode with the first 4 GiB identity-mapped; then the kit sets up COM1, the IDT, the PIC
//! and the PIT, parses the multiboot information and calls the binary's main function, declared
//! with [`entry!`].
//!
//! Each case must pass both bare and under Vigil; that is how Vigil's transparency is shown.
//! Cases that need Vigil skip themselves when [`hypercall::vigil_present`] is false.

#![no_std]

pub mod boot;
pub mod cpu;
pub mod fault;
pub mod harness;
pub mod hypercall;
pub mod interrupts;
pub mod lapic;
pub mod mp;
pub mod multiboot;
pub mod serial;
pub mod timer;

pub use harness::{Case, Outcome};
pub use multiboot::BootInfo;

use core::cell::UnsafeCell;

struct BootCell(UnsafeCell<Option<BootInfo>>);
// Written once on the boot path before anything else runs.
unsafe impl Sync for BootCell {}

static BOOT: BootCell = BootCell(UnsafeCell::new(None));

unsafe extern "Rust" {
    /// Defined by the binary through [`entry!`].
    fn guest_kit_main(boot: &'static BootInfo) -> !;
}

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Where this image lies in memory, [start, end) (link.ld).
pub fn image_range() -> (u64, u64) {
    (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    )
}

/// The multiboot information of this boot (set before the binary's main runs).
pub fn boot_info() -> Option<&'static BootInfo> {
    unsafe { (*BOOT.0.get()).as_ref() }
}

/// First Rust code: called by the 64-bit boot stub with the multiboot information address.
#[unsafe(no_mangle)]
extern "C" fn guest_kit_start(multiboot_info: u32) -> ! {
    serial::init();
    interrupts::init();
    timer::init();
    let boot = unsafe {
        let slot = &mut *BOOT.0.get();
        slot.insert(BootInfo::parse(multiboot_info))
    };
    unsafe { guest_kit_main(boot) }
}

/// Declare the guest's main function: `guest_kit::entry!(main);` with
/// `fn main(boot: &'static BootInfo) -> !`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        fn guest_kit_main(boot: &'static $crate::BootInfo) -> ! {
            let main: fn(&'static $crate::BootInfo) -> ! = $main;
            main(boot)
        }
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(l) => harness::fatal(format_args!(
            "panic at={}:{} message=\"{}\"",
            l.file(),
            l.line(),
            info.message()
        )),
        None => harness::fatal(format_args!("panic message=\"{}\"", info.message())),
    }
}
