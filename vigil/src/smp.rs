//! Every processor under Vigil: the ones the MADT lists are brought into Vigil's long mode at
//! boot, before the guest runs, and each then becomes one vCPU of the guest, waiting in the
//! wait-for-SIPI state for the guest's own INIT and start-up IPIs, as on bare metal.
//!
//! 1. [`processors`]: the MADT's processors, the boot processor first (vCPU 0), the others in
//!    table order. Every processor the guest could ever start (enabled or online capable) is
//!    brought up: one left out would run outside VMX with all of memory once the guest starts
//!    it. More than Vigil's per-CPU blocks hold, or one that does not come up, ends the run.
//! 2. [`start`]: the start-up code goes to a page of conventional memory (`arch::ap_boot`),
//!    whose old contents are put back afterwards, so the guest gets the page back as it was;
//!    each processor gets a stack from Vigil's pool. INIT to every application processor, a
//!    pause, a start-up IPI to each, and a second to any that did not report within a while
//!    (SDM Vol. 3A 9.4.4.1). Each runs [`ap_main`] in long mode on Vigil's page tables, takes
//!    its per-CPU block (GDT, TSS, GS base) and the IDT, and waits.
//! 3. [`release`]: once the boot processor has built what the vCPUs share (the guest's EPT,
//!    the bitmaps, the `Vm`), the application processors run the backend's vCPU set-up
//!    (VMXON, VMCS, VPID, the INIT state) and report ready; the boot processor waits for all
//!    of them before it enters the guest, so the guest never finds a processor outside VMX.

use crate::arch::ap_boot::{self, Row};
use crate::arch::{lapic, regs};
use crate::debugger::Com2;
use crate::percpu::MAX_CPUS;
use crate::power::{end_run, Outcome};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};
use vigil::madt;
use vigil::memmap::MemoryMap;
use vigil_core::cpu::{Cpu, Vm};
use vigil_core::debugger::exits::{Debugger, Shared};
use vigil_core::exit::Stop;
use vigil_core::run::Machine;
use vigil_core::vcpu::Vcpu;

/// The processors of this machine, vCPU 0 (this one) first.
pub struct Processors {
    pub apic_ids: [u32; MAX_CPUS],
    pub count: usize,
}

/// An application processor's stack.
const AP_STACK_FRAMES: u64 = vigil::placement::AP_STACK_FRAMES;

/// How long Vigil waits, in TSC ticks, after its INITs (the MP protocol asks for 10 ms; at
/// 1-4 GHz this is 2-8 ms, and in Bochs, where a tick is an instruction, long enough) and
/// for a started processor to report.
const INIT_PAUSE: u64 = 1 << 23;
const START_WAIT: u64 = 1 << 24;

#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Absent = 0,
    /// Running Vigil's code in long mode, waiting for [`release`].
    Alive = 1,
    /// Its vCPU is set up: it enters the guest (waiting for a start-up IPI) next.
    Ready = 2,
    /// Its vCPU could not be set up (it printed why).
    Failed = 3,
}

static STATE: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(State::Absent as u8) }; MAX_CPUS];
/// What the application processors run once released: the backend's vCPU set-up and exit loop.
static WORK: spin::Once<fn(usize) -> !> = spin::Once::new();

fn state(i: usize) -> State {
    match STATE[i].load(Ordering::SeqCst) {
        1 => State::Alive,
        2 => State::Ready,
        3 => State::Failed,
        _ => State::Absent,
    }
}

fn set_state(i: usize, s: State) {
    STATE[i].store(s as u8, Ordering::SeqCst);
}

/// Why the processors cannot all run under Vigil.
#[derive(Clone, Copy, Debug)]
pub enum ProcessorsError {
    Madt(madt::MadtError),
    TooMany(usize),
}

impl core::fmt::Display for ProcessorsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProcessorsError::Madt(e) => write!(f, "ACPI MADT: {e}"),
            ProcessorsError::TooMany(n) => write!(
                f,
                "this machine has {n} processors; Vigil runs at most {MAX_CPUS} (every \
                 processor the guest could start must be under Vigil)"
            ),
        }
    }
}

/// The machine's processors from the MADT at the RSDP's `rsdt`/`xsdt`; without a MADT, only
/// this one. Runs before the heap exists: nothing here allocates.
pub fn processors(rsdt: Option<u64>, xsdt: Option<u64>) -> Result<Processors, ProcessorsError> {
    let me = lapic::id();
    let mut p = Processors {
        apic_ids: [0; MAX_CPUS],
        count: 1,
    };
    p.apic_ids[0] = me;
    let Some(table) = crate::acpi::madt(rsdt, xsdt) else {
        log::warn!("no ACPI MADT: only the boot processor runs the guest");
        return Ok(p);
    };
    let listed = madt::processors(table).map_err(ProcessorsError::Madt)?;
    let startable = listed.iter().filter(|q| q.startable()).count() + listed.dropped;
    if startable > MAX_CPUS {
        return Err(ProcessorsError::TooMany(startable));
    }
    for q in listed.iter().filter(|q| q.startable() && q.apic_id != me) {
        p.apic_ids[p.count] = q.apic_id;
        p.count += 1;
    }
    Ok(p)
}

/// Starts every application processor into Vigil's long mode; returns once each runs
/// [`ap_main`] and waits for [`release`]. `avoid`: memory the start-up page must not take
/// (the boot information and modules).
pub fn start(p: &Processors, map: &MemoryMap, avoid: &[(u64, u64)]) -> Result<(), String> {
    if p.count == 1 {
        return Ok(());
    }
    let mut rows = Vec::new();
    for i in 1..p.count {
        let stack = crate::mem::alloc_frames(AP_STACK_FRAMES)
            .ok_or("out of memory for the application processors' stacks")?;
        rows.push(Row {
            apic_id: p.apic_ids[i],
            index: i as u32,
            stack_top: stack + AP_STACK_FRAMES * 4096,
        });
    }
    // Conventional memory, not page 0 (the real-mode interrupt table): a start-up vector is
    // the page number.
    let mut all = Vec::from(avoid);
    all.push((0, 0x1000));
    let page = map
        .find_top(4096, 4096, 0xA_0000, &all)
        .ok_or("no page of conventional memory for the processors' start-up code")?;
    let mut saved = alloc::vec![0u8; 4096];
    // SAFETY: RAM below 1 MiB, identity-mapped; read before anything is written to it.
    unsafe { core::ptr::copy_nonoverlapping(page as *const u8, saved.as_mut_ptr(), 4096) };
    // SAFETY: the page is lent to the start-up code until every processor reported.
    unsafe { ap_boot::install(page, regs::cr3(), ap_main as *const () as u64, &rows) };

    for r in &rows {
        lapic::send(lapic::ICR_INIT_ASSERT, r.apic_id);
    }
    pause(INIT_PAUSE);
    let vector = (page >> 12) as u32;
    let mut missing: Vec<&Row> = rows.iter().collect();
    for attempt in 0..2 {
        for r in &missing {
            lapic::send(lapic::ICR_STARTUP | vector, r.apic_id);
        }
        let until = regs::rdtsc() + START_WAIT * (attempt + 1);
        while regs::rdtsc() < until
            && missing
                .iter()
                .any(|r| state(r.index as usize) == State::Absent)
        {
            core::hint::spin_loop();
        }
        missing.retain(|r| state(r.index as usize) == State::Absent);
        if missing.is_empty() {
            break;
        }
    }
    // SAFETY: as above; every started processor has left the page (it reported from its own
    // stack, in long mode).
    unsafe { core::ptr::copy_nonoverlapping(saved.as_ptr(), page as *mut u8, 4096) };
    if let Some(r) = missing.first() {
        return Err(format!(
            "the processor with APIC ID {} did not start (INIT and two start-up IPIs, vector \
             {vector:#x}); the guest would start it outside VMX",
            r.apic_id
        ));
    }
    log::info!(
        "processors: {} (APIC IDs {:?}); the application processors run Vigil's code, started \
         from page {page:#x} (given back to the guest as it was)",
        p.count,
        &p.apic_ids[..p.count]
    );
    Ok(())
}

fn pause(ticks: u64) {
    let until = regs::rdtsc() + ticks;
    while regs::rdtsc() < until {
        core::hint::spin_loop();
    }
}

/// Lets every application processor run `work` (the backend's vCPU set-up and exit loop) and
/// waits until each is ready to enter the guest, or says why it cannot.
pub fn release(count: usize, work: fn(usize) -> !) -> Result<(), String> {
    WORK.call_once(|| work);
    for i in 1..count {
        loop {
            match state(i) {
                State::Ready => break,
                State::Failed => {
                    return Err(format!("vCPU {i} could not be set up (see above)"));
                }
                _ => core::hint::spin_loop(),
            }
        }
    }
    Ok(())
}

/// Called by the backend on an application processor once its vCPU is set up (or failed).
pub fn report_ready(index: usize, ok: bool) {
    set_state(index, if ok { State::Ready } else { State::Failed });
}

/// The first Rust code of an application processor, from the start-up code with its vCPU
/// number.
extern "C" fn ap_main(index: u32) -> ! {
    let index = index as usize;
    crate::percpu::init(index);
    crate::arch::idt::load();
    set_state(index, State::Alive);
    let work = loop {
        if let Some(w) = WORK.get() {
            break *w;
        }
        core::hint::spin_loop();
    };
    work(index)
}

/// Stops this processor for good (the run is over, or its vCPU cannot run).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: halting with interrupts off stops this processor; Vigil ends the run on
        // another one.
        unsafe { core::arch::asm!("cli", "hlt") };
    }
}

/// Runs one vCPU's exit loop on this processor until the run ends, under the machine's
/// debugger if it has one; the vCPU whose guest stops the machine ends the run for all
/// ([`finish`]). Any backend's vCPU.
pub fn run_vcpu<V: Vcpu + 'static>(cpu: Cpu<V>, debug: Option<&'static Shared<V, Com2>>) -> ! {
    let vm = cpu.vm;
    let id = cpu.id as usize;
    let mut machine: Machine<V, Com2> = match debug {
        Some(shared) => Machine::Debugged(Box::new(Debugger::join(cpu, shared))),
        None => Machine::Plain(cpu),
    };
    let stop = vigil_core::run::run(&mut machine);
    finish(vm, id, stop)
}

/// The end of the run, on the vCPU that stopped: the first to stop claims it, every other vCPU
/// parks at its next exit, and the statistics of all are printed before the machine is turned
/// off. A vCPU that stopped after another claimed the end only halts.
fn finish(vm: &'static Vm, me: usize, stop: Stop) -> ! {
    if stop == Stop::Elsewhere || !vm.smp.claim_end(me) {
        halt_forever();
    }
    // Each vCPU exits at least every `POLL_TICKS` of guest time: a few hundred polls is ample.
    let until = regs::rdtsc() + (vigil_core::smp::POLL_TICKS << 8);
    if !vm.smp.wait_quiet(me, || regs::rdtsc() > until) {
        log::warn!("not every vCPU stopped: their statistics may still have been moving");
    }
    print_statistics(vm);
    end_run(match stop {
        Stop::PowerOff => Outcome::Ok,
        Stop::Reset => Outcome::Reset,
        Stop::Failed(why) => Outcome::Failed(why),
        Stop::Elsewhere => unreachable!("handled above"),
    })
}

/// The exit statistics of every vCPU: by reason over all of them, and a row per vCPU.
fn print_statistics(vm: &Vm) {
    let all: Vec<_> = vm.smp.stats().collect();
    let mut table = String::new();
    let _ = vigil_core::stats::write_tables(&all, &mut table, &vigil_core::exit::kind_name);
    crate::print!("{table}");
    let (nmis, by_handler) = crate::intel::nmi::counts();
    if nmis > 0 {
        crate::println!(
            "NMIs that arrived while Vigil ran: {nmis}, all delivered to the guest ({by_handler} \
             injected as they arrived, the rest at the next entry)"
        );
    }
}
