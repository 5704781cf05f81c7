//! Per-CPU state. Each CPU owns one `PerCpu`: its GDT, TSS and fault stack, and its number.
//! GS base points at the CPU's own block (in VMX root operation too: the VMCS host GS base is
//! set to it), so code on any CPU finds its state without a lookup table. The boot CPU takes
//! block 0; each application processor takes its own when it starts (`smp.rs`).

use crate::arch::gdt::CpuTables;
use crate::arch::regs::{rdmsr, wrmsr};
use core::sync::atomic::AtomicBool;

/// As many as the exit layer's machines may have.
pub const MAX_CPUS: usize = vigil_core::smp::MAX_VCPUS;
const IA32_GS_BASE: u32 = 0xC000_0101;

#[repr(C, align(64))]
pub struct PerCpu {
    /// Points at this block itself, so `gs:[0]` yields it.
    this: *const PerCpu,
    pub id: u32,
    /// This CPU has a current VMCS (a fault report can show it).
    pub vmcs_loaded: AtomicBool,
    pub tables: CpuTables,
}

impl PerCpu {
    const fn new(id: u32) -> PerCpu {
        PerCpu {
            this: core::ptr::null(),
            id,
            vmcs_loaded: AtomicBool::new(false),
            tables: CpuTables::new(),
        }
    }

    pub fn address(&self) -> u64 {
        self as *const PerCpu as u64
    }
}

static mut CPUS: [PerCpu; MAX_CPUS] = {
    let mut cpus = [const { PerCpu::new(0) }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        cpus[i].id = i as u32;
        i += 1;
    }
    cpus
};

/// Takes CPU `id`'s block on the CPU running this: loads its GDT and TSS and points GS at it.
/// Each CPU calls this once, for its own id, before anything else uses per-CPU state.
pub fn init(id: usize) -> &'static PerCpu {
    // SAFETY: each CPU initializes only its own slot, once, before any other access to it; the
    // block lives forever and GS is Vigil's alone.
    unsafe {
        let cpu: *mut PerCpu = core::ptr::addr_of_mut!((*core::ptr::addr_of_mut!(CPUS))[id]);
        (*cpu).this = cpu;
        wrmsr(IA32_GS_BASE, cpu as u64);
        (*cpu).tables.load();
        &*cpu
    }
}

/// The running CPU's block, or None before `init` ran on it.
pub fn current() -> Option<&'static PerCpu> {
    let base = rdmsr(IA32_GS_BASE) as *const PerCpu;
    // SAFETY: a non-zero GS base was set by `init` to a 'static block.
    (!base.is_null()).then(|| unsafe { &*base })
}
