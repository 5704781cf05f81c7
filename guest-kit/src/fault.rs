//! Expected exceptions: a case can run one instruction that may fault and find out whether it
//! did, the way the kit detects that it runs bare (VMCALL outside VMX operation raises #UD, SDM
//! Vol. 3C, "VMX Instruction Reference", VMCALL: "IF not in VMX operation THEN #UD").
//!
//! The case names the vector and the exact instruction bytes. The exception handler recovers
//! only if the fault has that vector *and* the bytes at the faulting RIP are those bytes; then it
//! records the fault and resumes after the instruction. Faults are reported at the faulting
//! instruction (SDM Vol. 3A, "Exception Classification"), so skipping its length is exact.
//! Anything else stays fatal.

use crate::interrupts::Frame;
use core::cell::UnsafeCell;
use core::sync::atomic::{compiler_fence, Ordering};

/// A fault that was expected and recovered from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caught {
    pub vector: u8,
    pub rip: u64,
    pub error: u64,
}

#[derive(Clone, Copy)]
struct Armed {
    /// Bit n set: vector n is expected.
    vectors: u32,
    insn: &'static [u8],
}

struct State {
    armed: Option<Armed>,
    caught: Option<Caught>,
}

struct Cell(UnsafeCell<State>);
// One CPU; the only other accessor is the exception handler, which runs synchronously at the
// armed instruction.
unsafe impl Sync for Cell {}

static STATE: Cell = Cell(UnsafeCell::new(State {
    armed: None,
    caught: None,
}));

/// #UD.
pub const UD: u8 = 6;
/// #GP.
pub const GP: u8 = 13;
/// #PF.
pub const PF: u8 = 14;

/// VMCALL = 0F 01 C1 (SDM Vol. 2B / 3C, VMCALL).
pub const VMCALL: &[u8] = &[0x0F, 0x01, 0xC1];
/// VMMCALL = 0F 01 D9 (APM Vol. 3, VMMCALL): the hypercall instruction of AMD processors.
pub const VMMCALL: &[u8] = &[0x0F, 0x01, 0xD9];
/// RDMSR = 0F 32.
pub const RDMSR: &[u8] = &[0x0F, 0x32];
/// WRMSR = 0F 30.
pub const WRMSR: &[u8] = &[0x0F, 0x30];
/// `mov rax, qword ptr [rdi]` = REX.W 8B /r with ModRM 0x07 (SDM Vol. 2B, MOV).
pub const LOAD_RAX_FROM_RDI: &[u8] = &[0x48, 0x8B, 0x07];
/// `lock xadd qword ptr [rdi], rax` = F0 REX.W 0F C1 /r with ModRM 0x07 (SDM Vol. 2D, XADD).
pub const LOCK_XADD_RDI_RAX: &[u8] = &[0xF0, 0x48, 0x0F, 0xC1, 0x07];

/// Run `f`, which must execute `insn` (and nothing else that could raise `vector`). Returns what
/// `f` returned and the fault, if `insn` raised `vector`. `vector` is an exception (0-31).
pub fn expect<R>(vector: u8, insn: &'static [u8], f: impl FnOnce() -> R) -> (R, Option<Caught>) {
    expect_any(1 << vector, insn, f)
}

/// Like [`expect`], for an instruction that may raise any vector in the mask `vectors` (bit n =
/// vector n): a case that expects one vector can then report a wrong one as a failure with its
/// details instead of dying from it.
///
/// Each call arms for exactly one fault and disarms on the way out, and the handler resumes on
/// the interrupted stack with IRETQ, so nothing accumulates: a case may take thousands of faults
/// in a row, one call each.
pub fn expect_any<R>(
    vectors: u32,
    insn: &'static [u8],
    f: impl FnOnce() -> R,
) -> (R, Option<Caught>) {
    unsafe {
        let state = &mut *STATE.0.get();
        state.caught = None;
        state.armed = Some(Armed { vectors, insn });
    }
    // The handler reads and writes STATE behind the compiler's back.
    compiler_fence(Ordering::SeqCst);
    let result = f();
    compiler_fence(Ordering::SeqCst);
    let caught = unsafe {
        let state = &mut *STATE.0.get();
        state.armed = None;
        state.caught.take()
    };
    (result, caught)
}

/// Called by the exception handler: resume after the armed instruction if this is its fault.
pub(crate) fn recover(frame: &mut Frame) -> bool {
    let state = unsafe { &mut *STATE.0.get() };
    let Some(armed) = state.armed else {
        return false;
    };
    if frame.vector >= 32 || armed.vectors & (1 << frame.vector) == 0 {
        return false;
    }
    // Identity mapping: the RIP is also the physical address of the instruction.
    let bytes = unsafe { core::slice::from_raw_parts(frame.rip as *const u8, armed.insn.len()) };
    if bytes != armed.insn {
        return false;
    }
    state.armed = None;
    state.caught = Some(Caught {
        vector: frame.vector as u8,
        rip: frame.rip,
        error: frame.error,
    });
    frame.rip += armed.insn.len() as u64;
    true
}

/// RDMSR that reports #GP (an MSR the processor, or the hypervisor, does not provide) instead of
/// dying from it.
pub fn try_rdmsr(msr: u32) -> Result<u64, Caught> {
    let ((lo, hi), caught) = expect(GP, RDMSR, || {
        let (lo, hi): (u32, u32);
        unsafe {
            core::arch::asm!(
                "rdmsr",
                in("ecx") msr,
                // Preset so a skipped RDMSR leaves defined values.
                inout("eax") 0u32 => lo,
                inout("edx") 0u32 => hi,
                options(nostack, preserves_flags)
            )
        };
        (lo, hi)
    });
    match caught {
        Some(c) => Err(c),
        None => Ok((u64::from(hi) << 32) | u64::from(lo)),
    }
}

/// WRMSR that reports #GP instead of dying from it.
///
/// # Safety
/// If the write succeeds it changes the MSR.
pub unsafe fn try_wrmsr(msr: u32, value: u64) -> Result<(), Caught> {
    let ((), caught) = expect(GP, WRMSR, || unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags)
        )
    });
    match caught {
        Some(c) => Err(c),
        None => Ok(()),
    }
}

/// Faults a memory probe reports instead of dying from: #GP (what Vigil injects for its own
/// memory, docs/architecture.md "Memory"; also a non-canonical address, SDM Vol. 3A
/// "Interrupt 13") and #PF (an address the page tables do not map).
const PROBE_VECTORS: u32 = (1 << GP) | (1 << PF);

/// Read the u64 at physical (= linear, identity-mapped) `address`, reporting #GP or #PF instead
/// of dying from it. Assembly rather than a pointer read: the address may be 0 or otherwise
/// invalid for Rust, and the faulting instruction must be exactly [`LOAD_RAX_FROM_RDI`].
pub fn try_read_u64(address: u64) -> Result<u64, Caught> {
    let (value, caught) = expect_any(PROBE_VECTORS, LOAD_RAX_FROM_RDI, || {
        let value: u64;
        unsafe {
            core::arch::asm!(
                "mov rax, qword ptr [rdi]",
                in("rdi") address,
                // Preset so a skipped load leaves a defined value.
                inout("rax") 0u64 => value,
                options(nostack, preserves_flags, readonly)
            )
        };
        value
    });
    match caught {
        Some(c) => Err(c),
        None => Ok(value),
    }
}

/// Write access to the u64 at `address` that leaves memory as it was: `lock xadd` of 0. A
/// locked read-modify-write needs write permission like any store — the processor checks the
/// destination for writing before it changes anything, in the paging structures (SDM Vol. 3A,
/// "Access Rights") and in the EPT (SDM Vol. 3C, "EPT Violations": a data write to a page
/// without write permission) — so it faults exactly where a `mov` store would. If it does not
/// fault, adding 0 changed nothing: a probe of memory that is not ours cannot corrupt it, even
/// when isolation is broken. Returns the value the memory held.
pub fn try_write_probe_u64(address: u64) -> Result<u64, Caught> {
    let (value, caught) = expect_any(PROBE_VECTORS, LOCK_XADD_RDI_RAX, || {
        let value: u64;
        unsafe {
            core::arch::asm!(
                "lock xadd qword ptr [rdi], rax",
                in("rdi") address,
                // Adds 0; if the XADD completes, RAX receives the old value.
                inout("rax") 0u64 => value,
                options(nostack)
            )
        };
        value
    });
    match caught {
        Some(c) => Err(c),
        None => Ok(value),
    }
}
