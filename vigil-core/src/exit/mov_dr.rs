//! MOV DR, when the user traps debug-register accesses. The exit comes before the checks the
//! instruction itself makes after its privilege check, so they are made here in the processor's
//! order (SDM Vol. 2B MOV DR; Vol. 3B 18.2): DR4/DR5 alias DR6/DR7 unless CR4.DE is set, which
//! makes them #UD; with DR7.GD set the access is a #DB fault with DR6.BD, before anything moves;
//! in 64-bit mode a write of ones to DR6/DR7 bits 63:32 is #GP. CPL > 0 is #GP (a fault with
//! priority over the exit, checked again for safety).

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::Vcpu;
use x86_arch::event::Event;
use x86_arch::regs::{CR4_DE, DR6_BD, DR6_FIXED1, DR7_GD};

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, access: super::DrAccess) -> Action {
    let log_exits = cpu.config().log_exits;
    let vcpu = &mut cpu.vcpu;
    if vcpu.cpl() != 0 {
        return Action::Inject(Event::GP0);
    }
    let dr = match access.dr {
        4 | 5 if vcpu.cr4() & CR4_DE != 0 => return Action::Inject(Event::UD),
        4 => 6,
        5 => 7,
        n => n,
    };
    let dr7 = vcpu.dr(7);
    if dr7 & DR7_GD != 0 {
        // General detect: DR6.BD set (the others kept), and the processor clears GD as it
        // enters the handler (`complete::deliver`).
        let dr6 = vcpu.dr(6);
        vcpu.set_dr(6, dr6 | DR6_BD | DR6_FIXED1);
        return Action::Inject(Event::DB);
    }
    if log_exits {
        log::info!(
            "mov {} dr{} (rip {:#x})",
            if access.read { "from" } else { "to" },
            access.dr,
            vcpu.rip()
        );
    }
    let long = vcpu.long_mode_64();
    if access.read {
        let value = vcpu.dr(dr);
        vcpu.set_gpr(access.gpr, if long { value } else { value & 0xFFFF_FFFF });
    } else {
        let mut value = vcpu.gpr(access.gpr);
        if !long {
            value &= 0xFFFF_FFFF;
        }
        if value >> 32 != 0 && (dr == 6 || dr == 7) {
            return Action::Inject(Event::GP0);
        }
        vcpu.set_dr(dr, value);
    }
    Action::Advance
}
