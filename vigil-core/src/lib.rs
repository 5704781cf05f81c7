//! Vigil's vendor-neutral layer: everything between a decoded VM exit and the guest-visible
//! decision, written against traits so that it runs on the host against fakes and under either
//! virtualization backend (VMX today, SVM next) unchanged. No VMCS, no VMCB: `cargo tree -p
//! vigil-core` shows no backend crate.
//!
//! # Layout
//! - [`vcpu`]: the seam — the [`vcpu::Vcpu`] trait a backend implements (registers, control
//!   registers and their guest view, events, debug registers, switched MSRs, activity, TLB,
//!   guest memory, nested-page permissions) and [`vcpu::Host`], what the processor does for the
//!   guest.
//! - [`exit`]: the decoded exit ([`exit::Exit`]), one handler per exit reason, the dispatch,
//!   and the completion every exit shares (instruction retirement with its single-step trap,
//!   event delivery, re-queueing the interrupted event).
//! - [`owners`]: the one table of the ports and MSRs Vigil owns or traps, which fills the
//!   backend's bitmaps and routes the handlers.
//! - [`platform`]: what Vigil owns of the PC beyond EPT — PCI configuration, DMA, A20, SMM,
//!   resets and sleep, the APIC base, the MTRRs.
//! - [`cpu`]: one vCPU's neutral state ([`cpu::Cpu`]) and what all vCPUs share ([`cpu::Vm`]).
//! - [`run`]: the exit loop.
//! - [`smp`]: several vCPUs — the start-up protocol (INIT, start-up IPIs), the ICR and its
//!   destinations, and where the vCPUs meet (holds, the end of the run, nested-table changes).
//! - [`time`]: virtual time — the guest's TSC, its MSRs, what the world switch hides.
//! - [`debugger`]: the GDB stub — protocol, breakpoints, watchpoints, and its exits.
//! - [`config`], [`stats`], [`nested`]: the command line, exit statistics, nested-paging
//!   permissions.
//! - `testing` (tests only): a fake vCPU and host, and the handler tests.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod config;
pub mod cpu;
pub mod debugger;
pub mod exit;
pub mod nested;
pub mod owners;
pub mod platform;
pub mod run;
pub mod smp;
pub mod stats;
pub mod time;
pub mod vcpu;

#[cfg(test)]
mod testing;
