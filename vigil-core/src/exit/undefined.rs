//! Instructions that always exit but that the guest's processor, as Vigil presents it, does not
//! have: the virtualization instructions (VMX is hidden from the guest and its CR4.VMXE reads 0;
//! under SVM, EFER.SVME reads 0) and GETSEC (CR4.SMXE is 0). On such a processor each raises #UD
//! (SDM Vol. 3C 31.3 "VMX instructions", Vol. 2D GETSEC; APM Vol. 3 VMRUN).

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::Vcpu;
use x86_arch::event::Event;

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, mnemonic: &'static str) -> Action {
    if cpu.config().log_exits {
        log::info!("{mnemonic} at {:#x}: #UD", cpu.vcpu.rip());
    }
    Action::Inject(Event::UD)
}
