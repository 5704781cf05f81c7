//! x86 architecture knowledge that is neither Intel VT-x nor AMD-V: `no_std`, tested on the host.
//! Both virtualization backends and the vendor-neutral exit layer build on it, so each fact
//! exists once.
//!
//! # Layout
//! - [`regs`]: CR0/CR4/EFER/RFLAGS/DR6/DR7 bit names.
//! - [`cpuid`]: the CPUID feature bits a hypervisor decides about (gated instructions, features
//!   a guest must not see), and hiding them.
//! - [`event`]: events as the processor delivers them ([`event::Event`]: vector, kind, error
//!   code), the exception names and which exceptions push an error code, and the double-fault
//!   rules ([`event::nest`]) for an exception that arises while another event is delivered.
//! - [`paging`]: guest-virtual to guest-physical walks under every paging mode, with the #PF a
//!   processor would raise, reading guest memory through [`PhysRead`].
//!
//! Comments cite the Intel SDM by volume and section (2023-and-later numbering) and the AMD APM.
#![no_std]
#[cfg(test)]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod cpuid;
pub mod event;
pub mod paging;
pub mod regs;

pub use paging::PhysRead;

/// Bits 63:width-1 all equal (SDM Vol. 3A 3.3.7.1).
pub fn is_canonical(addr: u64, width: u8) -> bool {
    let shift = 64 - width as u32;
    (((addr << shift) as i64) >> shift) as u64 == addr
}

#[cfg(test)]
mod tests {
    use super::is_canonical;

    #[test]
    fn canonical_addresses() {
        assert!(is_canonical(0x0000_7fff_ffff_ffff, 48));
        assert!(is_canonical(0xffff_8000_0000_0000, 48));
        assert!(!is_canonical(0x0000_8000_0000_0000, 48));
        assert!(is_canonical(0x0000_8000_0000_0000, 57));
        assert!(!is_canonical(1 << 57, 57));
    }
}
