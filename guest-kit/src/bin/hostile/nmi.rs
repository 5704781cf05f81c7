//! NMIs around VM exits: NMI IPIs to this CPU's own APIC ID (ICR delivery mode 100b) in a loop with CPUID right
//! after each, so that some arrive while Vigil handles the exit in VMX root. Every NMI must
//! reach the guest's handler, once: bare and under Vigil (which must deliver an NMI it took in
//! root to the guest afterwards, never end the run).

use super::io::*;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_kit::{cpu, fail, interrupts, pass, Outcome};

#[unsafe(no_mangle)]
static HOSTILE_NMI_COUNT: AtomicU64 = AtomicU64::new(0);

core::arch::global_asm!(
    ".section .text",
    ".global hostile_nmi_isr",
    "hostile_nmi_isr:",
    "    lock inc qword ptr [rip + HOSTILE_NMI_COUNT]",
    "    iretq",
);

unsafe extern "C" {
    fn hostile_nmi_isr();
}

const ROUNDS: u64 = 2000;

pub fn self_ipi_loop() -> Outcome {
    interrupts::set_handler(2, hostile_nmi_isr as *const () as u64);
    HOSTILE_NMI_COUNT.store(0, Ordering::SeqCst);
    let base = unsafe { cpu::rdmsr(0x1B) } & 0xF_FFFF_F000;
    let id = read32(base + 0x20) >> 24;
    for i in 0..ROUNDS {
        // Delivery mode NMI, physical destination: this APIC.
        write32(base + 0x310, id << 24);
        write32(base + 0x300, 4 << 8);
        let _ = cpu::cpuid(i as u32 & 1, 0);
    }
    for _ in 0..1000 {
        let _ = cpu::cpuid(0, 0);
    }
    let n = HOSTILE_NMI_COUNT.load(Ordering::SeqCst);
    if n == ROUNDS {
        pass!("nmis={}", n)
    } else {
        fail!("nmis-lost sent={} received={}", ROUNDS, n)
    }
}
