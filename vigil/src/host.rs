//! The processor doing things on the guest's behalf (`vigil_core::vcpu::Host`): instructions
//! whose operands the guest chose run with a fix-up (`arch::safe`), so a value the processor
//! rejects comes back as an error for the exit layer to turn into the guest's #GP.

use crate::arch::port::{inb, inl, inw, outb, outl, outw};
use crate::arch::regs;
use crate::arch::safe::{rdmsr_safe, rdpmc_safe, wrmsr_safe, xsetbv_safe};
use vigil_core::vcpu::Host;

/// This CPU. (The state it stands for is the processor's own.)
#[derive(Clone, Copy, Debug, Default)]
pub struct HostCpu;

impl Host for HostCpu {
    #[inline]
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
        regs::cpuid(leaf, subleaf)
    }

    fn rdmsr(&mut self, msr: u32) -> Option<u64> {
        rdmsr_safe(msr)
    }

    fn wrmsr(&mut self, msr: u32, value: u64) -> bool {
        wrmsr_safe(msr, value)
    }

    fn xsetbv(&mut self, xcr: u32, value: u64) -> bool {
        xsetbv_safe(xcr, value)
    }

    fn rdpmc(&mut self, counter: u32) -> Option<u64> {
        rdpmc_safe(counter)
    }

    fn port_in(&mut self, port: u16, size: u8) -> u32 {
        match size {
            1 => inb(port) as u32,
            2 => inw(port) as u32,
            _ => inl(port),
        }
    }

    fn port_out(&mut self, port: u16, size: u8, value: u32) {
        match size {
            1 => outb(port, value as u8),
            2 => outw(port, value as u16),
            _ => outl(port, value),
        }
    }

    fn write_back_caches(&mut self) {
        // SAFETY: WBINVD only writes back and invalidates caches.
        unsafe { core::arch::asm!("wbinvd", options(nostack, preserves_flags)) };
    }

    #[inline]
    fn rdtsc(&mut self) -> u64 {
        regs::rdtsc()
    }

    fn init_local_apic(&mut self) {
        crate::arch::lapic::init_reset();
    }

    fn vigil_range(&self, index: u32) -> Option<(u64, u64)> {
        match index {
            0 => Some(crate::mem::image_range()),
            1 => Some(crate::mem::pool_range()),
            _ => None,
        }
    }

    fn vigil_checksum(&mut self) -> u64 {
        crate::mem::protected_checksum()
    }
}
