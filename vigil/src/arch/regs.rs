//! Host register and MSR access.

use core::arch::asm;

pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading an MSR that does not exist raises #GP, which Vigil treats as its own bug;
    // callers only read architectural MSRs whose presence they checked.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (hi as u64) << 32 | lo as u64
}

/// # Safety
/// Writing an MSR can change how the CPU runs Vigil; the caller knows the MSR and the value.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: see the function contract.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

#[inline]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC has no side effects.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (hi as u64) << 32 | lo as u64
}

macro_rules! cr_accessors {
    ($($read:ident $write:ident $reg:literal),*) => {$(
        #[inline]
        pub fn $read() -> u64 {
            let value: u64;
            // SAFETY: reading a control register has no side effects.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) value, options(nomem, nostack, preserves_flags)) };
            value
        }

        /// # Safety
        /// Changes how the CPU runs Vigil: the caller must keep paging, protection and the
        /// fixed VMX bits valid.
        #[inline]
        pub unsafe fn $write(value: u64) {
            // SAFETY: see the function contract.
            unsafe { asm!(concat!("mov ", $reg, ", {}"), in(reg) value, options(nostack, preserves_flags)) };
        }
    )*};
}

cr_accessors!(cr0 write_cr0 "cr0", cr4 write_cr4 "cr4");

pub fn cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

pub fn sgdt() -> (u64, u16) {
    let mut buf = [0u8; 10];
    // SAFETY: SGDT writes 10 bytes into the buffer.
    unsafe { asm!("sgdt [{}]", in(reg) buf.as_mut_ptr(), options(nostack, preserves_flags)) };
    (
        u64::from_le_bytes(buf[2..10].try_into().unwrap()),
        u16::from_le_bytes([buf[0], buf[1]]),
    )
}

pub fn sidt() -> (u64, u16) {
    let mut buf = [0u8; 10];
    // SAFETY: SIDT writes 10 bytes into the buffer.
    unsafe { asm!("sidt [{}]", in(reg) buf.as_mut_ptr(), options(nostack, preserves_flags)) };
    (
        u64::from_le_bytes(buf[2..10].try_into().unwrap()),
        u16::from_le_bytes([buf[0], buf[1]]),
    )
}
