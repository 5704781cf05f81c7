//! INVEPT and INVVPID (SDM Vol. 3C 31.3): dropping cached EPT and VPID-tagged translations.

use crate::vmcs::VmcsError;

/// INVEPT types (SDM Vol. 3C 31.3, INVEPT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum InveptType {
    /// Translations derived from one EPTP.
    SingleContext = 1,
    /// Translations derived from every EPTP.
    AllContext = 2,
}

/// INVVPID types (SDM Vol. 3C 31.3, INVVPID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum InvvpidType {
    /// One linear address of one VPID.
    IndividualAddress = 0,
    /// Every linear address of one VPID.
    SingleContext = 1,
    /// Every VPID except 0.
    AllContext = 2,
    /// One VPID, keeping global translations.
    SingleContextRetainingGlobals = 3,
}

/// Runs INVEPT or INVVPID (`$insn`) with a type and a 16-byte descriptor; both report failure
/// through CF/ZF (SDM Vol. 3C 31.2). Only valid in VMX root operation; elsewhere the
/// instruction raises #UD.
macro_rules! invalidate {
    ($insn:literal, $kind:expr, $desc:expr) => {{
        let desc: [u64; 2] = $desc;
        #[cfg(target_arch = "x86_64")]
        {
            let cf: u8;
            let zf: u8;
            // SAFETY: the instruction reads the 16-byte descriptor and flushes TLB entries; it
            // writes no memory.
            unsafe {
                core::arch::asm!(
                    concat!($insn, " {kind}, [{desc}]"),
                    "setc {cf}",
                    "setz {zf}",
                    kind = in(reg) $kind as u64,
                    desc = in(reg) desc.as_ptr(),
                    cf = out(reg_byte) cf,
                    zf = out(reg_byte) zf,
                    options(nostack, readonly),
                );
            }
            crate::vmcs::status(cf, zf)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = ($kind, desc);
            Err(VmcsError::NoCurrentVmcs)
        }
    }};
}

/// Invalidates EPT-derived translations for `eptp` (ignored for all-context). The descriptor is
/// the EPTP followed by 64 reserved zero bits.
pub fn invept(kind: InveptType, eptp: u64) -> Result<(), VmcsError> {
    invalidate!("invept", kind, [eptp, 0])
}

/// Invalidates VPID-tagged translations. The descriptor holds the VPID in bits 15:0 (bits 63:16
/// zero) and the linear address, used only by the individual-address type, in bits 127:64.
pub fn invvpid(kind: InvvpidType, vpid: u16, linear: u64) -> Result<(), VmcsError> {
    invalidate!("invvpid", kind, [vpid as u64, linear])
}
