//! Exceptions the user put in the exception bitmap (exit reason 0). Vigil observes them and
//! delivers each one to the guest unchanged, so the guest's own handler runs as on bare metal.
//! The state a real delivery would have changed on the way must be set by hand, because the
//! exit happened before delivery (SDM Vol. 3C 28.1): CR2 for a page fault, DR6 for a debug
//! exception. An exception that arose while another event was being delivered is first combined
//! with it by the double-fault rules (`super::deliver_nested`).

use super::Action;
use crate::vmm::Vcpu;

pub fn handle(vcpu: &mut Vcpu, vector: u8, error_code: Option<u32>) -> Action {
    let qualification = vcpu.exit_qualification;
    log::info!(
        "guest exception {} ({}) error code {:x?} at rip {:#x}{}",
        vector,
        vmx::exit::exception_name(vector),
        error_code,
        vcpu.rip(),
        if vector == 14 {
            alloc::format!(", address {qualification:#x}")
        } else {
            alloc::string::String::new()
        }
    );
    super::deliver_nested(vcpu, vector, |vcpu| deliver(vcpu, vector, qualification))
}

/// Delivers the exception as it was.
fn deliver(vcpu: &mut Vcpu, vector: u8, qualification: u64) -> Action {
    match vector {
        14 => vcpu.set_cr2(qualification),
        1 => {
            // DR6 bits B0-B3, BD and BS come in the qualification (SDM Vol. 3C 28.2.1);
            // DR6 is not switched by VMX either.
            let dr6: u64;
            // SAFETY: reading and writing DR6 only changes debug status bits.
            unsafe {
                core::arch::asm!("mov {}, dr6", out(reg) dr6, options(nostack));
                let updated = (dr6 & !0x600F) | (qualification & 0x600F) | 0xFFFF_0FF0;
                core::arch::asm!("mov dr6, {}", in(reg) updated, options(nostack));
            }
        }
        _ => {}
    }
    vcpu.reinject_exit_event();
    Action::Resume
}
