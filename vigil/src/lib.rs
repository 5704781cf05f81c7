//! The parts of Vigil that are plain logic — the command line, the memory map and Vigil's
//! placement, guest loaders and exit statistics — kept apart from the bare-metal binary so `cargo test -p vigil --lib` runs
//! them on the host.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod config;
pub mod debugger;
pub mod loader;
pub mod memmap;
pub mod placement;
pub mod stats;
pub mod vtime;
