//! An in-memory VMCS for host tests.

use super::{Field, Kind, VmcsAccess, VmcsError};
use alloc::collections::{BTreeMap, BTreeSet};

/// A VMCS held in a map. It behaves like a processor's: every field reads 0 until written,
/// writes are truncated to the field's width, fields marked unsupported fail with error 12 and
/// VMWRITE to a read-only field fails with error 13 unless [`FakeVmcs::writable_exit_info`] is
/// set (IA32_VMX_MISC bit 29, SDM Vol. 3D A.6). [`FakeVmcs::set`] bypasses all of that so tests
/// can plant exit information.
#[derive(Clone, Debug, Default)]
pub struct FakeVmcs {
    values: BTreeMap<Field, u64>,
    unsupported: BTreeSet<Field>,
    /// Allow VMWRITE to read-only fields, as processors with IA32_VMX_MISC bit 29 do.
    pub writable_exit_info: bool,
}

impl FakeVmcs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a value without any of VMWRITE's rules (still truncated to the field's width).
    pub fn set(&mut self, field: Field, value: u64) -> &mut Self {
        self.values.insert(field, value & field.width().mask());
        self
    }

    /// The stored value, 0 if never written.
    pub fn get(&self, field: Field) -> u64 {
        self.values.get(&field).copied().unwrap_or(0)
    }

    /// Makes the field behave as one the processor does not implement.
    pub fn mark_unsupported(&mut self, field: Field) -> &mut Self {
        self.unsupported.insert(field);
        self
    }

    /// Fields that were written, in encoding order.
    pub fn written(&self) -> impl Iterator<Item = (Field, u64)> + '_ {
        self.values.iter().map(|(f, v)| (*f, *v))
    }
}

impl VmcsAccess for FakeVmcs {
    fn try_read(&self, field: Field) -> Result<u64, VmcsError> {
        if self.unsupported.contains(&field) {
            return Err(VmcsError::UNSUPPORTED);
        }
        Ok(self.get(field))
    }

    fn try_write(&mut self, field: Field, value: u64) -> Result<(), VmcsError> {
        if self.unsupported.contains(&field) {
            return Err(VmcsError::UNSUPPORTED);
        }
        if field.kind() == Kind::ReadOnly && !self.writable_exit_info {
            return Err(VmcsError::READ_ONLY);
        }
        self.set(field, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritten_fields_read_zero_and_writes_truncate() {
        let mut v = FakeVmcs::new();
        assert_eq!(v.try_read(Field::GuestRip), Ok(0));
        v.write(Field::GuestCsSelector, 0x1_0008);
        assert_eq!(v.read(Field::GuestCsSelector), 0x0008);
        v.write(Field::GuestCsLimit, 0x1_ffff_ffff);
        assert_eq!(v.read(Field::GuestCsLimit), 0xffff_ffff);
        v.write(Field::GuestRip, u64::MAX);
        assert_eq!(v.read(Field::GuestRip), u64::MAX);
    }

    #[test]
    fn read_only_fields_reject_vmwrite_unless_misc_bit_29() {
        let mut v = FakeVmcs::new();
        assert_eq!(
            v.try_write(Field::VmExitReason, 10),
            Err(VmcsError::READ_ONLY)
        );
        assert_eq!(v.read(Field::VmExitReason), 0);
        v.writable_exit_info = true;
        assert_eq!(v.try_write(Field::VmExitReason, 10), Ok(()));
        assert_eq!(v.read(Field::VmExitReason), 10);
        v.set(Field::ExitQualification, 7);
        assert_eq!(v.read(Field::ExitQualification), 7);
    }

    #[test]
    fn unsupported_fields_fail_both_ways() {
        let mut v = FakeVmcs::new();
        v.mark_unsupported(Field::TscMultiplier);
        assert!(v
            .try_read(Field::TscMultiplier)
            .unwrap_err()
            .is_unsupported());
        assert_eq!(
            v.try_write(Field::TscMultiplier, 1),
            Err(VmcsError::UNSUPPORTED)
        );
        assert_eq!(v.read(Field::TscMultiplier), 0);
    }

    #[test]
    fn bit_helpers_modify_only_their_bits() {
        let mut v = FakeVmcs::new();
        v.write(Field::ExceptionBitmap, 0b1010);
        v.set_bits(Field::ExceptionBitmap, 0b0001).unwrap();
        v.clear_bits(Field::ExceptionBitmap, 0b1000).unwrap();
        assert_eq!(v.read(Field::ExceptionBitmap), 0b0011);
    }
}
