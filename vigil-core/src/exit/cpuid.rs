//! CPUID (it always exits under VMX, SDM Vol. 3C 26.1.2; Vigil intercepts it under SVM).
//!
//! The guest sees the host's values with the changes Vigil needs to stay invisible and correct:
//! no feature whose instructions would raise #UD or misbehave in the guest (below), and the bits
//! that mirror control-register state (OSXSAVE, OSPKE) follow the *guest's* CR4, not the host's.
//! On top of that comes the user's policy (`cpuid-hv`, `cpuid-clear`, `cpuid-set`).
//!
//! Hidden always ([`NEVER_SHOWN`]), with the reason; hidden when the backend says so
//! ([`Vcpu::hidden_features`]): features whose enabling control the processor lacks (VMX's
//! RDTSCP/RDPID, INVPCID, XSAVES, user wait) or that Vigil's time modes refuse (UMWAIT and TPAUSE
//! exit with RDTSC exiting on).

use super::Action;
use crate::config::Config;
use crate::cpu::Cpu;
use crate::vcpu::{Host, Vcpu};
use x86_arch::cpuid::{Feature, Features};
use x86_arch::regs::{CR4_OSXSAVE, CR4_PKE};

/// Features no guest of Vigil's is shown:
/// - VMX and SVM: virtualization is Vigil's; their instructions get #UD.
/// - SMX: GETSEC always exits and gets #UD, and CR4.SMXE cannot be set.
/// - SGX and its launch control: enclave instructions are neither enabled nor emulated.
/// - PCONFIG: programming memory-encryption keys would reach memory the guest cannot name.
/// - Intel Processor Trace: its output addresses are host-physical and bypass the EPT.
/// - MSRLIST: RDMSRLIST/WRMSRLIST need a tertiary control Vigil does not set.
pub const NEVER_SHOWN: Features = Features::of(&[
    Feature::Vmx,
    Feature::Svm,
    Feature::Smx,
    Feature::Sgx,
    Feature::SgxLc,
    Feature::Pconfig,
    Feature::ProcessorTrace,
    Feature::Msrlist,
]);

const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
const LEAF7_ECX_OSPKE: u32 = 1 << 4;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// The hypervisor leaves' vendor signature, in EBX, ECX, EDX order (12 bytes).
const VENDOR: &[u8; 12] = b"VigilVigilHV";

// Always inline: the exit loop's hot path for CPUID (`exit::cpuid_inline`) is this.
#[inline(always)]
pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>) -> Action {
    let config = cpu.config();
    let vcpu = &mut cpu.vcpu;
    let leaf = vcpu.gpr(0) as u32;
    // Its bare cost goes by leaf (`crate::time::cost`).
    cpu.time.detail = leaf;
    let subleaf = vcpu.gpr(1) as u32;
    let mut r = vcpu.host().cpuid(leaf, subleaf);
    // Most leaves go to the guest as they are: the few Vigil changes are looked at apart.
    if Features::in_leaf(leaf) || leaf & 0xFFFF_FF00 == 0x4000_0000 {
        adjust(vcpu, config, leaf, subleaf, &mut r);
    }
    if config.cpuid.changes_bits() {
        config.cpuid.apply(leaf, subleaf, &mut r);
    }
    if config.trap.cpuid || config.log_exits {
        log_cpuid(leaf, subleaf, r, vcpu.rip());
    }
    // 32-bit results zero-extend into the 64-bit registers (SDM Vol. 1 3.4.1.1).
    vcpu.set_gpr(0, r[0] as u64);
    vcpu.set_gpr(3, r[1] as u64);
    vcpu.set_gpr(1, r[2] as u64);
    vcpu.set_gpr(2, r[3] as u64);
    Action::Advance
}

/// The leaves whose values Vigil changes: hidden features, the bits that follow the guest's
/// CR4, the hypervisor bit and leaves.
#[inline(never)]
fn adjust<V: Vcpu>(vcpu: &mut V, config: &Config, leaf: u32, subleaf: u32, r: &mut [u32; 4]) {
    NEVER_SHOWN
        .union(vcpu.hidden_features())
        .hide(leaf, subleaf, r);
    match leaf {
        1 => {
            let cr4 = vcpu.cr4();
            r[2] = (r[2] & !LEAF1_ECX_OSXSAVE)
                | if cr4 & CR4_OSXSAVE != 0 {
                    LEAF1_ECX_OSXSAVE
                } else {
                    0
                };
            if config.cpuid.hypervisor {
                r[2] |= LEAF1_ECX_HYPERVISOR;
            }
        }
        0x4000_0000..=0x4000_00FF if config.cpuid.hypervisor => {
            *r = match leaf {
                0x4000_0000 => {
                    let word = |i: usize| {
                        u32::from_le_bytes(VENDOR[i..i + 4].try_into().unwrap_or_default())
                    };
                    [0x4000_0001, word(0), word(4), word(8)]
                }
                0x4000_0001 => [super::hypercall::VERSION, 0, 0, 0],
                _ => [0; 4],
            };
        }
        // SVM's own leaf (revision, ASIDs, features) describes what the guest does not have
        // (APM Vol. 2 15.4): reserved, as on a processor without SVM.
        0x8000_000A => *r = [0; 4],
        7 if subleaf == 0 => {
            let cr4 = vcpu.cr4();
            r[2] = (r[2] & !LEAF7_ECX_OSPKE)
                | if cr4 & CR4_PKE != 0 {
                    LEAF7_ECX_OSPKE
                } else {
                    0
                };
        }
        _ => {}
    }
}

#[cold]
fn log_cpuid(leaf: u32, subleaf: u32, r: [u32; 4], rip: u64) {
    log::info!(
        "cpuid {leaf:#x}.{subleaf:#x} -> eax={:#010x} ebx={:#010x} ecx={:#010x} edx={:#010x} (rip {rip:#x})",
        r[0], r[1], r[2], r[3]
    );
}
