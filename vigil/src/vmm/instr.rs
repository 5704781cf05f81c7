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

/// INVVPID type 1 (single context) for `vpid`, or type 2 (all contexts) when the processor only
/// has that (SDM Vol. 3C 31.3 INVVPID; the types supported are in IA32_VMX_EPT_VPID_CAP).
pub fn invvpid_single_context(vpid: u16, caps: &vmx::caps::VmxCaps) {
    const SINGLE: u64 = 1;
    const ALL: u64 = 2;
    let kind = if caps.ept_vpid & (1 << 41) != 0 {
        SINGLE
    } else {
        ALL
    };
    let descriptor: [u64; 2] = [vpid as u64, 0];
    // SAFETY: INVVPID only invalidates cached translations; the descriptor is valid memory.
    unsafe { asm!("invvpid {}, [{}]", in(reg) kind, in(reg) &descriptor, options(nostack)) };
}
