//! MOV DR (exit reason 29), when the user traps debug-register accesses. DR0-DR3 and DR6 are
//! not switched by VMX, so the host registers are the guest's; DR7 lives in the VMCS
//! (SDM Vol. 3C 28.3.1 with "save debug controls"). DR4/DR5 alias DR6/DR7 unless CR4.DE is set,
//! in which case they raise #UD (SDM Vol. 3B 18.2.2); CPL > 0 raises #GP.

use super::{Action, Fault};
use crate::vmm::Vcpu;
use core::arch::asm;
use vmx::exit::DrAccess;
use vmx::regs::CR4_DE;
use vmx::vmcs::{Field, VmcsAccess};

pub fn handle(vcpu: &mut Vcpu, q: DrAccess) -> Action {
    if vcpu.cpl() != 0 {
        return Action::Inject(Fault::GP0);
    }
    let dr = match q.dr {
        4 | 5 if vcpu.guest_cr4() & CR4_DE != 0 => return Action::Inject(Fault::UD),
        4 => 6,
        5 => 7,
        n => n,
    };
    if vcpu.config.log_exits {
        log::info!("{q} (rip {:#x})", vcpu.rip());
    }
    let gpr = q.gpr.index();
    if q.from_dr {
        let value = match dr {
            7 => vcpu.vmcs.read(Field::GuestDr7),
            n => read_dr(n),
        };
        vcpu.set_gpr(gpr, value);
    } else {
        let value = vcpu.gpr(gpr);
        if value >> 32 != 0 && (dr == 6 || dr == 7) {
            return Action::Inject(Fault::GP0);
        }
        match dr {
            7 => vcpu.vmcs.write(Field::GuestDr7, value),
            n => write_dr(n, value),
        }
    }
    Action::Advance
}

fn read_dr(n: u8) -> u64 {
    let v: u64;
    // SAFETY: reading a debug register has no side effects.
    unsafe {
        match n {
            0 => asm!("mov {}, dr0", out(reg) v, options(nomem, nostack)),
            1 => asm!("mov {}, dr1", out(reg) v, options(nomem, nostack)),
            2 => asm!("mov {}, dr2", out(reg) v, options(nomem, nostack)),
            3 => asm!("mov {}, dr3", out(reg) v, options(nomem, nostack)),
            _ => asm!("mov {}, dr6", out(reg) v, options(nomem, nostack)),
        }
    }
    v
}

fn write_dr(n: u8, v: u64) {
    // SAFETY: DR0-3 and DR6 belong to the guest while Vigil does not use hardware breakpoints;
    // DR7 (which arms them) is the guest's VMCS copy, so nothing fires in Vigil.
    unsafe {
        match n {
            0 => asm!("mov dr0, {}", in(reg) v, options(nomem, nostack)),
            1 => asm!("mov dr1, {}", in(reg) v, options(nomem, nostack)),
            2 => asm!("mov dr2, {}", in(reg) v, options(nomem, nostack)),
            3 => asm!("mov dr3, {}", in(reg) v, options(nomem, nostack)),
            _ => asm!("mov dr6, {}", in(reg) v, options(nomem, nostack)),
        }
    }
}
