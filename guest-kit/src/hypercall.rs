//! Vigil's hypercall ABI (docs/architecture.md, "Hypercall ABI"): VMCALL (VMMCALL on an AMD
//! processor) with EAX = 0x5647_4C00 | function, arguments in EBX/ECX/EDX, status in EAX (0 ok, 1 unknown
//! function, 2 mismatch) and results in EBX/ECX/EDX. Functions 3-6 return 64-bit values in the
//! full registers (the kit always runs in 64-bit mode).
//!
//! Bare, or under Vigil with hypercalls off, VMCALL raises #UD (VMMCALL too: without SVM
//! enabled, APM Vol. 3 VMMCALL); that is caught (see [`crate::fault`]) and reported as
//! [`Error::NoHypervisor`].

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
/// Function 3: one of Vigil's memory ranges.
pub const VIGIL_RANGE: u32 = 3;
/// Function 4: checksum of Vigil's protected memory.
pub const VIGIL_CHECKSUM: u32 = 4;
/// Function 5: hold the guest for a number of host TSC ticks.
pub const HOLD: u32 = 5;
/// Function 6: the host TSC at the VMCALL's VM exit.
pub const HOST_TSC: u32 = 6;
/// The longest hold Vigil grants; it clamps longer requests to this.
pub const MAX_HOLD: u32 = 1 << 30;
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

// 0 = not asked yet, 1 = Intel's VMCALL, 2 = AMD's VMMCALL.
static FLAVOUR: AtomicU8 = AtomicU8::new(0);

/// Whether this processor's hypercall instruction is VMMCALL: an AMD (or Hygon) processor, by
/// CPUID's vendor string. Asked once.
pub fn uses_vmmcall() -> bool {
    match FLAVOUR.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let v = core::arch::x86_64::__cpuid(0);
            let amd = (v.ebx, v.edx, v.ecx) == (0x6874_7541, 0x6974_6E65, 0x444D_4163)
                || (v.ebx, v.edx, v.ecx) == (0x6F67_7948, 0x6E65_476E, 0x656E_6975);
            FLAVOUR.store(if amd { 2 } else { 1 }, Ordering::Relaxed);
            amd
        }
    }
}

/// Execute the hypercall instruction (VMCALL, or VMMCALL on AMD) with these registers. `Err`
/// carries the #UD if it faulted. Any EAX may be used, including values outside Vigil's range
/// (that is how transparency is checked).
pub fn vmcall(regs: Regs) -> Result<Regs, Caught> {
    let vmmcall = uses_vmmcall();
    let insn = if vmmcall {
        fault::VMMCALL
    } else {
        fault::VMCALL
    };
    let (out, caught) = fault::expect(fault::UD, insn, || {
        let mut r = regs;
        unsafe {
            // RBX is reserved by LLVM: swap the argument in and the result out around the call.
            if vmmcall {
                asm!(
                    "xchg {rbx}, rbx",
                    "vmmcall",
                    "xchg {rbx}, rbx",
                    rbx = inout(reg) r.rbx,
                    inout("rax") r.rax,
                    inout("rcx") r.rcx,
                    inout("rdx") r.rdx,
                    options(nostack)
                );
            } else {
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

/// How Vigil presents time to the guest: tsc-offset's EDX bits 15:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TscMode {
    /// 0: the guest sees the host TSC.
    Native,
    /// 1: the host TSC plus a fixed offset.
    Offset,
    /// 2: Vigil subtracts the time the guest spends in every VM exit.
    Hide,
    /// 3: the guest TSC stands still while Vigil holds the guest.
    Frozen,
    /// 4: TSC scaling: the guest TSC runs at a multiple of the host's.
    Scale,
    /// A value this kit does not know.
    Unknown(u8),
}

impl TscMode {
    /// Decode EDX bits 15:8 of function 1.
    pub fn from_code(code: u8) -> TscMode {
        match code {
            0 => TscMode::Native,
            1 => TscMode::Offset,
            2 => TscMode::Hide,
            3 => TscMode::Frozen,
            4 => TscMode::Scale,
            other => TscMode::Unknown(other),
        }
    }

    /// The code as Vigil reports it.
    pub fn code(self) -> u8 {
        match self {
            TscMode::Native => 0,
            TscMode::Offset => 1,
            TscMode::Hide => 2,
            TscMode::Frozen => 3,
            TscMode::Scale => 4,
            TscMode::Unknown(code) => code,
        }
    }
}

impl core::fmt::Display for TscMode {
    /// One word, so it fits a `key=value` field.
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            TscMode::Native => f.write_str("native"),
            TscMode::Offset => f.write_str("offset"),
            TscMode::Hide => f.write_str("hide"),
            TscMode::Frozen => f.write_str("frozen"),
            TscMode::Scale => f.write_str("scale"),
            TscMode::Unknown(code) => write!(f, "unknown-{}", code),
        }
    }
}

/// What function 1 reports about the guest's TSC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscInfo {
    /// The TSC offset Vigil applies (0 = none configured).
    pub offset: u64,
    /// Whether Vigil intercepts RDTSC/RDTSCP (EDX bit 0) rather than leaving the offset to the
    /// processor.
    pub intercepted: bool,
    /// The time mode (EDX bits 15:8). A Vigil that predates the mode bits reports 0.
    pub mode: TscMode,
}

/// Function 1: offset, interception and time mode of the guest's TSC.
pub fn tsc_info() -> Result<TscInfo, Error> {
    let out = call(TSC_OFFSET, 0, 0, 0)?;
    Ok(TscInfo {
        offset: (out.rcx << 32) | (out.rbx & 0xFFFF_FFFF),
        intercepted: out.rdx & 1 != 0,
        mode: TscMode::from_code((out.rdx >> 8) as u8),
    })
}

/// Function 1, as `(offset, intercepted)`: see [`tsc_info`].
pub fn tsc_offset() -> Result<(u64, bool), Error> {
    tsc_info().map(|info| (info.offset, info.intercepted))
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

/// The ranges of Vigil's own memory that function 3 reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VigilRange {
    /// EBX = 0: Vigil's image (code and data).
    Image,
    /// EBX = 1: the memory pool (heap, VMCS, bitmaps, EPT tables).
    Pool,
}

impl VigilRange {
    /// Both ranges, in index order.
    pub const ALL: [VigilRange; 2] = [VigilRange::Image, VigilRange::Pool];

    /// The index function 3 takes in EBX.
    pub fn index(self) -> u32 {
        match self {
            VigilRange::Image => 0,
            VigilRange::Pool => 1,
        }
    }

    /// One word, for output lines.
    pub fn name(self) -> &'static str {
        match self {
            VigilRange::Image => "image",
            VigilRange::Pool => "pool",
        }
    }
}

/// Function 3: `(start, end)` of one of Vigil's memory ranges, end exclusive.
pub fn vigil_range(range: VigilRange) -> Result<(u64, u64), Error> {
    let out = call(VIGIL_RANGE, u64::from(range.index()), 0, 0)?;
    Ok((out.rbx, out.rcx))
}

/// Function 4: the checksum of Vigil's code, read-only data, EPT tables and MSR/I/O bitmaps.
/// Equal values before and after an attack show the guest changed none of them.
pub fn vigil_checksum() -> Result<u64, Error> {
    call(VIGIL_CHECKSUM, 0, 0, 0).map(|out| out.rbx)
}

/// Function 5: Vigil holds the guest for `ticks` host TSC ticks before resuming it, as a
/// debugger stop would. Vigil clamps `ticks` to [`MAX_HOLD`].
pub fn hold(ticks: u32) -> Result<(), Error> {
    call(HOLD, u64::from(ticks), 0, 0).map(|_| ())
}

/// Function 6: the host TSC Vigil read at this VMCALL's VM exit.
pub fn host_tsc() -> Result<u64, Error> {
    call(HOST_TSC, 0, 0, 0).map(|out| out.rbx)
}
