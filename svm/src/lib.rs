//! AMD-V (SVM) architecture knowledge, independent of any hypervisor: `no_std` (with `alloc`),
//! tested on the host against an in-memory VMCB.
//!
//! # Layout
//! - [`vmcb`]: every field of the VMCB's control area and state save area (APM Vol. 2
//!   Appendix B) as [`vmcb::Field`] (offset, width, name), the [`vmcb::VmcbAccess`] trait with
//!   [`vmcb::Vmcb`] (a page in memory, the processor's own format) and [`vmcb::VmcbPtr`] (the
//!   live VMCB, read and written volatile), the segment attribute format, and a grouped dump.
//! - [`intercept`]: the intercept vectors (CR/DR reads and writes, exceptions, the three
//!   instruction vectors), TLB control and the virtual-interrupt control bits.
//! - [`caps`]: CPUID Fn8000_000A (revision, ASIDs, the optional features) with a sentence for
//!   each feature a processor lacks and what a hypervisor does instead.
//! - [`exit`]: exit codes (APM Vol. 2 Appendix C) with names, EXITINFO1/EXITINFO2 of the
//!   intercepts that have them (IOIO, CR/DR, MSR, exceptions, nested page faults, task
//!   switches), and EVENTINJ / EXITINTINFO to and from `x86_arch::event::Event`.
//! - [`npt`]: nested page tables in the ordinary long-mode page-table format: a builder (largest
//!   pages that fit, splitting on partial changes), permissions, and a walker (the guest
//!   page-table walker of `x86-arch`, because the format is the same).
//! - [`checks`]: the consistency checks VMRUN makes (APM Vol. 2 15.5.1, 15.20, 15.25) and the
//!   VMRUN instruction's own, each a [`checks::Rule`] with a stable id and APM section;
//!   [`checks::check_vmrun`] lists every violation and [`checks::agrees`] compares them with
//!   what the processor reported.
//! - [`decode`]: what an intercept without decode assists or NRIP save does not say — the
//!   instruction's length and operands — decoded from the guest's instruction bytes.
//!
//! Comments cite the AMD64 Architecture Programmer's Manual Volume 2 (System Programming),
//! chapter 15 "Secure Virtual Machine", by section.
#![no_std]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod caps;
pub mod checks;
pub mod decode;
pub mod exit;
pub mod intercept;
pub mod npt;
pub mod vmcb;

pub use x86_arch::regs;
