//! Instructions that always exit but that the guest's processor, as Vigil presents it, does not
//! have: the VMX instructions (exit reasons 18-27, 50, 53, 58-59, 63-64; VMX is hidden from the
//! guest and its CR4.VMXE reads 0) and GETSEC (reason 11; CR4.SMXE is 0). On such a processor
//! each raises #UD (SDM Vol. 3C 31.3 "VMX instructions", Vol. 2D GETSEC).

use super::{Action, Fault};
use crate::vmm::Vcpu;

pub fn handle(vcpu: &mut Vcpu, mnemonic: &'static str) -> Action {
    if vcpu.config.log_exits {
        log::info!("{mnemonic} at {:#x}: #UD", vcpu.rip());
    }
    Action::Inject(Fault::UD)
}
