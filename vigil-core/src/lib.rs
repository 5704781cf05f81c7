//! Vigil's vendor-neutral layer: everything between a decoded VM exit and the guest-visible
//! decision, written against traits so that it runs on the host against fakes and under either
//! virtualization backend (VMX today, SVM next) unchanged. No VMCS, no VMCB: `cargo tree -p
//! vigil-core` shows no backend crate.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod config;
pub mod debugger;
pub mod nested;
pub mod stats;
pub mod time;
