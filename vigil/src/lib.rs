//! The parts of the hypervisor binary that are plain logic run at boot — the memory map, Vigil's
//! placement, the guest loaders and the FADT's facts — kept apart from the bare-metal code so `cargo test -p vigil --lib` runs them
//! on the host. The exit layer's logic lives in `vigil-core`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod fadt;
pub mod loader;
pub mod madt;
pub mod mcfg;
pub mod memmap;
pub mod placement;
