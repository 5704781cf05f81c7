//! The local APIC timer in TSC-deadline mode (SDM Vol. 3A, "TSC-Deadline Mode"): the timer fires
//! when the TSC reaches the value written to IA32_TSC_DEADLINE. A hypervisor that offsets,
//! scales or hides time must translate that value, or the guest's timer fires at the wrong time.
//! The interrupt handler records the TSC at delivery.

use crate::cpu;
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

pub const IA32_APIC_BASE: u32 = 0x1B;
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
/// The vector the timer uses.
pub const TIMER_VECTOR: u8 = 0xE0;
const REG_EOI: u64 = 0xB0;
const REG_SVR: u64 = 0xF0;
const REG_LVT_TIMER: u64 = 0x320;
const LVT_MASKED: u32 = 1 << 16;
/// LVT timer mode bits 18:17 = 10b: TSC-deadline.
const LVT_TSC_DEADLINE: u32 = 2 << 17;

/// TSC read first thing in the timer's interrupt handler (0: not fired).
#[unsafe(no_mangle)]
static GUEST_KIT_LAPIC_FIRED: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static GUEST_KIT_LAPIC_EOI: AtomicU64 = AtomicU64::new(0);

global_asm!(
    ".section .text",
    ".global guest_kit_lapic_timer_isr",
    "guest_kit_lapic_timer_isr:",
    "    push rax",
    "    push rdx",
    "    rdtsc",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov [rip + GUEST_KIT_LAPIC_FIRED], rax",
    "    mov rax, [rip + GUEST_KIT_LAPIC_EOI]",
    "    mov dword ptr [rax], 0",
    "    pop rdx",
    "    pop rax",
    "    iretq",
);

unsafe extern "C" {
    fn guest_kit_lapic_timer_isr();
}

/// Whether the processor has the TSC-deadline timer (CPUID.01H:ECX[24]).
pub fn has_tsc_deadline() -> bool {
    cpu::cpuid(1, 0).ecx & (1 << 24) != 0
}

fn base() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every processor with a local APIC.
    unsafe { cpu::rdmsr(IA32_APIC_BASE) & 0xF_FFFF_F000 }
}

fn write(reg: u64, value: u32) {
    // SAFETY: the APIC page is identity-mapped by the kit's page tables.
    unsafe { ((base() + reg) as *mut u32).write_volatile(value) }
}

fn read(reg: u64) -> u32 {
    // SAFETY: as for `write`.
    unsafe { ((base() + reg) as *const u32).read_volatile() }
}

/// Software-enables the APIC and points the timer at [`TIMER_VECTOR`] in TSC-deadline mode.
pub fn arm_deadline_mode() {
    GUEST_KIT_LAPIC_EOI.store(base() + REG_EOI, Ordering::SeqCst);
    crate::interrupts::set_handler(TIMER_VECTOR, guest_kit_lapic_timer_isr as *const () as u64);
    write(REG_SVR, read(REG_SVR) | 0x100 | 0xFF);
    write(REG_LVT_TIMER, LVT_TSC_DEADLINE | TIMER_VECTOR as u32);
    GUEST_KIT_LAPIC_FIRED.store(0, Ordering::SeqCst);
}

/// Masks the timer again and disarms the deadline.
pub fn disarm() {
    // SAFETY: writing 0 disarms the TSC-deadline timer.
    unsafe { cpu::wrmsr(IA32_TSC_DEADLINE, 0) };
    write(REG_LVT_TIMER, LVT_MASKED);
}

/// The TSC the handler saw, once the timer fired.
pub fn fired_at() -> Option<u64> {
    match GUEST_KIT_LAPIC_FIRED.load(Ordering::SeqCst) {
        0 => None,
        t => Some(t),
    }
}

/// Enables interrupts and spins (not HLT: a timer that never fires must not hang the case) until
/// the timer fired or `max_ticks` of TSC passed; interrupts are off again on return.
pub fn wait(max_ticks: u64) -> Option<u64> {
    let start = cpu::rdtsc();
    // SAFETY: the IDT has a handler for every vector the kit unmasks.
    unsafe { asm!("sti", options(nomem, nostack)) };
    while fired_at().is_none() && cpu::rdtsc().wrapping_sub(start) < max_ticks {
        core::hint::spin_loop();
    }
    // SAFETY: back to the kit's normal state.
    unsafe { asm!("cli", options(nomem, nostack)) };
    fired_at()
}
