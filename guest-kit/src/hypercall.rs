//! Vigil's hypercall ABI (docs/architecture.md, "Hypercall ABI"): VMCALL with
//! EAX = 0x5647_4C00 | function, arguments in EBX/ECX/EDX, status in EAX (0 ok, 1 unknown
//! function, 2 mismatch) and results in EBX/ECX/EDX.
//!
//! Bare, or under Vigil with hypercalls off, VMCALL raises #UD; that is caught (see
//! [`crate::fault`]) and reported as [`Error::NoHypervisor`].

use crate::fault::{self, Caught};
use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};

/// "VGL" in the upper three bytes of EAX.
pub const BASE: u32 = 0x5647_4C00;
/// Function 0: ping.
pub const PING: u32 = 0;
/// Function 1: the configured TSC offset.
pub const TSC_OFFSET: u32 = 1;
/// Function 2: confirm a TSC value the guest read.
pub const CONFIRM_TSC: u32 = 2;
/// What ping returns in EBX: "Vigi" in little-endian byte order.
pub const PING_SIGNATURE: u32 = 0x6967_6956;

/// Status 0.
pub const STATUS_OK: u32 = 0;
/// Status 1.
pub const STATUS_UNKNOWN_FUNCTION: u32 = 1;
/// Status 2.
pub const STATUS_MISMATCH: u32 = 2;

/// Registers in and out of a VMCALL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
}

/// Why a hypercall did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// VMCALL raised #UD: no hypervisor (or hypercalls disabled).
    NoHypervisor(Caught),
    /// The hypervisor answered with a nonzero status.
    Status(u32),
    /// Ping answered without Vigil's signature.
    NotVigil(u32),
}

impl core::fmt::Display for Error {
    /// One word, so it fits a `key=value` field.
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            Error::NoHypervisor(c) => write!(f, "no-hypervisor(#{}@{:#x})", c.vector, c.rip),
            Error::Status(s) => write!(f, "status-{}", s),
            Error::NotVigil(sig) => write!(f, "not-vigil-signature-{:#x}", sig),
        }
    }
}

/// Execute VMCALL with these registers. `Err` carries the #UD if it faulted. Any EAX may be
/// used, including values outside Vigil's range (that is how transparency is checked).
pub fn vmcall(regs: Regs) -> Result<Regs, Caught> {
    let (out, caught) = fault::expect(fault::UD, fault::VMCALL, || {
        let mut r = regs;
        unsafe {
            // RBX is reserved by LLVM: swap the argument in and the result out around VMCALL.
            asm!(
                "xchg {rbx}, rbx",
                "vmcall",
                "xchg {rbx}, rbx",
                rbx = inout(reg) r.rbx,
                inout("rax") r.rax,
                inout("rcx") r.rcx,
                inout("rdx") r.rdx,
                options(nostack)
            );
        }
        r
    });
    match caught {
        Some(c) => Err(c),
        None => Ok(out),
    }
}

/// Call Vigil function `function`; a nonzero status is an error.
pub fn call(function: u32, rbx: u64, rcx: u64, rdx: u64) -> Result<Regs, Error> {
    let regs = Regs {
        rax: u64::from(BASE | function),
        rbx,
        rcx,
        rdx,
    };
    let out = vmcall(regs).map_err(Error::NoHypervisor)?;
    match out.rax as u32 {
        STATUS_OK => Ok(out),
        status => Err(Error::Status(status)),
    }
}

/// Ping: Vigil's version if it answers with its signature.
pub fn ping() -> Result<u32, Error> {
    let out = call(PING, 0, 0, 0)?;
    if out.rbx as u32 != PING_SIGNATURE {
        return Err(Error::NotVigil(out.rbx as u32));
    }
    Ok(out.rcx as u32)
}

// 0 = not asked yet, 1 = present, 2 = absent.
static PRESENT: AtomicU8 = AtomicU8::new(0);

/// Whether Vigil answers ping (no #UD, right signature). Asked once, then remembered.
pub fn vigil_present() -> bool {
    match PRESENT.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let present = ping().is_ok();
            PRESENT.store(if present { 1 } else { 2 }, Ordering::Relaxed);
            present
        }
    }
}

/// Function 1: the TSC offset Vigil applies (0 = none configured), and whether Vigil
/// intercepts RDTSC/RDTSCP (EDX bit 0) rather than leaving the offset to the processor.
pub fn tsc_offset() -> Result<(u64, bool), Error> {
    let out = call(TSC_OFFSET, 0, 0, 0)?;
    Ok(((out.rcx << 32) | (out.rbx & 0xFFFF_FFFF), out.rdx & 1 != 0))
}

/// Function 2: does `tsc` equal what Vigil's RDTSC/RDTSCP emulation returned last?
/// `Ok(true)` for status 0, `Ok(false)` for status 2 (mismatch).
pub fn confirm_tsc(tsc: u64) -> Result<bool, Error> {
    match call(CONFIRM_TSC, tsc & 0xFFFF_FFFF, tsc >> 32, 0) {
        Ok(_) => Ok(true),
        Err(Error::Status(STATUS_MISMATCH)) => Ok(false),
        Err(e) => Err(e),
    }
}
