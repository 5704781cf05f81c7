//! VMCALL (exit reason 18, unconditional): Vigil's hypercall interface (docs/architecture.md).
//! A VMCALL that is not a Vigil hypercall — wrong magic, CPL > 0, or hypercalls switched off —
//! raises #UD, as VMCALL does outside VMX non-root operation (SDM Vol. 2D VMCALL).

use super::{Action, Fault};
use crate::vmm::Vcpu;

const MAGIC_MASK: u32 = 0xFFFF_FF00;
const MAGIC: u32 = 0x5647_4C00;
pub const VERSION: u32 = 1;

const PING: u8 = 0;
const TSC_OFFSET: u8 = 1;
const CONFIRM_TSC: u8 = 2;
const VIGIL_RANGE: u8 = 3;
const VIGIL_CHECKSUM: u8 = 4;
const HOLD: u8 = 5;
const HOST_TSC: u8 = 6;
/// The longest hold a guest may ask for (about a second of Bochs time), so a hostile guest
/// cannot park Vigil for good.
const MAX_HOLD: u64 = 1 << 30;

const OK: u64 = 0;
const UNKNOWN: u64 = 1;
const MISMATCH: u64 = 2;

fn set_range(vcpu: &mut Vcpu, (start, end): (u64, u64)) -> u64 {
    vcpu.regs.rbx = start;
    vcpu.regs.rcx = end;
    OK
}

pub fn handle(vcpu: &mut Vcpu) -> Action {
    let eax = vcpu.regs.rax as u32;
    if !vcpu.config.hypercalls || eax & MAGIC_MASK != MAGIC || vcpu.cpl() != 0 {
        return Action::Inject(Fault::UD);
    }
    let function = eax as u8;
    let status = match function {
        PING => {
            vcpu.regs.rbx = u32::from_le_bytes(*b"Vigi") as u64;
            vcpu.regs.rcx = VERSION as u64;
            OK
        }
        TSC_OFFSET => {
            let offset = vcpu.tsc.v.offset;
            vcpu.regs.rbx = offset & 0xFFFF_FFFF;
            vcpu.regs.rcx = offset >> 32;
            vcpu.regs.rdx = u64::from(vcpu.rdtsc_exiting()) | (vcpu.config.tsc.code() as u64) << 8;
            OK
        }
        CONFIRM_TSC => {
            let seen = (vcpu.regs.rcx << 32) | (vcpu.regs.rbx & 0xFFFF_FFFF);
            match vcpu.tsc.last_emulated {
                Some(v) if v == seen => {
                    log::info!("hypercall: confirm-tsc {seen:#x} matches");
                    OK
                }
                other => {
                    log::info!("hypercall: confirm-tsc {seen:#x} does not match (last emulated {other:x?})");
                    MISMATCH
                }
            }
        }
        VIGIL_RANGE => match vcpu.regs.rbx as u32 {
            0 => set_range(vcpu, crate::mem::image_range()),
            1 => set_range(vcpu, crate::mem::pool_range()),
            _ => UNKNOWN,
        },
        VIGIL_CHECKSUM => {
            vcpu.regs.rbx = crate::mem::protected_checksum();
            log::info!("hypercall: vigil-checksum {:#018x}", vcpu.regs.rbx);
            OK
        }
        HOLD => {
            let ticks = (vcpu.regs.rbx & 0xFFFF_FFFF).min(MAX_HOLD);
            let start = crate::arch::regs::rdtsc();
            while crate::arch::regs::rdtsc().wrapping_sub(start) < ticks {
                core::hint::spin_loop();
            }
            OK
        }
        HOST_TSC => {
            vcpu.regs.rbx = vcpu.regs.exit_tsc;
            OK
        }
        _ => UNKNOWN,
    };
    vcpu.regs.rax = status;
    Action::Advance
}
