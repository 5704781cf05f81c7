//! Intel VT-x architecture knowledge, independent of any hypervisor. `no_std`; tested on the host.
#![no_std]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod caps;
pub mod checks;
pub mod ept;
pub mod exit;
pub mod mtrr;
pub mod paging;
pub mod regs;
pub mod vmcs;

#[cfg(test)]
mod testing;
