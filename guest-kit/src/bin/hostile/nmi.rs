//! NMIs around VM exits: NMI IPIs to this CPU's own APIC ID (ICR delivery mode 100b) in a loop
//! with CPUID right after each, so that some arrive while Vigil handles the exit in VMX root;
//! then the same through the x2APIC ICR MSR, which Vigil traps, so that every one does. Every NMI must
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
    let apic = unsafe { cpu::rdmsr(0x1B) };
    let base = apic & 0xF_FFFF_F000;
    let id = read32(base + 0x20) >> 24;
    for i in 0..ROUNDS {
        // Delivery mode NMI, physical destination: this APIC.
        write32(base + 0x310, id << 24);
        write32(base + 0x300, 4 << 8);
        let _ = cpu::cpuid(i as u32 & 1, 0);
    }
    // In x2APIC mode the ICR is an MSR, and a hypervisor that traps it sends each NMI from VMX
    // root: every one arrives while it runs. (The APIC stays in x2APIC mode: leaving it needs a
    // disable Bochs cannot undo.)
    let mut sent = ROUNDS;
    if cpu::cpuid(1, 0).ecx & (1 << 21) != 0 {
        unsafe { cpu::wrmsr(0x1B, apic | (1 << 10)) };
        let x2id = unsafe { cpu::rdmsr(0x802) };
        for i in 0..ROUNDS {
            unsafe { cpu::wrmsr(0x830, (x2id << 32) | (4 << 8)) };
            let _ = cpu::cpuid(i as u32 & 1, 0);
        }
        sent += ROUNDS;
    }
    for _ in 0..1000 {
        let _ = cpu::cpuid(0, 0);
    }
    let n = HOSTILE_NMI_COUNT.load(Ordering::SeqCst);
    if n == sent {
        pass!("nmis={}", n)
    } else {
        fail!("nmis-lost sent={} received={}", sent, n)
    }
}
