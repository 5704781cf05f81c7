//! VMREAD/VMWRITE on the current VMCS.

use super::{Field, VmcsAccess, VmcsError};

/// The processor's current VMCS, accessed with VMREAD/VMWRITE.
///
/// Only meaningful in VMX root operation with a current VMCS loaded by VMPTRLD: outside VMX
/// operation both instructions raise #UD (SDM Vol. 3C 31.3, VMREAD/VMWRITE). It compiles
/// everywhere so that code generic over [`VmcsAccess`] builds on the host, where it is never run.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealVmcs;

/// Turns the flags VMX instructions leave behind into a result (SDM Vol. 3C 31.2): CF = 1 is
/// VMfailInvalid, ZF = 1 is VMfailValid with the number in the VM-instruction error field, both
/// clear is VMsucceed.
#[cfg(target_arch = "x86_64")]
pub(crate) fn status(cf: u8, zf: u8) -> Result<(), VmcsError> {
    if cf != 0 {
        Err(VmcsError::NoCurrentVmcs)
    } else if zf != 0 {
        // A VMREAD of the error field cannot itself fail once a current VMCS exists.
        let n = raw_vmread(Field::VmInstructionError.encoding() as u64).0;
        Err(VmcsError::Failed(n as u32))
    } else {
        Ok(())
    }
}

/// Returns (value, CF, ZF).
#[cfg(target_arch = "x86_64")]
fn raw_vmread(encoding: u64) -> (u64, u8, u8) {
    let value: u64;
    let cf: u8;
    let zf: u8;
    // SAFETY: VMREAD only reads the current VMCS into a register; in VMX root operation it has
    // no other effect, and outside it faults with #UD rather than touching memory.
    unsafe {
        core::arch::asm!(
            "vmread {value}, {enc}",
            "setc {cf}",
            "setz {zf}",
            enc = in(reg) encoding,
            value = out(reg) value,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    (value, cf, zf)
}

impl VmcsAccess for RealVmcs {
    #[cfg(target_arch = "x86_64")]
    fn try_read(&self, field: Field) -> Result<u64, VmcsError> {
        let (value, cf, zf) = raw_vmread(field.encoding() as u64);
        status(cf, zf).map(|()| value)
    }

    #[cfg(target_arch = "x86_64")]
    fn try_write(&mut self, field: Field, value: u64) -> Result<(), VmcsError> {
        let cf: u8;
        let zf: u8;
        // SAFETY: VMWRITE changes only the current VMCS. What that VMCS then does on the next
        // VM entry or exit is the caller's responsibility, as with any VMCS write.
        unsafe {
            core::arch::asm!(
                "vmwrite {enc}, {value}",
                "setc {cf}",
                "setz {zf}",
                enc = in(reg) field.encoding() as u64,
                value = in(reg) value,
                cf = out(reg_byte) cf,
                zf = out(reg_byte) zf,
                options(nostack),
            );
        }
        status(cf, zf)
    }

    /// VMREAD without a branch: a failed read yields 0, as the trait's `read` promises. This is
    /// the exit path's read, so it is kept to two instructions.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn read(&self, field: Field) -> u64 {
        let value: u64;
        // SAFETY: as in `raw_vmread`; CMOVBE replaces the value by 0 when VMREAD failed
        // (CF or ZF set, SDM Vol. 3C 31.2).
        unsafe {
            core::arch::asm!(
                "vmread {value}, {enc}",
                "cmovbe {value}, {zero}",
                enc = in(reg) field.encoding() as u64,
                zero = in(reg) 0u64,
                value = out(reg) value,
                options(nostack),
            );
        }
        value
    }

    /// VMWRITE whose failure is ignored, as the trait's `write` promises (`try_write` reports it).
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn write(&mut self, field: Field, value: u64) {
        // SAFETY: as in `try_write`.
        unsafe {
            core::arch::asm!(
                "vmwrite {enc}, {value}",
                enc = in(reg) field.encoding() as u64,
                value = in(reg) value,
                options(nostack),
            );
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn try_read(&self, _field: Field) -> Result<u64, VmcsError> {
        Err(VmcsError::NoCurrentVmcs)
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn try_write(&mut self, _field: Field, _value: u64) -> Result<(), VmcsError> {
        Err(VmcsError::NoCurrentVmcs)
    }
}
