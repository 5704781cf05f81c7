//! VMCALL (VMMCALL on AMD; it always exits): Vigil's hypercall interface (docs/architecture.md).
//! A hypercall that is not a Vigil hypercall — wrong magic, CPL > 0, or hypercalls switched off —
//! raises #UD, as VMCALL does outside VMX non-root operation (SDM Vol. 2D VMCALL).

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::{gpr, Host, Vcpu};
use x86_arch::event::Event;

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

fn set_range<V: Vcpu>(vcpu: &mut V, range: Option<(u64, u64)>) -> u64 {
    match range {
        Some((start, end)) => {
            vcpu.set_gpr(gpr::RBX, start);
            vcpu.set_gpr(gpr::RCX, end);
            OK
        }
        None => UNKNOWN,
    }
}

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>) -> Action {
    let eax = cpu.vcpu.gpr(gpr::RAX) as u32;
    if !cpu.config().hypercalls || eax & MAGIC_MASK != MAGIC || cpu.vcpu.cpl() != 0 {
        return Action::Inject(Event::UD);
    }
    let function = eax as u8;
    let (rbx, rcx) = (cpu.vcpu.gpr(gpr::RBX), cpu.vcpu.gpr(gpr::RCX));
    let vcpu = &mut cpu.vcpu;
    let status = match function {
        PING => {
            vcpu.set_gpr(gpr::RBX, u32::from_le_bytes(*b"Vigi") as u64);
            vcpu.set_gpr(gpr::RCX, VERSION as u64);
            OK
        }
        TSC_OFFSET => {
            let offset = cpu.time.v.offset;
            let exits = vcpu.rdtsc_exits();
            vcpu.set_gpr(gpr::RBX, offset & 0xFFFF_FFFF);
            vcpu.set_gpr(gpr::RCX, offset >> 32);
            vcpu.set_gpr(
                gpr::RDX,
                u64::from(exits) | (cpu.vm.config.tsc.code() as u64) << 8,
            );
            OK
        }
        CONFIRM_TSC => {
            let seen = (rcx << 32) | (rbx & 0xFFFF_FFFF);
            match cpu.time.last_emulated {
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
        VIGIL_RANGE => {
            let range = vcpu.host().vigil_range(rbx as u32);
            set_range(vcpu, range)
        }
        VIGIL_CHECKSUM => {
            let sum = vcpu.host().vigil_checksum();
            vcpu.set_gpr(gpr::RBX, sum);
            log::info!("hypercall: vigil-checksum {sum:#018x}");
            OK
        }
        HOLD => {
            let ticks = (rbx & 0xFFFF_FFFF).min(MAX_HOLD);
            let host = vcpu.host();
            let start = host.rdtsc();
            while host.rdtsc().wrapping_sub(start) < ticks {
                core::hint::spin_loop();
            }
            // Hidden in hide and frozen with the rest of the exit, and owed to no one (a stop,
            // not work the guest's TSC must account for); seen in the other modes.
            let held = vcpu.host().rdtsc().wrapping_sub(start);
            cpu.time.forgive(held);
            OK
        }
        HOST_TSC => {
            vcpu.set_gpr(gpr::RBX, cpu.exit_tsc);
            OK
        }
        _ => UNKNOWN,
    };
    cpu.vcpu.set_gpr(gpr::RAX, status);
    Action::Advance
}
