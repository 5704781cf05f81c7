//! Vigil: a bare-metal hypervisor for Intel VT-x and AMD-V. GRUB loads it (multiboot2) with the
//! guest as a module; Vigil takes the machine, removes its own memory from the guest's view, and
//! runs the guest under VMX with EPT and VPID, or SVM with nested paging and an ASID, handling
//! the exits the user asked for.
#![no_std]
#![no_main]

extern crate alloc;

mod acpi;
mod amd;
mod arch;
mod calibrate;
mod debugger;
mod fault;
mod guest;
mod guest_mem;
mod host;
mod intel;
mod mem;
mod percpu;
mod power;
mod serial;
mod smp;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use core::sync::atomic::Ordering;
use intel::VmxVcpu;
use power::{end_run, Outcome};
use vigil::memmap::{Kind, MemoryMap};
use vigil_core::config::{Config, LogLevel};
use vigil_core::cpu::{Cpu, Vm};
use vigil_core::debugger::arch::Layout;
use vigil_core::owners::Owners;
use vigil_core::platform::acpi::Acpi;
use vigil_core::platform::{DmaProtection, Facts, GuestMemory, Platform, PrdPage};
use vigil_core::time::Time;

const MULTIBOOT2_MAGIC: u32 = 0x36D7_6289;

#[no_mangle]
extern "C" fn vigil_main(magic: u32, info: u32, load: u64) -> ! {
    arch::boot::set_load_address(load);
    serial::init();
    println!(
        "Vigil {} — Intel VT-x and AMD-V hypervisor",
        env!("CARGO_PKG_VERSION")
    );
    percpu::init(0);
    arch::idt::init();
    if magic != MULTIBOOT2_MAGIC {
        end_run(Outcome::Failed("not started by a multiboot2 boot loader"));
    }
    match boot(info as u64) {
        Ok(outcome) => end_run(outcome),
        Err(why) => {
            println!("error: {why}");
            end_run(Outcome::Failed(Box::leak(why.into_boxed_str())))
        }
    }
}

/// A failure before the heap exists: `why` is printed as it is (no allocation).
fn early_failure(why: &'static str) -> ! {
    println!("error: {why}");
    end_run(Outcome::Failed(why))
}

fn boot(info: u64) -> Result<Outcome<'static>, String> {
    // SAFETY: GRUB passed this pointer to a complete boot information structure, which nothing
    // overwrites before Vigil has copied what it needs from it.
    let mbi = unsafe {
        multiboot2::BootInformation::load(info as *const multiboot2::BootInformationHeader)
    }
    .unwrap_or_else(|_| early_failure("bad multiboot2 boot information"));
    let cmdline = mbi
        .command_line_tag()
        .and_then(|t| t.cmdline().ok())
        .unwrap_or("");
    let mut map = MemoryMap::new();
    let areas = mbi
        .memory_map_tag()
        .unwrap_or_else(|| early_failure("the boot loader passed no memory map"));
    for a in areas.memory_areas() {
        let kind = Kind::from_e820(u32::from(a.typ()));
        if map.add(a.start_address(), a.end_address(), kind).is_err() {
            early_failure("memory map has too many regions");
        }
    }
    let modules = guest::Modules::from_boot_info(&mbi);
    let guest_elf_class = debugger::elf_class(modules.ranges());
    let rsdt = mbi.rsdp_v1_tag().map(|t| t.rsdt_address() as u64);
    let xsdt = mbi.rsdp_v2_tag().map(|t| t.xsdt_address() as u64);

    // Every processor becomes a vCPU: counted before Vigil sizes its memory.
    let processors = smp::processors(rsdt, xsdt);
    let cpus = processors.as_ref().map_or(1, |p| p.count);
    take_memory(&mut map, info, mbi.total_size() as u64, &modules, cpus);
    let ram_end = map.ram_end();
    let mapped = arch::boot::extend_identity_map(ram_end, || mem::alloc_frames(1));
    if mapped < ram_end {
        log::warn!("RAM above {mapped:#x} is beyond Vigil's own address space: the guest gets it, Vigil cannot touch it for the guest");
    }

    let config = Config::parse(cmdline)
        .map_err(|e| format!("{e}\noptions:\n{}", vigil_core::config::HELP))?;
    log::set_max_level(level_filter(config.log));
    let (image, pool) = (mem::image_range(), mem::pool_range());
    log::info!(
        "vigil memory: image [{:#x}-{:#x}), pool [{:#x}-{:#x}) — absent from the guest ({} KiB in all)",
        image.0,
        image.1,
        pool.0,
        pool.1,
        (image.1 - image.0 + pool.1 - pool.0) / 1024
    );
    for r in map.regions() {
        log::debug!("memory {r}");
    }
    guest_mem::init(map.clone(), mapped);
    let processors = processors.map_err(|e| format!("{e}"))?;
    vigil_core::smp::check_time_mode(config.tsc, processors.count)?;
    // The backend, chosen once from CPUID: SVM on an AMD processor that has it, VMX otherwise.
    let svm = amd::detect()?;
    if svm.is_some() {
        amd::check_processors(processors.count)?;
    }
    // Before the guest is loaded: the start-up code borrows a page of conventional memory,
    // clear of the boot information and modules, and puts it back.
    let mut avoid: alloc::vec::Vec<(u64, u64)> = modules.ranges().collect();
    avoid.push((info, info + mbi.total_size() as u64));
    smp::start(&processors, &map, &avoid)?;

    if let Some(svm) = svm {
        let loaded = guest::load(&modules, &map, rsdt, xsdt)?;
        let pm_timer = acpi::pm_timer_port(rsdt, xsdt);
        return amd::launch(svm, config, loaded, &map, guest_elf_class, pm_timer);
    }
    let caps = intel::capabilities()?;
    // Without unrestricted guest: a page of the guest's RAM for the identity page tables it
    // runs on while its paging is off, reserved before the guest's image and data are placed.
    let mut keep_clear: alloc::vec::Vec<(u64, u64)> = modules.ranges().collect();
    keep_clear.push((info, info + mbi.total_size() as u64));
    let identity_table = intel::flat::reserve(&mut map, &caps, &keep_clear)?;
    let loaded = guest::load(&modules, &map, rsdt, xsdt)?;
    let (eptp, eptp_a20) = intel::ept::build(&map, &loaded.absent, &caps)?;
    let setup = intel::setup::GuestSetup {
        entry: loaded.entry,
        gdt: loaded.gdt,
        eptp,
        eptp_a20,
        acpi: loaded.acpi,
        identity_table,
    };
    intel::vmxon(&caps)?;
    let cpu = percpu::current().ok_or("per-CPU state is not set up")?;
    // What every vCPU shares: the configuration, the platform Vigil owns, the one table of owned
    // ports and MSRs (from which the bitmaps are built) and the vCPUs' meeting points.
    let platform = take_platform(&map, setup.acpi)?;
    let owners = Owners::build(
        &config,
        &platform.port_rules(&mut host::HostCpu),
        &intel::setup::vmx_msrs(&caps),
    );
    let vm: &'static Vm = Box::leak(Box::new(Vm {
        config,
        owners,
        platform,
        smp: vigil_core::smp::Smp::new(processors.count),
    }));
    let config = &vm.config;
    let bitmaps = intel::setup::bitmaps(&vm.owners)?;
    let (mut vcpu, vtsc) = intel::setup::create_vcpu(caps, vm, &setup, &bitmaps, cpu, None)?;
    cpu.vmcs_loaded.store(true, Ordering::Relaxed);
    if config.check_entry && intel::checks::report_violations(&vcpu) > 0 {
        return Ok(Outcome::Failed(
            "the VMCS breaks VM-entry rules (see above)",
        ));
    }
    apply_test_vmwrites(&mut vcpu, config)?;
    let mut time = Time::new(vtsc);
    if time.v.hides_exits() {
        // The scratch bytes are in the boot data page, after the GDT and before the multiboot
        // information.
        let pm_timer = acpi::pm_timer_port(rsdt, xsdt);
        match vcpu.calibrate(guest::calibration_scratch(), time.v.offset, pm_timer) {
            Ok(c) => {
                time.v.calibration = c;
                time.calibrated(vigil_core::vcpu::Vcpu::tsc_scaling(&vcpu));
            }
            Err(failure) => {
                intel::report::entry_failure(&vcpu, failure);
                return Ok(Outcome::Failed("VM entry failed"));
            }
        }
    }
    if config.gdb && !vcpu.probe_monitor_trap(guest::calibration_scratch()) && caps.has_mtf() {
        log::warn!(
            "gdb: the monitor trap flag is reported but did not trap: stepping with RFLAGS.TF"
        );
    }
    log_pool_usage();
    // With gdb=com2 one debugger serves every vCPU (one gdb thread each).
    let debug: Option<&'static Debug> = config.gdb.then(|| {
        let layout = config
            .gdb_arch
            .unwrap_or_else(|| Layout::from_elf_class(guest_elf_class.unwrap_or(2)));
        &*Box::leak(Box::new(Debug::new(
            layout,
            debugger::Com2,
            processors.count,
            vcpu.mtf_works,
            config.tsc,
        )))
    });
    let cpu = Cpu::new(vcpu, vm, cpu.id, time);
    vm.smp.join(
        0,
        arch::lapic::id(),
        &*cpu.stats,
        vigil_core::smp::Presence::Running,
    );
    // The other processors set up their vCPUs now; the guest starts once all are in VMX.
    if processors.count > 1 {
        intel::ap::prepare(intel::ap::ApSetup {
            vm,
            guest: setup,
            bitmaps,
            tsc: cpu.time.v.clone(),
            mtf_works: cpu.vcpu.mtf_works,
            debugger: debug,
        });
        smp::release(processors.count, intel::ap::ap_main)?;
        log::info!(
            "{} vCPUs in VMX: the others wait for the guest's start-up IPIs",
            processors.count
        );
    }
    log::info!(
        "launching guest on vCPU {} at {:#x} (EPT, VPID {}, {})",
        cpu.id,
        setup.entry.rip,
        cpu.vcpu.vpid,
        if cpu.vcpu.unrestricted() {
            "unrestricted guest"
        } else {
            "paging guest"
        }
    );
    run_vcpu(cpu, debug)
}

fn log_pool_usage() {
    let ((heap_used, heap), (frames_used, frames)) = (mem::heap_usage(), mem::frame_usage());
    log::info!(
        "vigil pool in use: heap {} of {} KiB, {frames_used} of {frames} page frames",
        heap_used / 1024,
        heap / 1024
    );
}

/// The machine's debugger: one per machine, every vCPU joins it.
pub(crate) type Debug = vigil_core::debugger::exits::Shared<VmxVcpu, debugger::Com2>;

/// Runs one VMX vCPU on this processor until the run ends (`smp::run_vcpu`).
pub(crate) fn run_vcpu(cpu: Cpu<VmxVcpu>, debug: Option<&'static Debug>) -> ! {
    smp::run_vcpu(cpu, debug)
}

/// Takes the platform before the guest runs (`vigil_core::platform`): PCI scanned, SMRAM
/// locked, unmediated bus masters stopped; the guest's RAM, Vigil's memory, the FADT's facts
/// and two pages for DMA mediation as what it judges the guest's accesses by.
pub(crate) fn take_platform(map: &MemoryMap, acpi: Acpi) -> Result<Platform, String> {
    let (image, pool) = (mem::image_range(), mem::pool_range());
    // The ISA DMA controller addresses 24 bits (page register and address, Bochs
    // iodev/dma.cc, Intel 8237A): Vigil above 16 MiB is out of its reach.
    if image.0 < 1 << 24 {
        return Err(format!(
            "Vigil's memory at {:#x} is within the ISA DMA controller's 16 MiB: this machine has              too little RAM for Vigil to be out of its reach",
            image.0
        ));
    }
    let ram = map
        .ram()
        .map(|r| (r.start, r.end))
        .collect::<alloc::vec::Vec<_>>();
    let mut prd_pages = [None, None];
    for slot in &mut prd_pages {
        let phys = mem::alloc_frames(1).ok_or("out of memory for the DMA mediation pages")?;
        // SAFETY: a fresh frame of Vigil's pool, identity-mapped and below 4 GiB, that only the
        // platform layer uses from now on.
        *slot = Some(PrdPage {
            phys: phys as u32,
            bytes: unsafe { &mut *(phys as *mut [u8; 4096]) },
        });
    }
    let facts = Facts {
        memory: GuestMemory::new(ram, alloc::vec![image, pool]),
        acpi,
        // Bochs has no IOMMU; on a machine with one, VT-d would confine DMA instead.
        dma: DmaProtection::Mediated,
        prd_pages,
    };
    Ok(Platform::take(&mut host::HostCpu, facts))
}

/// Sizes Vigil's memory for this machine, moves the image to the top of RAM below 4 GiB with the
/// pool right after it (away from the boot information, the modules and the image's load
/// address), starts the heap and marks both ranges reserved in `map`. A machine too small for
/// Vigil and a guest ends the run here, saying how much is missing.
fn take_memory(
    map: &mut MemoryMap,
    info: u64,
    info_len: u64,
    modules: &guest::Modules,
    cpus: usize,
) {
    let mut edges = [0u64; 48];
    let (mut machine, n) = mem::machine_facts(&mut edges);
    machine.cpus = cpus as u32;
    let (vs, ve) = arch::boot::image_virt();
    let needs = vigil::placement::needs(map, ve - vs, &machine, &edges[..n]);
    let mut avoid = [(0u64, 0u64); 2 + guest::MAX_MODULES];
    avoid[0] = (info, info + info_len);
    avoid[1] = arch::boot::image_phys();
    for (slot, m) in avoid[2..].iter_mut().zip(modules.ranges()) {
        *slot = m;
    }
    let Some(base) = vigil::placement::place(map, needs.total(), &avoid) else {
        println!(
            "error: not enough RAM: Vigil needs {} KiB (image {} KiB, heap {} KiB, {} page frames) \
             in one piece of RAM between 1 MiB and 4 GiB, clear of the boot modules; this machine \
             has {} KiB of RAM in all",
            needs.total() / 1024,
            needs.image / 1024,
            needs.heap / 1024,
            needs.frames,
            map.ram_bytes() / 1024
        );
        end_run(Outcome::Failed("not enough RAM for Vigil"));
    };
    // SAFETY: only the boot CPU runs; [base, base + total) is RAM no one else uses (the
    // boot information and modules were avoided) and becomes Vigil's.
    unsafe { arch::boot::move_image(base) };
    let pool = base + needs.image.next_multiple_of(mem::PAGE);
    if let Err(why) = mem::init(map, pool, &needs) {
        early_failure(why);
    }
    log::debug!(
        "footprint for this machine: EPT leaves up to {:?}, MAXPHYADDR {}, {} page frames",
        machine.ept_leaf,
        machine.phys_bits,
        needs.frames
    );
}

fn level_filter(level: LogLevel) -> log::LevelFilter {
    match level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    }
}

/// `test-vmwrite=`: break the VMCS on purpose just before the first entry, to exercise the
/// VM-entry failure report.
fn apply_test_vmwrites(vcpu: &mut VmxVcpu, config: &Config) -> Result<(), String> {
    use vmx::vmcs::{Field, VmcsAccess};
    for &(encoding, value) in &config.test_vmwrites {
        let field = Field::from_encoding(encoding)
            .ok_or_else(|| format!("test-vmwrite: no VMCS field has encoding {encoding:#x}"))?;
        log::warn!(
            "test-vmwrite: {} ({encoding:#06x}) <- {value:#x}",
            field.name()
        );
        vcpu.vmcs
            .try_write(field, value)
            .map_err(|e| format!("test-vmwrite {}: {e}", field.name()))?;
    }
    Ok(())
}
