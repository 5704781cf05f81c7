//! XSETBV (exit reason 55, unconditional). XCR0 is not switched by VMX, so the host executes the
//! guest's XSETBV itself. It must fault exactly where the guest's would (SDM Vol. 2D XSETBV):
//! #UD without CR4.OSXSAVE, #GP for CPL > 0, an XCR other than 0, or an XCR0 value the
//! processor does not support. The host's own XSETBV is wrapped so a value the checks miss
//! still turns into #GP for the guest rather than a fault in Vigil.

use super::{Action, Fault};
use crate::arch::safe::xsetbv_safe;
use crate::vmm::Vcpu;
use vmx::regs::CR4_OSXSAVE;

pub fn handle(vcpu: &mut Vcpu) -> Action {
    if vcpu.guest_cr4() & CR4_OSXSAVE == 0 {
        return Action::Inject(Fault::UD);
    }
    let xcr = vcpu.regs.rcx as u32;
    let value = vcpu.edx_eax();
    // x87 state (bit 0) must stay set, and AVX (bit 2) needs SSE (bit 1).
    let consistent = value & 1 != 0 && (value & 0b100 == 0 || value & 0b10 != 0);
    if vcpu.cpl() != 0 || xcr != 0 || !consistent || !xsetbv_safe(xcr, value) {
        return Action::Inject(Fault::GP0);
    }
    if vcpu.config.log_exits {
        log::info!("xsetbv xcr{xcr} <- {value:#x}");
    }
    Action::Advance
}
