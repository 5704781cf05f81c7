//! A start-up IPI to a vCPU in the wait-for-SIPI state (an application processor the guest has
//! not started yet; SDM Vol. 3C 26.2 and 25.4.2; APM Vol. 2 15.13.3 with INIT redirection). The
//! processor starts it in real mode at vector × 4096: CS.selector = vector × 256, CS.base =
//! vector × 4096, IP = 0 (SDM Vol. 3A 9.4.4.1, 11.6.1). The rest of its state is the INIT state
//! it has been waiting in.

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::{Activity, Seg, SegAttrs, Segment, Vcpu};

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, vector: u8) -> Action {
    let vcpu = &mut cpu.vcpu;
    if vcpu.activity() != Activity::WaitForSipi {
        // A SIPI is ignored by a processor that is not waiting for one (SDM Vol. 3A 11.6.1).
        return Action::Resume;
    }
    log::info!(
        "vCPU {}: start-up IPI, starting at {:#x}",
        cpu.id,
        (vector as u64) << 12
    );
    vcpu.set_segment(
        Seg::Cs,
        &Segment {
            selector: (vector as u16) << 8,
            base: (vector as u64) << 12,
            limit: 0xFFFF,
            attrs: SegAttrs {
                // Code, readable, accessed (the INIT state of CS, SDM Vol. 3A Table 10-1).
                typ: 0xB,
                s: true,
                present: true,
                ..SegAttrs::default()
            },
        },
    );
    vcpu.set_rip(0);
    vcpu.set_activity(Activity::Active);
    Action::Resume
}
