//! The SVM instructions Vigil executes outside the world switch (APM Vol. 3 and Vol. 2 15.5,
//! 15.17, 15.16.3). Each needs EFER.SVME and CPL 0, which Vigil has once SVM is on.

use core::arch::asm;

/// VMSAVE: stores this CPU's FS, GS, TR, LDTR (with their hidden parts), KernelGsBase,
/// STAR/LSTAR/CSTAR/SFMASK and the SYSENTER MSRs into the VMCB at `vmcb`.
///
/// # Safety
/// `vmcb` is a 4-KiB aligned page of Vigil's, identity-mapped, that nothing else uses.
pub unsafe fn vmsave(vmcb: u64) {
    // SAFETY: see the function contract.
    unsafe { asm!("vmsave rax", in("rax") vmcb, options(nostack, preserves_flags)) };
}

/// CLGI: clears the global interrupt flag. Vigil runs with GIF clear (as every #VMEXIT leaves
/// it): interrupts, NMIs and SMIs wait while Vigil holds the guest and are taken when VMRUN sets
/// GIF again, in the guest, whose events they are (15.17).
pub fn clgi() {
    // SAFETY: only holds events pending; Vigil handles none of its own.
    unsafe { asm!("clgi", options(nomem, nostack, preserves_flags)) };
}

/// INVLPGA: drops the translation of `linear` in address space `asid` (15.16.3).
pub fn invlpga(linear: u64, asid: u32) {
    // SAFETY: only invalidates TLB entries of the guest's ASID.
    unsafe {
        asm!("invlpga rax, ecx", in("rax") linear, in("ecx") asid, options(nostack, preserves_flags))
    };
}
