//! An application processor's vCPU under VMX: VMX on this processor, its own VMCS and VPID over
//! the shared EPT and bitmaps, the boot vCPU's virtual TSC, and the INIT state in the
//! wait-for-SIPI activity state (SDM Vol. 3C 25.4.2), where it waits for the guest's INIT and
//! start-up IPIs as the processor did on bare metal.
//!
//! Why wait-for-SIPI and the processor's own INIT and SIPI exits, rather than parking the
//! vCPU in Vigil and trapping the guest's writes to the ICR: the local APICs stay the guest's,
//! with no trap on the xAPIC page or the x2APIC ICR, and the processor decodes destinations,
//! shorthands and logical modes itself. An INIT to a running vCPU exits (26.2); a SIPI exits only
//! in wait-for-SIPI and is discarded otherwise, as on bare metal. What the two signals do is the
//! vendor-neutral start-up protocol (`vigil_core::smp::startup`), which an SVM backend, where a
//! start-up IPI cannot be intercepted, drives from a trapped ICR instead.

use super::setup::{self, Bitmaps, GuestSetup};
use super::VmxVcpu;
use alloc::format;
use alloc::string::String;
use vigil_core::cpu::{Cpu, Vm};
use vigil_core::smp::startup;
use vigil_core::smp::Presence;
use vigil_core::time::tsc::VirtualTsc;
use vigil_core::time::Time;

/// What the boot processor prepared for every application processor's vCPU.
pub struct ApSetup {
    pub vm: &'static Vm,
    pub guest: GuestSetup,
    pub bitmaps: Bitmaps,
    /// The boot vCPU's virtual TSC as it started.
    pub tsc: VirtualTsc,
    /// Whether the monitor trap flag traps (probed on the boot processor).
    pub mtf_works: bool,
    /// The machine's debugger, with `gdb=com2`.
    pub debugger: Option<&'static crate::Debug>,
}

static SETUP: spin::Once<ApSetup> = spin::Once::new();

/// Makes `setup` the application processors' (once, before `smp::release`).
pub fn prepare(setup: ApSetup) {
    SETUP.call_once(|| setup);
}

fn vcpu(index: usize, s: &ApSetup) -> Result<Cpu<VmxVcpu>, String> {
    let caps = super::capabilities()?;
    if !caps.activity_state_supported(3) {
        return Err(
            "this processor cannot hold a vCPU in the wait-for-SIPI state \
                    (IA32_VMX_MISC bit 8)"
                .into(),
        );
    }
    super::vmxon(&caps)?;
    let percpu = crate::percpu::current().ok_or("per-CPU state is not set up")?;
    let (mut vcpu, vtsc) =
        setup::create_vcpu(caps, s.vm, &s.guest, &s.bitmaps, percpu, Some(&s.tsc))
            .map_err(|e| format!("vCPU {index}: {e}"))?;
    vcpu.mtf_works = s.mtf_works;
    percpu
        .vmcs_loaded
        .store(true, core::sync::atomic::Ordering::Relaxed);
    let mut cpu = Cpu::new(vcpu, s.vm, index as u32, Time::new(vtsc));
    startup::enter_init_state(&mut cpu);
    cpu.time.sync(&mut cpu.vcpu);
    if s.vm.config.check_entry && super::checks::report_violations(&cpu.vcpu) > 0 {
        return Err("its VMCS breaks VM-entry rules (see above)".into());
    }
    Ok(cpu)
}

/// The application processor `index`, released by `smp::release`: sets up its vCPU, reports,
/// and runs the guest's vCPU until the run ends.
pub fn ap_main(index: usize) -> ! {
    let Some(s) = SETUP.get() else {
        crate::smp::report_ready(index, false);
        crate::smp::halt_forever()
    };
    let cpu = match vcpu(index, s) {
        Ok(cpu) => cpu,
        Err(why) => {
            log::error!("vCPU {index}: {why}");
            crate::smp::report_ready(index, false);
            crate::smp::halt_forever()
        }
    };
    s.vm.smp.join(
        index,
        crate::arch::lapic::id(),
        &*cpu.stats,
        Presence::WaitingForSipi,
    );
    crate::smp::report_ready(index, true);
    crate::run_vcpu(cpu, s.debugger)
}
