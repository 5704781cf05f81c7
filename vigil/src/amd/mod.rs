//! The SVM backend (AMD-V): finding SVM and turning it on, building a vCPU's VMCB, the world
//! switch, decoding #VMEXITs into the exit layer's `Exit`, the nested page tables, and the
//! reports that need the VMCB. Everything above it sees the `vigil_core::vcpu::Vcpu` trait,
//! which [`SvmVcpu`] implements; the files mirror `intel/`.

pub mod calibrate;
pub mod checks;
mod decode;
pub mod instr;
pub mod npt;
pub mod report;
pub mod setup;
pub mod switch;
mod vcpu;

pub use vcpu::SvmVcpu;

use crate::arch::regs;
use crate::arch::safe::rdmsr_safe;
use crate::power::Outcome;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use core::sync::atomic::{AtomicBool, Ordering};
use svm::caps::{NoSvm, SvmCaps};
use svm::exit::ExitCode;
use svm::intercept::{msr as svm_msr, EFER_SVME};
use svm::vmcb::{Field, VmcbAccess};
use vigil::memmap::MemoryMap;
use vigil_core::config::Config;
use vigil_core::cpu::{Cpu, Exited, Vm};
use vigil_core::debugger::arch::Layout;
use vigil_core::exit::Stop;
use vigil_core::owners::Owners;
use vigil_core::time::{tsc, Time};
use vigil_core::vcpu::msr as m;

/// What the exit being handled said, beyond the VMCB fields read on demand.
#[derive(Clone, Copy, Debug)]
pub struct ExitState {
    pub code: ExitCode,
    pub info1: u64,
    pub info2: u64,
    /// The next instruction's address, where the processor reported it (nRIP with NRIP save;
    /// EXITINFO2 of an I/O intercept).
    pub next_rip: Option<u64>,
    /// The HLT being carried out by the processor: its address and length.
    pub halt: (u64, u8),
}

impl Default for ExitState {
    fn default() -> Self {
        ExitState {
            code: ExitCode(0),
            info1: 0,
            info2: 0,
            next_rip: None,
            halt: (0, 1),
        }
    }
}

/// This processor's SVM, if it is an AMD processor with SVM (`Ok(None)` on any other vendor:
/// the VMX backend then looks for VMX). An AMD processor whose SVM Vigil cannot use is refused
/// with the reason.
pub fn detect() -> Result<Option<SvmCaps>, String> {
    let caps = match SvmCaps::from_cpuid(&mut |leaf, sub| regs::cpuid(leaf, sub)) {
        Ok(caps) => caps,
        Err(NoSvm::Vendor) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    // VM_CR.SVMDIS: the firmware turned SVM off (APM Vol. 2 15.30.1). A processor without the
    // MSR (an emulator's older model) has not.
    if rdmsr_safe(svm_msr::VM_CR).is_some_and(|v| v & svm_msr::VM_CR_SVMDIS != 0) {
        return Err(NoSvm::DisabledByFirmware.to_string());
    }
    caps.usable().map_err(|e| e.to_string())?;
    Ok(Some(caps))
}

/// SVM is on (`enable` ran): the run ends through `disable`, not VMXOFF.
static ACTIVE: AtomicBool = AtomicBool::new(false);

pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Turns SVM off on this CPU at the end of the run: EFER.SVME cleared (APM Vol. 2 15.4).
pub fn disable() {
    // SAFETY: the run is over; no SVM instruction runs again.
    unsafe { regs::wrmsr(m::IA32_EFER, regs::rdmsr(m::IA32_EFER) & !EFER_SVME) };
}

/// Turns SVM on for this CPU (APM Vol. 2 15.4, 15.30.4): EFER.SVME, the host save area in
/// VM_HSAVE_PA, Vigil's own FS/GS/TR/LDTR and system-call MSRs saved into a host-only VMCB for
/// the world switch's VMLOAD, and GIF cleared. Returns that VMCB's address.
pub fn enable() -> Result<u64, String> {
    // SAFETY: SVME only permits the SVM instructions; Vigil's mode does not depend on it.
    unsafe { regs::wrmsr(m::IA32_EFER, regs::rdmsr(m::IA32_EFER) | EFER_SVME) };
    let hsave = crate::mem::alloc_frames(1).ok_or("out of memory for the host save area")?;
    let host_vmcb = crate::mem::alloc_frames(1).ok_or("out of memory for the host VMCB")?;
    // SAFETY: a page of Vigil's pool, 4-KiB aligned, the processor's alone from now on.
    unsafe { regs::wrmsr(svm_msr::VM_HSAVE_PA, hsave) };
    // SAFETY: a page of Vigil's pool, used only by the world switch's VMLOAD.
    unsafe { instr::vmsave(host_vmcb) };
    instr::clgi();
    ACTIVE.store(true, Ordering::Relaxed);
    Ok(host_vmcb)
}

impl SvmVcpu {
    /// Runs the guest until its next #VMEXIT that the exit layer must see, and decodes it. The
    /// interrupt that ends a HLT the processor carries out for Vigil is handled here, by
    /// re-entering at once (its host time hidden like any exit's in `hide` and `frozen`).
    pub fn enter(&mut self) -> Result<Exited, Stop> {
        loop {
            let before = self.regs.tsc_offset;
            self.before_entry();
            // SAFETY: SVM is on (`enable`), GIF is clear, the VMCB and the host VMCB are set up.
            unsafe { switch::run(&mut self.regs) };
            self.step_trap = false;
            self.len.set(None);
            let code = ExitCode(self.vmcb.read(Field::ExitCode));
            if code.is_failed_vmrun() {
                self.exit.code = code;
                self.restore_checked_state();
                report::vmrun_failure(self, code);
                return Err(Stop::Failed("VMRUN failed"));
            }
            if self.halting && self.after_halt(code) {
                if self.regs.hide != 0 {
                    // The interrupt's exit is Vigil's, not the guest's: hidden whole (it costs
                    // nothing bare), within what the bound still allows after the entry that
                    // ran the HLT.
                    let took = before.wrapping_sub(self.regs.tsc_offset) as i64;
                    self.regs.limit = (self.regs.limit as i64).saturating_sub(took).max(0) as u64;
                    // (The switch's multiplier is 0 for the host rate.)
                    let multiplier = match self.regs.multiplier {
                        0 => tsc::UNITY,
                        m => m,
                    };
                    self.regs.credit =
                        tsc::round_trip_of(&self.round_trip, multiplier, self.regs.deadline != 0);
                }
                continue;
            }
            let (exit, interrupted) = decode::decode(self, code);
            return Ok(Exited {
                exit,
                interrupted,
                exit_tsc: self.regs.exit_tsc,
            });
        }
    }
}

/// SVM runs one vCPU: several processors (the application processors' vCPUs, their start-up
/// under SVM) are the VMX backend's alone so far.
pub fn check_processors(count: usize) -> Result<(), String> {
    if count > 1 {
        return Err(format!(
            "this machine has {count} processors, and Vigil's SVM backend runs the guest on one: \
             boot with a single processor (several processors are supported under VMX)"
        ));
    }
    Ok(())
}

/// Runs the guest under SVM: nested tables, SVM on, the platform taken, the VMCB, the checks
/// and calibration the configuration asks for, then the exit loop until the run ends. Returns
/// only if the guest cannot be started. `loaded` is the guest as the loader left it.
pub fn launch(
    caps: SvmCaps,
    config: Config,
    loaded: crate::guest::Loaded,
    map: &MemoryMap,
    guest_elf_class: Option<u8>,
    pm_timer: Option<u16>,
) -> Result<Outcome<'static>, String> {
    log::info!("processor: {caps}");
    for missing in caps.missing() {
        // The one fallback every intercepted instruction pays for is a warning (seen at
        // `log=warn` too); the others cost only the exits that need them.
        if missing.starts_with("no NRIP save") {
            log::warn!("SVM: {missing}");
        } else {
            log::info!("SVM: {missing}");
        }
    }
    let phys_bits = (regs::cpuid(0x8000_0008, 0)[0] & 0xFF) as u8;
    let ncr3 = npt::build(map, &loaded.absent, phys_bits)?;
    let host_vmcb = enable()?;
    let cpu = crate::percpu::current().ok_or("per-CPU state is not set up")?;
    // What the vCPU shares with the rest of the machine: the configuration, the platform Vigil
    // owns, the one table of owned ports and MSRs (from which the permission maps are built).
    let platform = crate::take_platform(map, loaded.acpi)?;
    let owners = Owners::build(
        &config,
        &platform.port_rules(&mut crate::host::HostCpu),
        &setup::SVM_MSRS,
    );
    let vm: &'static Vm = Box::leak(Box::new(Vm {
        config,
        owners,
        platform,
        smp: vigil_core::smp::Smp::new(1),
    }));
    let config = &vm.config;
    let (mut vcpu, vtsc) =
        setup::create_vcpu(caps, vm, &loaded.entry, loaded.gdt, ncr3, cpu, host_vmcb)?;
    crate::fault::set_vmcb(vcpu.vmcb.address());
    if config.check_entry && checks::report_violations(&vcpu) > 0 {
        return Ok(Outcome::Failed("the VMCB breaks VMRUN rules (see above)"));
    }
    apply_test_writes(&mut vcpu, config)?;
    if matches!(config.tsc, vigil_core::config::TscMode::Scale(..)) {
        log::info!(
            "tsc=scale: RDTSC and RDTSCP are intercepted and emulated at the ratio{}",
            if caps.has(svm::caps::Features::TSC_RATE_MSR) {
                " (the TSC ratio MSR is not used)"
            } else {
                " (this processor has no TSC ratio MSR)"
            }
        );
    }
    let mut time = Time::new(vtsc);
    if time.v.hides_exits() {
        match vcpu.calibrate(crate::guest::calibration_scratch(), time.v.offset, pm_timer) {
            Ok(c) => {
                time.v.calibration = c;
                if vigil_core::vcpu::Vcpu::tsc_scaling(&vcpu) {
                    time.scaled_in_software();
                } else {
                    time.calibrated(false);
                }
            }
            Err(Stop::Failed(why)) => return Ok(Outcome::Failed(why)),
            Err(_) => return Ok(Outcome::Failed("calibration stopped")),
        }
    }
    crate::log_pool_usage();
    let debug: Option<&'static Debug> = config.gdb.then(|| {
        let layout = config
            .gdb_arch
            .unwrap_or_else(|| Layout::from_elf_class(guest_elf_class.unwrap_or(2)));
        &*Box::leak(Box::new(Debug::new(
            layout,
            crate::debugger::Com2,
            1,
            false,
            config.tsc,
        )))
    });
    log::info!(
        "launching guest on vCPU {} at {:#x} (NPT, ASID {}, {})",
        cpu.id,
        loaded.entry.rip,
        vcpu.asid,
        if vcpu.use_nrips {
            "next RIP from NRIP save"
        } else {
            "instruction lengths decoded"
        }
    );
    let cpu = Cpu::new(vcpu, vm, cpu.id, time);
    vm.smp.join(
        0,
        crate::arch::lapic::id(),
        &*cpu.stats,
        vigil_core::smp::Presence::Running,
    );
    crate::smp::run_vcpu(cpu, debug)
}

/// The machine's debugger under SVM.
type Debug = vigil_core::debugger::exits::Shared<SvmVcpu, crate::debugger::Com2>;

/// `test-vmcb=`: break the VMCB on purpose just before the first VMRUN, to exercise the VMRUN
/// failure report.
fn apply_test_writes(vcpu: &mut SvmVcpu, config: &Config) -> Result<(), String> {
    for &(offset, value) in &config.test_vmcb {
        let field = Field::ALL
            .iter()
            .copied()
            .find(|f| f.offset() == offset as usize)
            .ok_or_else(|| format!("test-vmcb: no VMCB field at offset {offset:#x}"))?;
        log::warn!("test-vmcb: {} ({offset:#x}) <- {value:#x}", field.name());
        vcpu.vmcb.write(field, value);
        vcpu.checked_dirty = true;
    }
    Ok(())
}
