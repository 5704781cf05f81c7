//! Intel VT-x architecture knowledge, independent of any hypervisor: `no_std` (with `alloc`),
//! tested on the host against an in-memory VMCS.
//!
//! # Layout
//! - [`vmcs`]: every VMCS field of SDM Vol. 3D Appendix B as [`vmcs::Field`] (encoding, name,
//!   width and kind), the [`vmcs::VmcsAccess`] trait with [`vmcs::RealVmcs`] (VMREAD/VMWRITE)
//!   and [`vmcs::FakeVmcs`] (a map, for tests), a grouped [`vmcs::dump`], and the
//!   VM-instruction error names.
//! - [`caps`]: the capability MSRs ([`caps::VmxCaps::from_msrs`]), the control words as bit
//!   sets, fitting requested controls to what the processor allows ([`caps::adjust`]) and
//!   saying in words what is lost ([`caps::describe_missing`], [`caps::VmxCaps::ept_limitations`]),
//!   and the CR0/CR4 fixed bits.
//! - [`exit`]: exit reasons, exit qualifications, interruption and IDT-vectoring information,
//!   and instruction information, each with a `Display` fit for an exit report.
//! - [`checks`]: the VM-entry checks of SDM Vol. 3C 27.2-27.4, each a [`checks::Rule`] with a
//!   stable id and SDM section; [`checks::check_vm_entry`] lists every violation and
//!   [`checks::agrees`] / [`checks::write_report`] compare them with what the processor
//!   reported.
//! - [`ept`]: EPT entries and pointer, [`ept::EptBuilder`] (largest pages that fit, splitting
//!   on partial changes, MTRR-typed mapping), a walker over any EPT hierarchy, INVEPT/INVVPID.
//! - [`mtrr`]: memory types from MTRR contents, for a single address or a whole range.
//! - [`guest_paging`]: the guest's paging registers as a VMCS holds them, for the guest
//!   page-table walker of `x86-arch`.
//! - [`regs`]: CR0/CR4/EFER/RFLAGS bit names (re-exported from `x86-arch`, where every backend
//!   finds them).
//!
//! Comments cite the Intel SDM by volume and section in its 2023-and-later numbering (VM entry
//! checks in Vol. 3C chapter 27, VM exits in chapter 28, EPT in chapter 29).
#![no_std]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod caps;
pub mod checks;
pub mod ept;
pub mod exit;
pub mod guest_paging;
pub mod mtrr;
pub mod vmcs;

pub use ept::PhysRead;
pub use x86_arch::regs;

#[cfg(test)]
mod testing;
