//! The VMCS: its field catalogue, access through VMREAD/VMWRITE (or an in-memory fake for
//! tests), a readable dump, and the VM-instruction error numbers.

mod dump;
mod fake;
mod fields;
mod instruction_error;
mod real;

pub use dump::{activity_state_name, dump};
pub use fake::FakeVmcs;
pub use fields::{Field, Kind, Width};
pub use instruction_error::{vm_instruction_error_name, VmInstructionError};
#[cfg(target_arch = "x86_64")]
pub(crate) use real::status;
pub use real::RealVmcs;

use core::fmt;

/// Why a VMREAD or VMWRITE failed (SDM Vol. 3C 31.2 conventions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmcsError {
    /// VMfailInvalid (CF = 1): there is no current VMCS, so there is no error number either.
    NoCurrentVmcs,
    /// VMfailValid (ZF = 1): the instruction failed and left this number in the
    /// VM-instruction error field (SDM Vol. 3C 31.4), e.g. 12 for an unsupported field or 13 for
    /// a write to a read-only one.
    Failed(u32),
}

impl VmcsError {
    /// The error a processor reports for a field it does not implement (SDM Vol. 3C 31.4).
    pub const UNSUPPORTED: VmcsError = VmcsError::Failed(VmInstructionError::UNSUPPORTED_COMPONENT);
    /// The error a processor reports for VMWRITE to a read-only field (SDM Vol. 3C 31.4).
    pub const READ_ONLY: VmcsError = VmcsError::Failed(VmInstructionError::WRITE_READ_ONLY);

    /// True when the field simply does not exist on this processor.
    pub fn is_unsupported(self) -> bool {
        self == Self::UNSUPPORTED
    }
}

impl fmt::Display for VmcsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VmcsError::NoCurrentVmcs => f.write_str("no current VMCS (VMfailInvalid)"),
            VmcsError::Failed(n) => write!(
                f,
                "{} (VM-instruction error {n})",
                vm_instruction_error_name(n)
            ),
        }
    }
}

/// Reading and writing the fields of one VMCS.
///
/// `read`/`write` are for the common case where a failure is a programming error that the
/// VM-entry checks or the dump will expose anyway; `try_*` report the failure.
pub trait VmcsAccess {
    fn try_read(&self, field: Field) -> Result<u64, VmcsError>;
    fn try_write(&mut self, field: Field, value: u64) -> Result<(), VmcsError>;

    /// Reads a field; an unreadable field reads as 0.
    fn read(&self, f: Field) -> u64 {
        self.try_read(f).unwrap_or(0)
    }

    /// Writes a field, ignoring failure.
    fn write(&mut self, f: Field, v: u64) {
        let _ = self.try_write(f, v);
    }

    /// Sets `bits` in a field, leaving the others.
    fn set_bits(&mut self, f: Field, bits: u64) -> Result<(), VmcsError> {
        let v = self.try_read(f)?;
        self.try_write(f, v | bits)
    }

    /// Clears `bits` in a field, leaving the others.
    fn clear_bits(&mut self, f: Field, bits: u64) -> Result<(), VmcsError> {
        let v = self.try_read(f)?;
        self.try_write(f, v & !bits)
    }
}
