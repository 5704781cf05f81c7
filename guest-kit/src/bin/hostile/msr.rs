//! MSRs that would break Vigil's host state or point hardware at Vigil's memory. Each attack
//! does on bare metal what the processor does (a non-canonical base or a reserved bit is #GP,
//! SDM Vol. 4 and Vol. 2B WRMSR); under Vigil the guest must see the same, and an MSR that takes
//! a physical address must refuse Vigil's memory with #GP (the defence docs/security.md
//! chooses). A value that is accepted is put back at once.

use super::io::*;
use guest_kit::fault::{self, Caught};
use guest_kit::{cpu, fail, pass, Outcome};

const NON_CANONICAL: u64 = 0x8000_0000_0000_0000;

fn wr(msr: u32, v: u64) -> Result<(), u8> {
    unsafe { fault::try_wrmsr(msr, v) }.map_err(|c: Caught| c.vector)
}

/// A base MSR written with a non-canonical address: #GP bare, #GP under Vigil (never a failed
/// VM entry or a host fault).
pub fn non_canonical(msr: u32) -> Outcome {
    let Ok(old) = fault::try_rdmsr(msr) else {
        return fail!("unreadable msr={:#x}", msr);
    };
    match wr(msr, NON_CANONICAL) {
        Err(13) => pass!("msr={:#x} gp=1", msr),
        Err(v) => fail!("wrong-exception msr={:#x} vector={}", msr, v),
        Ok(()) => {
            let now = fault::try_rdmsr(msr).unwrap_or(0);
            let _ = wr(msr, old);
            fail!("accepted-non-canonical msr={:#x} read={:#x}", msr, now)
        }
    }
}

/// An MSR that takes a physical address: a page of the guest's own is accepted or refused as
/// the processor does; a page of Vigil's (found from the memory map) must be refused.
pub fn points_at(msr: u32, low_bits: u64) -> Outcome {
    let t = find_targets();
    let old = match fault::try_rdmsr(msr) {
        Ok(v) => Some(v),
        Err(Caught { vector: 13, .. }) => None,
        Err(c) => return fail!("rdmsr-wrong-exception msr={:#x} vector={}", msr, c.vector),
    };
    let control = match wr(msr, 0x40_0000 | low_bits) {
        Ok(()) => "accepted",
        Err(13) => "gp",
        Err(v) => return fail!("control-wrong-exception msr={:#x} vector={}", msr, v),
    };
    if let Some(old) = old {
        let _ = wr(msr, old);
    }
    let mut refused = 0;
    for &(start, _) in t.ranges() {
        match wr(msr, start | low_bits) {
            Err(13) => refused += 1,
            Err(v) => return fail!("wrong-exception msr={:#x} vector={}", msr, v),
            Ok(()) => {
                let now = fault::try_rdmsr(msr).unwrap_or(0);
                if let Some(old) = old {
                    let _ = wr(msr, old);
                }
                return fail!(
                    "points-at-vigil msr={:#x} target={:#x} read={:#x}",
                    msr,
                    start,
                    now
                );
            }
        }
    }
    pass!(
        "msr={:#x} control={} targets={} refused={}",
        msr,
        control,
        t.ranges().len(),
        refused
    )
}

/// The processor's virtualization switch. Intel: IA32_FEATURE_CONTROL is locked (Bochs locks it
/// with VMX on); a write is #GP. AMD: VM_CR ([`vm_cr`]).
pub fn feature_control() -> Outcome {
    if guest_kit::hypercall::uses_vmmcall() {
        return vm_cr();
    }
    let old = fault::try_rdmsr(0x3A);
    match (old, wr(0x3A, 0)) {
        (_, Err(13)) => pass!("gp=1"),
        (_, Err(v)) => fail!("wrong-exception vector={}", v),
        (Ok(o), Ok(())) => {
            let _ = wr(0x3A, o);
            fail!("feature-control-written old={:#x}", o)
        }
        (Err(_), Ok(())) => fail!("write-accepted-read-gp"),
    }
}

/// The MSRs virtualization keeps its own state in. Intel: the VMX capability MSRs exist exactly
/// when CPUID.1:ECX.VMX[bit 5] says VMX does (SDM Vol. 3D, appendix A.1): bare they read; under
/// Vigil, which hides VMX, they are #GP. AMD: VM_HSAVE_PA ([`vm_hsave_pa`]).
pub fn vmx_capabilities() -> Outcome {
    if guest_kit::hypercall::uses_vmmcall() {
        return vm_hsave_pa();
    }
    let vmx = cpu::cpuid(1, 0).ecx & (1 << 5) != 0;
    let mut read = 0;
    for msr in 0x480..=0x491u32 {
        match (vmx, fault::try_rdmsr(msr)) {
            (true, Ok(_)) => read += 1,
            (false, Err(Caught { vector: 13, .. })) => {}
            (true, Err(c)) => return fail!("vmx-msr-faults msr={:#x} vector={}", msr, c.vector),
            (false, Ok(v)) => return fail!("hidden-vmx-msr-reads msr={:#x} value={:#x}", msr, v),
            (false, Err(c)) => return fail!("wrong-exception msr={:#x} vector={}", msr, c.vector),
        }
    }
    pass!("cpuid-vmx={} read={}", vmx, read)
}

/// Whether CPUID reports SVM (Fn8000_0001 ECX[2]).
fn cpuid_svm() -> bool {
    cpu::cpuid(0x8000_0001, 0).ecx & (1 << 2) != 0
}

const VM_CR: u32 = 0xC001_0114;
const VM_HSAVE_PA: u32 = 0xC001_0117;

/// VM_CR (APM Vol. 2 15.30.1) holds SVM's disable and lock bits, INIT redirection and A20
/// masking: it exists exactly when CPUID reports SVM. Bare (SVM reported) it reads and takes its
/// own value back; under Vigil, which hides SVM and keeps these settings, it is #GP.
fn vm_cr() -> Outcome {
    let svm = cpuid_svm();
    match (svm, fault::try_rdmsr(VM_CR)) {
        (true, Ok(v)) => match wr(VM_CR, v) {
            Ok(()) => pass!("cpuid-svm=true vm-cr={:#x}", v),
            Err(e) => fail!("vm-cr-rewrite-faults value={:#x} vector={}", v, e),
        },
        (false, Err(Caught { vector: 13, .. })) => match wr(VM_CR, 0) {
            Err(13) => pass!("cpuid-svm=false gp=2"),
            Err(e) => fail!("wrong-exception vector={}", e),
            Ok(()) => fail!("hidden-vm-cr-written"),
        },
        (true, Err(c)) => fail!("vm-cr-faults vector={}", c.vector),
        (false, Ok(v)) => fail!("hidden-vm-cr-reads value={:#x}", v),
        (false, Err(c)) => fail!("wrong-exception vector={}", c.vector),
    }
}

/// VM_HSAVE_PA (APM Vol. 2 15.30.4) tells VMRUN where to save the host's state, and #VMEXIT
/// where to load it from: a guest that could set it would own the hypervisor. Bare (SVM
/// reported) a page of the guest's own is accepted and read back (then restored); under Vigil,
/// which hides SVM, it is #GP both ways.
fn vm_hsave_pa() -> Outcome {
    let svm = cpuid_svm();
    match (svm, fault::try_rdmsr(VM_HSAVE_PA)) {
        (true, Ok(old)) => {
            if let Err(e) = wr(VM_HSAVE_PA, 0x40_0000) {
                return fail!("hsave-write-faults vector={}", e);
            }
            let now = fault::try_rdmsr(VM_HSAVE_PA).unwrap_or(0);
            let _ = wr(VM_HSAVE_PA, old);
            if now != 0x40_0000 {
                return fail!("hsave-not-kept read={:#x}", now);
            }
            pass!("cpuid-svm=true hsave-written=1")
        }
        (false, Err(Caught { vector: 13, .. })) => match wr(VM_HSAVE_PA, 0x40_0000) {
            Err(13) => pass!("cpuid-svm=false gp=2"),
            Err(e) => fail!("wrong-exception vector={}", e),
            Ok(()) => fail!("hidden-hsave-written"),
        },
        (true, Err(c)) => fail!("hsave-faults vector={}", c.vector),
        (false, Ok(v)) => fail!("hidden-hsave-reads value={:#x}", v),
        (false, Err(c)) => fail!("wrong-exception vector={}", c.vector),
    }
}

/// IA32_MISC_ENABLE bit 34 (XD bit disable, SDM Vol. 4 table 2-2): on hardware, with it set,
/// CPUID no longer reports NX and NX page bits become reserved. Bochs accepts the write and
/// keeps reporting NX (the reference). Vigil's own page tables use NX, so the host must never
/// see this bit set: the guest may see the write accepted or refused with #GP, and Vigil must
/// survive the exit that follows (the scenario and the oracle check that). Put back at once.
pub fn misc_enable_xd() -> Outcome {
    const XD_DISABLE: u64 = 1 << 34;
    let Ok(old) = fault::try_rdmsr(0x1A0) else {
        return fail!("misc-enable-unreadable");
    };
    let result = wr(0x1A0, old | XD_DISABLE);
    // An exit (CPUID) while the bit is set: Vigil runs with whatever the host now has.
    let nx_during = cpu::cpuid(0x8000_0001, 0).edx & (1 << 20) != 0;
    let _ = wr(0x1A0, old);
    let nx_after = cpu::cpuid(0x8000_0001, 0).edx & (1 << 20) != 0;
    if !nx_after {
        return fail!("nx-lost-after-restore");
    }
    match result {
        Ok(()) => pass!("accepted=1 nx-during={}", nx_during),
        Err(13) => pass!("gp=1 nx-during={}", nx_during),
        Err(v) => fail!("wrong-exception vector={}", v),
    }
}

/// EFER with a reserved bit (bit 1) and PAT with a reserved memory type (2) are #GP (SDM Vol. 3A
/// "Extended Feature Enable Register", "IA32_PAT MSR"): these two are VMCS-switched, so a
/// hypervisor that forwards them unchecked fails its next VM entry instead.
pub fn reserved_value(msr: u32, bits: u64) -> Outcome {
    let Ok(old) = fault::try_rdmsr(msr) else {
        return fail!("unreadable msr={:#x}", msr);
    };
    let bad = if msr == 0x277 {
        (old & !7) | bits
    } else {
        old | bits
    };
    match wr(msr, bad) {
        Err(13) => {
            // An exit to show Vigil is still there and the old value still holds.
            let _ = cpu::cpuid(0, 0);
            let now = fault::try_rdmsr(msr).unwrap_or(0);
            if now != old {
                return fail!("value-changed msr={:#x} old={:#x} now={:#x}", msr, old, now);
            }
            pass!("msr={:#x} gp=1", msr)
        }
        Err(v) => fail!("wrong-exception msr={:#x} vector={}", msr, v),
        Ok(()) => {
            let _ = wr(msr, old);
            fail!("reserved-value-accepted msr={:#x} value={:#x}", msr, bad)
        }
    }
}
