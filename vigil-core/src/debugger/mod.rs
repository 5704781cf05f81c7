//! The guest debugger: everything between the bytes on COM2 and the vCPU. The protocol logic is
//! written against the [`GuestCpu`] trait, which every [`crate::cpu::Cpu`] implements and the
//! host tests fake; its exit-loop side ([`exits`]) is written against the vCPU trait, so it runs
//! under any backend.
//!
//! - [`framing`] checks every byte gdb sends before the protocol sees it: garbage between
//!   packets is dropped, bad checksums and overlong packets get an answer without reaching the
//!   protocol engine (which treats both as fatal).
//! - [`session`] runs the `gdbstub` state machine over those packets, rebuilding it if it ever
//!   gives up, so nothing gdb (or line noise) sends can end the debugger or Vigil.
//! - [`target`] is the `gdbstub` target: registers, memory, breakpoints, watchpoints, stepping
//!   and `monitor` commands, in terms of [`GuestCpu`].
//! - [`state`] keeps the breakpoints and watchpoints and decides the EPT permissions of each
//!   page they live on (docs/debugging.md explains the design).
//! - [`insn`] tells a read-modify-write instruction from a plain store, for read watchpoints.
//! - [`arch`] describes the guest's registers to gdb, as x86-64 or as i386.
//! - [`console`] turns Vigil's log lines into `O` (console output) packets while gdb listens.
//! - [`threads`] shows the machine to gdb as one thread per vCPU: the vCPU that stopped
//!   directly, the others through what they published when they parked.
//! - [`exits`] is the exit loop's side: the debugger's own exits, stops (every vCPU stops
//!   together), single steps, and the link to gdb; `vcpu.rs` shows a vCPU to the protocol
//!   logic.

pub mod arch;
pub mod console;
pub mod exits;
pub mod framing;
pub mod insn;
pub mod monitor;
pub mod session;
pub mod state;
pub mod target;
pub mod threads;
mod vcpu;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use crate::nested::Perms;
use core::fmt;

/// The guest's registers as the debugger sees them (the general-purpose registers in gdb's
/// x86-64 order: RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP, R8-R15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuRegs {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    /// Selectors of CS, SS, DS, ES, FS, GS.
    pub seg: [u16; 6],
    pub fs_base: u64,
    pub gs_base: u64,
    /// CS's base: outside 64-bit mode the instruction at RIP is at CS.base + EIP.
    pub cs_base: u64,
}

/// Why a guest-virtual address could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    /// The guest's page tables do not map it.
    Unmapped,
    /// It maps to guest-physical memory that is not the guest's RAM.
    NotRam,
}

/// What the `monitor` commands ask the vCPU for (the answer is written as text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Info {
    /// CR0, CR2, CR3, CR4, EFER, DR7, the mode and the CPL.
    ControlRegs,
    /// One MSR as the guest would read it.
    Msr(u32),
    /// The backend's whole control block (every VMCS field).
    Vmcs,
    /// The exit-statistics table.
    Stats,
    /// GVA → GPA (the guest's page tables) → HPA (the nested tables), with each walk's details.
    Translate(u64),
    /// Make Vigil panic on purpose, to check its panic report (debugging the debugger).
    Panic,
}

/// Hardware debug-register slot use (SDM Vol. 3B 18.2.4: DR7 R/W and LEN fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwSlot {
    pub addr: u64,
    /// DR7 R/Wn: 0 = execute, 1 = write, 3 = read or write.
    pub rw: u8,
    /// DR7 LENn: 0 = 1 byte, 1 = 2, 3 = 4, 2 = 8.
    pub len: u8,
}

/// The vCPU under the debugger: every `Cpu` is one (`vcpu.rs`); the tests fake it.
pub trait GuestCpu {
    fn regs(&self) -> CpuRegs;
    fn set_regs(&mut self, regs: &CpuRegs);
    /// Whether the guest runs in 64-bit mode right now.
    fn long_mode(&self) -> bool;
    /// Guest-virtual to guest-physical through the guest's paging, as a read would translate.
    fn translate(&self, gva: u64) -> Result<u64, AccessError>;
    /// Reads guest RAM; false (nothing read) if any byte is not guest RAM.
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool;
    /// Writes guest RAM; false (nothing written) if any byte is not guest RAM.
    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool;
    /// Sets the nested-paging permissions of the 4-KiB guest-physical page at `page`.
    fn set_page_perms(&mut self, page: u64, perms: Perms) -> bool;
    /// Whether nested paging can map a page execute-only (VMX: IA32_VMX_EPT_VPID_CAP bit 0).
    fn exec_only(&self) -> bool;
    /// Arms (Some) or disarms (None) hardware slot `slot` (0-3).
    fn set_hw_slot(&mut self, slot: usize, use_: Option<HwSlot>);
    /// Writes what a `monitor` command asked for.
    fn info(&mut self, what: Info, out: &mut dyn fmt::Write) -> fmt::Result;
}

/// How the guest leaves a stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeKind {
    /// Every vCPU runs on.
    Continue,
    /// vCPU `n` runs exactly one instruction, then stops; the others stay stopped.
    Step(usize),
}

/// Why the guest stopped, as reported to gdb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// Attached, or waiting before the first instruction: SIGTRAP.
    Attach,
    /// Ctrl-C from gdb: SIGINT.
    Interrupt,
    SwBreak,
    HwBreak,
    Step,
    Watch {
        kind: gdbstub::target::ext::breakpoints::WatchKind,
        addr: u64,
    },
}
