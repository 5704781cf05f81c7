//! IDT, interrupt entry stubs and dispatch.
//!
//! Vectors 0–31 are exceptions, 32–47 the remapped 8259 IRQs (see [`crate::timer`]). Every stub
//! pushes a uniform [`Frame`]; exceptions that push no error code get a zero in its place (SDM
//! Vol. 3A, "Error Code" and the "Protected-Mode Exceptions and Interrupts" table list which vectors push one).
//!
//! An exception is fatal unless a case armed an expectation for it with
//! [`crate::fault::expect`]: then the handler checks that the faulting instruction is the expected
//! one, records the fault and resumes after that instruction.

use crate::boot::CODE_SELECTOR;
use crate::{fault, harness, timer};
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;

/// First vector of the remapped master PIC.
pub const IRQ_BASE: u8 = 32;
/// Number of vectors with a stub: 32 exceptions + 16 IRQs.
const STUBS: usize = 48;

/// Register state saved by the entry stubs, lowest address first. Handlers may change it; the
/// common stub restores it and returns with IRETQ.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    // Pushed by the processor (SDM Vol. 3A, "64-Bit Mode Stack Frame").
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

macro_rules! stub_no_error {
    ($n:literal) => {
        concat!(
            "guest_kit_isr_",
            stringify!($n),
            ":\n",
            "    push 0\n",
            "    push ",
            stringify!($n),
            "\n",
            "    jmp guest_kit_isr_common\n"
        )
    };
}

macro_rules! stub_error {
    ($n:literal) => {
        concat!(
            "guest_kit_isr_",
            stringify!($n),
            ":\n",
            "    push ",
            stringify!($n),
            "\n",
            "    jmp guest_kit_isr_common\n"
        )
    };
}

// Vectors 8, 10–14, 17, 21, 29 and 30 push an error code (SDM Vol. 3A, "Protected-Mode Exceptions and
// Interrupts"; 21 = #CP,
// 29 = #VC, 30 = #SX).
global_asm!(
    ".section .text.guest_kit_isr, \"ax\"",
    stub_no_error!(0),
    stub_no_error!(1),
    stub_no_error!(2),
    stub_no_error!(3),
    stub_no_error!(4),
    stub_no_error!(5),
    stub_no_error!(6),
    stub_no_error!(7),
    stub_error!(8),
    stub_no_error!(9),
    stub_error!(10),
    stub_error!(11),
    stub_error!(12),
    stub_error!(13),
    stub_error!(14),
    stub_no_error!(15),
    stub_no_error!(16),
    stub_error!(17),
    stub_no_error!(18),
    stub_no_error!(19),
    stub_no_error!(20),
    stub_error!(21),
    stub_no_error!(22),
    stub_no_error!(23),
    stub_no_error!(24),
    stub_no_error!(25),
    stub_no_error!(26),
    stub_no_error!(27),
    stub_no_error!(28),
    stub_error!(29),
    stub_error!(30),
    stub_no_error!(31),
    stub_no_error!(32),
    stub_no_error!(33),
    stub_no_error!(34),
    stub_no_error!(35),
    stub_no_error!(36),
    stub_no_error!(37),
    stub_no_error!(38),
    stub_no_error!(39),
    stub_no_error!(40),
    stub_no_error!(41),
    stub_no_error!(42),
    stub_no_error!(43),
    stub_no_error!(44),
    stub_no_error!(45),
    stub_no_error!(46),
    stub_no_error!(47),
    r#"
guest_kit_isr_common:
    push rax
    push rcx
    push rdx
    push rbx
    push rbp
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    # 22 quadwords are on the stack and the processor aligned RSP to 16 before pushing its frame
    # (SDM Vol. 3A, "64-Bit Mode Stack Frame"), so RSP is 16-byte aligned here, as the call ABI wants.
    mov rdi, rsp
    cld
    call guest_kit_interrupt
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rbp
    pop rbx
    pop rdx
    pop rcx
    pop rax
    add rsp, 16
    iretq

    .section .rodata.guest_kit_isr, "a"
    .p2align 3
guest_kit_isr_table:
"#,
    ".quad guest_kit_isr_0, guest_kit_isr_1, guest_kit_isr_2, guest_kit_isr_3\n",
    ".quad guest_kit_isr_4, guest_kit_isr_5, guest_kit_isr_6, guest_kit_isr_7\n",
    ".quad guest_kit_isr_8, guest_kit_isr_9, guest_kit_isr_10, guest_kit_isr_11\n",
    ".quad guest_kit_isr_12, guest_kit_isr_13, guest_kit_isr_14, guest_kit_isr_15\n",
    ".quad guest_kit_isr_16, guest_kit_isr_17, guest_kit_isr_18, guest_kit_isr_19\n",
    ".quad guest_kit_isr_20, guest_kit_isr_21, guest_kit_isr_22, guest_kit_isr_23\n",
    ".quad guest_kit_isr_24, guest_kit_isr_25, guest_kit_isr_26, guest_kit_isr_27\n",
    ".quad guest_kit_isr_28, guest_kit_isr_29, guest_kit_isr_30, guest_kit_isr_31\n",
    ".quad guest_kit_isr_32, guest_kit_isr_33, guest_kit_isr_34, guest_kit_isr_35\n",
    ".quad guest_kit_isr_36, guest_kit_isr_37, guest_kit_isr_38, guest_kit_isr_39\n",
    ".quad guest_kit_isr_40, guest_kit_isr_41, guest_kit_isr_42, guest_kit_isr_43\n",
    ".quad guest_kit_isr_44, guest_kit_isr_45, guest_kit_isr_46, guest_kit_isr_47\n",
    ".text\n",
);

unsafe extern "C" {
    static guest_kit_isr_table: [u64; STUBS];
}

/// 64-bit interrupt gate descriptor (SDM Vol. 3A, "64-Bit Mode IDT").
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// Present, DPL 0, type 0xE = 64-bit interrupt gate: IF is cleared on entry, so handlers
    /// never nest.
    fn interrupt(handler: u64) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: CODE_SELECTOR,
            ist: 0,
            type_attr: 0x8E,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);
// One CPU; written once in `init` before interrupts are enabled.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate::MISSING; 256]));

/// Operand of LIDT: limit then base, packed (SDM Vol. 3A, "Interrupt Descriptor Table (IDT)").
#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// Fill the IDT with the stubs and load it.
pub fn init() {
    unsafe {
        let idt = &mut *IDT.0.get();
        let table = &*core::ptr::addr_of!(guest_kit_isr_table);
        for (gate, &handler) in idt.iter_mut().zip(table.iter()) {
            *gate = Gate::interrupt(handler);
        }
        load(
            IDT.0.get() as u64,
            (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
        );
    }
}

/// Points `vector` at `handler`, an assembly routine that ends in IRETQ (for vectors the common
/// stubs do not cover).
pub fn set_handler(vector: u8, handler: u64) {
    // SAFETY: the kit runs on one CPU with interrupts off while it changes a gate.
    unsafe { (*IDT.0.get())[vector as usize] = Gate::interrupt(handler) };
}

/// The handler `vector` points at now (to put it back after [`set_handler`]).
pub fn handler(vector: u8) -> u64 {
    // SAFETY: the kit runs on one CPU; gates change only with interrupts off.
    let g = unsafe { (*IDT.0.get())[vector as usize] };
    g.offset_low as u64 | (g.offset_mid as u64) << 16 | (g.offset_high as u64) << 32
}

/// LIDT with an arbitrary base and limit. A zero limit makes every vector a #GP — and the #GP
/// itself, then the #DF — so the next exception shuts the processor down (SDM Vol. 3A,
/// "Interrupt 8 — Double Fault Exception (#DF)": a fault while delivering #DF is a triple fault).
///
/// # Safety
/// Every interrupt after this goes through the new table.
pub unsafe fn load(base: u64, limit: u16) {
    let pointer = Pointer { limit, base };
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) };
}

/// Short mnemonic for an exception vector (SDM Vol. 3A, "Protected-Mode Exceptions and Interrupts").
pub fn mnemonic(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "DE", "DB", "NMI", "BP", "OF", "BR", "UD", "NM", "DF", "CSO", "TS", "NP", "SS", "GP", "PF",
        "15", "MF", "AC", "MC", "XM", "VE", "CP", "22", "23", "24", "25", "26", "27", "HV", "VC",
        "SX", "31",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("IRQ")
}

#[unsafe(no_mangle)]
extern "C" fn guest_kit_interrupt(frame: &mut Frame) {
    let vector = frame.vector;
    if vector >= u64::from(IRQ_BASE) {
        timer::irq((vector - u64::from(IRQ_BASE)) as u8);
        return;
    }
    if fault::recover(frame) {
        return;
    }
    let cr2: u64;
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    harness::fatal(format_args!(
        "exception #{} at rip={:#x} name={} error={:#x} cr2={:#x}",
        vector,
        frame.rip,
        mnemonic(vector),
        frame.error,
        cr2
    ));
}
