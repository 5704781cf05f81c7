//! Vigil's IDT: every CPU exception is a bug in Vigil (guest exceptions never arrive here; they
//! are delivered inside the guest or reported as VM exits). The handler prints the vector, the
//! error code and the interrupted state, a backtrace, and the guest/VMCS state if a guest is
//! loaded, then stops the machine.

use super::gdt::{IST_FAULT, KERNEL_CS};
use core::arch::{asm, global_asm};

/// Register state pushed by the common stub, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// One 16-byte stub per vector, so the IDT entry for vector N is `vigil_exc_table + 16 * N`.
// Vectors without a CPU-pushed error code push a zero so the frame is uniform (SDM Vol. 3A 7.13
// lists the vectors that push one: 8, 10-14, 17, 21, 29, 30).
macro_rules! exc_stub {
    (err $v:literal) => {
        concat!(".balign 16\n push ", $v, "\n jmp vigil_exc_common\n")
    };
    (noerr $v:literal) => {
        concat!(
            ".balign 16\n push 0\n push ",
            $v,
            "\n jmp vigil_exc_common\n"
        )
    };
}

global_asm!(
    ".section .text",
    ".balign 16",
    ".global vigil_exc_table",
    "vigil_exc_table:",
    exc_stub!(noerr "0"),
    exc_stub!(noerr "1"),
    exc_stub!(noerr "2"),
    exc_stub!(noerr "3"),
    exc_stub!(noerr "4"),
    exc_stub!(noerr "5"),
    exc_stub!(noerr "6"),
    exc_stub!(noerr "7"),
    exc_stub!(err "8"),
    exc_stub!(noerr "9"),
    exc_stub!(err "10"),
    exc_stub!(err "11"),
    exc_stub!(err "12"),
    exc_stub!(err "13"),
    exc_stub!(err "14"),
    exc_stub!(noerr "15"),
    exc_stub!(noerr "16"),
    exc_stub!(err "17"),
    exc_stub!(noerr "18"),
    exc_stub!(noerr "19"),
    exc_stub!(noerr "20"),
    exc_stub!(err "21"),
    exc_stub!(noerr "22"),
    exc_stub!(noerr "23"),
    exc_stub!(noerr "24"),
    exc_stub!(noerr "25"),
    exc_stub!(noerr "26"),
    exc_stub!(noerr "27"),
    exc_stub!(noerr "28"),
    exc_stub!(err "29"),
    exc_stub!(err "30"),
    exc_stub!(noerr "31"),
    "vigil_exc_common:",
    "push rax",
    "push rbx",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push rbp",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rbx, rsp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {handler}",
    /* The handler returns only when it recovered (an instruction with a fix-up faulted). */
    "mov rsp, rbx",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rbp",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbx",
    "pop rax",
    "add rsp, 16",
    "iretq",
    handler = sym exception_entry,
);

extern "C" {
    static vigil_exc_table: u8;
}

#[repr(C, align(16))]
pub struct Idt([u128; 32]);

pub static mut IDT: Idt = Idt([0; 32]);

/// Fills the IDT and loads it on this CPU. All CPUs share one read-only IDT.
pub fn init() {
    // SAFETY: the IDT is written once on the boot CPU before any exception can be taken and is
    // only read afterwards (by the CPU through IDTR).
    unsafe {
        let table = core::ptr::addr_of!(vigil_exc_table) as u64;
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (vector, entry) in idt.0.iter_mut().enumerate() {
            let handler = table + 16 * vector as u64;
            // NMI, #DF and #MC switch to the fault stack (IST) so a broken stack cannot recurse.
            let ist = if matches!(vector, 2 | 8 | 18) {
                IST_FAULT as u128
            } else {
                0
            };
            *entry = gate(handler, ist);
        }
        load();
    }
}

/// A 64-bit interrupt gate to `handler`, present, DPL 0 (SDM Vol. 3A 7.14.1).
fn gate(handler: u64, ist: u128) -> u128 {
    (handler as u128 & 0xFFFF)
        | ((KERNEL_CS as u128) << 16)
        | (ist << 32)
        | (0x8E << 40)
        | (((handler as u128 >> 16) & 0xFFFF) << 48)
        | (((handler as u128) >> 32) << 64)
}

/// Points `vector` at `handler` and returns the entry it replaced (give it back with
/// [`restore_vector`]): the boot calibration times an exception's delivery with a handler of its
/// own.
///
/// # Safety
/// Boot CPU only, before any other CPU or the guest runs; `handler` must handle the exception.
pub unsafe fn swap_vector(vector: u8, handler: u64) -> u128 {
    // SAFETY: see the function contract; nothing else reads or writes the IDT meanwhile.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        core::mem::replace(&mut idt.0[vector as usize & 31], gate(handler, 0))
    }
}

/// Puts back an entry [`swap_vector`] replaced.
///
/// # Safety
/// As for [`swap_vector`].
pub unsafe fn restore_vector(vector: u8, entry: u128) {
    // SAFETY: as above.
    unsafe { (*core::ptr::addr_of_mut!(IDT)).0[vector as usize & 31] = entry };
}

pub fn load() {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let ptr = Pointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: core::ptr::addr_of!(IDT) as u64,
    };
    // SAFETY: the IDT is 'static and fully initialised.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags)) };
}

pub const EXCEPTION_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 FP error",
    "alignment check",
    "machine check",
    "SIMD FP error",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

extern "C" fn exception_entry(frame: &mut TrapFrame) {
    // An NMI in VMX root is the guest's: recorded for delivery, never fatal (intel/nmi.rs).
    if frame.vector == 2 {
        crate::intel::nmi::taken();
        return;
    }
    if let Some(fixup) = super::safe::fixup_for(frame.vector, frame.rip) {
        frame.rip = fixup;
        return;
    }
    // Bochs carries the single-step trap of a guest instruction that SVM intercepted over into
    // the host, where it arrives right after VMRUN (docs/platform.md): the guest's, not Vigil's
    // (the exit layer gives the guest its trap). Nothing else raises #DB there: the host's DR7
    // is clear after #VMEXIT and its RFLAGS.TF is clear.
    if frame.vector == 1 && frame.rip == crate::amd::switch::vmexit_rip() {
        return;
    }
    crate::fault::vigil_exception(frame)
}
