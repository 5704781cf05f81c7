//! The VMX instructions that manage VMX operation and VMCS regions (SDM Vol. 3C 31.3). Each
//! reports failure through RFLAGS (31.2): CF = VMfailInvalid, ZF = VMfailValid.

use core::arch::asm;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmxFail {
    Invalid,
    Valid,
}

fn status(cf: u8, zf: u8) -> Result<(), VmxFail> {
    match (cf, zf) {
        (0, 0) => Ok(()),
        (0, _) => Err(VmxFail::Valid),
        _ => Err(VmxFail::Invalid),
    }
}

macro_rules! vmx_mem_op {
    ($name:ident, $insn:literal) => {
        /// # Safety
        /// `phys` must be a 4 KiB-aligned region prepared as the SDM requires for this
        /// instruction (revision identifier written), and CR4.VMXE must be set.
        pub unsafe fn $name(phys: u64) -> Result<(), VmxFail> {
            let (cf, zf): (u8, u8);
            // SAFETY: the operand is a pointer to the 64-bit physical address (SDM 31.3).
            unsafe {
                asm!(concat!($insn, " qword ptr [{}]"), "setc {}", "setz {}", in(reg) &phys, out(reg_byte) cf, out(reg_byte) zf, options(nostack))
            };
            status(cf, zf)
        }
    };
}

vmx_mem_op!(vmxon, "vmxon");
vmx_mem_op!(vmclear, "vmclear");
vmx_mem_op!(vmptrld, "vmptrld");
