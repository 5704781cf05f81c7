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
    vector: u8,
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

/// VMCALL = 0F 01 C1 (SDM Vol. 2B / 3C, VMCALL).
pub const VMCALL: &[u8] = &[0x0F, 0x01, 0xC1];
/// RDMSR = 0F 32.
pub const RDMSR: &[u8] = &[0x0F, 0x32];
/// WRMSR = 0F 30.
pub const WRMSR: &[u8] = &[0x0F, 0x30];

/// Run `f`, which must execute `insn` (and nothing else that could raise `vector`). Returns what
/// `f` returned and the fault, if `insn` raised `vector`.
pub fn expect<R>(vector: u8, insn: &'static [u8], f: impl FnOnce() -> R) -> (R, Option<Caught>) {
    unsafe {
        let state = &mut *STATE.0.get();
        state.caught = None;
        state.armed = Some(Armed { vector, insn });
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
    if frame.vector != u64::from(armed.vector) {
        return false;
    }
    // Identity mapping: the RIP is also the physical address of the instruction.
    let bytes = unsafe { core::slice::from_raw_parts(frame.rip as *const u8, armed.insn.len()) };
    if bytes != armed.insn {
        return false;
    }
    state.armed = None;
    state.caught = Some(Caught {
        vector: armed.vector,
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
