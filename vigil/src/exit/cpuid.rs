//! CPUID (exit reason 10; it exits unconditionally, SDM Vol. 3C 26.1.2).
//!
//! The guest sees the host's values with the changes Vigil needs to stay invisible and correct:
//! VMX is hidden (the guest cannot use it: VMX instructions get #UD), and the bits that mirror
//! control-register state (OSXSAVE, OSPKE) follow the *guest's* CR4, not the host's. On top of
//! that comes the user's policy (`cpuid-hv`, `cpuid-clear`, `cpuid-set`).

use super::Action;
use crate::arch::regs::cpuid;
use crate::vmm::Vcpu;
use vmx::regs::{CR4_OSXSAVE, CR4_PKE};

const LEAF1_ECX_VMX: u32 = 1 << 5;
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
const LEAF7_ECX_OSPKE: u32 = 1 << 4;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// The hypervisor leaves' vendor signature, in EBX, ECX, EDX order (12 bytes).
const VENDOR: &[u8; 12] = b"VigilVigilHV";

pub fn handle(vcpu: &mut Vcpu) -> Action {
    let leaf = vcpu.regs.rax as u32;
    let subleaf = vcpu.regs.rcx as u32;
    let mut r = cpuid(leaf, subleaf);
    match leaf {
        1 => {
            let cr4 = vcpu.guest_cr4();
            r[2] &= !LEAF1_ECX_VMX;
            r[2] = (r[2] & !LEAF1_ECX_OSXSAVE)
                | if cr4 & CR4_OSXSAVE != 0 {
                    LEAF1_ECX_OSXSAVE
                } else {
                    0
                };
        }
        0x4000_0000..=0x4000_00FF if vcpu.config.cpuid.hypervisor => {
            r = match leaf {
                0x4000_0000 => {
                    let word = |i: usize| {
                        u32::from_le_bytes(VENDOR[i..i + 4].try_into().unwrap_or_default())
                    };
                    [0x4000_0001, word(0), word(4), word(8)]
                }
                0x4000_0001 => [super::vmcall::VERSION, 0, 0, 0],
                _ => [0; 4],
            };
        }
        7 if subleaf == 0 => {
            let cr4 = vcpu.guest_cr4();
            r[2] = (r[2] & !LEAF7_ECX_OSPKE)
                | if cr4 & CR4_PKE != 0 {
                    LEAF7_ECX_OSPKE
                } else {
                    0
                };
        }
        _ => {}
    }
    if leaf == 1 && vcpu.config.cpuid.hypervisor {
        r[2] |= LEAF1_ECX_HYPERVISOR;
    }
    vcpu.config.cpuid.apply(leaf, subleaf, &mut r);
    if vcpu.config.trap.cpuid || vcpu.config.log_exits {
        log::info!(
            "cpuid {leaf:#x}.{subleaf:#x} -> eax={:#010x} ebx={:#010x} ecx={:#010x} edx={:#010x} (rip {:#x})",
            r[0], r[1], r[2], r[3], vcpu.rip()
        );
    }
    vcpu.set_gpr32(0, r[0]);
    vcpu.set_gpr32(3, r[1]);
    vcpu.set_gpr32(1, r[2]);
    vcpu.set_gpr32(2, r[3]);
    Action::Advance
}
