//! The GDB stub on COM2: the exit loop's side of the debugger (`vigil::debugger` holds the
//! protocol and the breakpoint logic, host-tested).
//!
//! - **Break-in.** With `gdb=com2` the VMX-preemption timer (SDM Vol. 3C 26.5.1) makes the guest
//!   exit periodically, and every such exit polls COM2, so gdb's Ctrl-C or a new client is seen
//!   without the guest's cooperation. Other exits poll too once a period has passed.
//! - **Stops.** A stop holds the guest inside the VM exit that caused it: Vigil reports the stop
//!   and serves gdb's packets until gdb resumes, detaches or kills. The exit's host time is then
//!   hidden from the guest by the same world-switch bookkeeping as every exit in `tsc=frozen`
//!   and `tsc=hide` (`vmm/switch.rs`); with `tsc=offset` the stop's length is taken out of the
//!   offset. With `tsc=native` the TSC is not offset, so stops show.
//! - **Single steps** use the monitor trap flag (SDM Vol. 3C 26.5.2) or, on processors without
//!   it, RFLAGS.TF with #DB in the exception bitmap. A step whose instruction Vigil emulated
//!   (an instruction exit answered with "advance") is complete at that exit.
//! - **Breakpoints and watchpoints**: see `vigil::debugger::state`; EPT violations on the pages
//!   it manages are stepped over with the page open, then matched.

pub mod cpu;
mod ept;

use crate::arch::port::inb;
use crate::exit::{Action, Exit, Stop};
use crate::serial::{Uart, COM2};
use crate::vmm::Vcpu;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};
use cpu::VcpuCpu;
use spin::Mutex;
use vigil::debugger::arch::Layout;
use vigil::debugger::session::{Event, Port, Session};
use vigil::debugger::state::StepOver;
use vigil::debugger::{ResumeKind, StopKind};
use vmx::caps::{PinBased, PrimaryProcBased};
use vmx::vmcs::{Field, VmcsAccess};

/// COM2 as the byte pipe to gdb.
#[derive(Clone)]
pub struct Com2;

impl Port for Com2 {
    fn put(&mut self, byte: u8) {
        Uart::new(COM2).write_byte(byte);
    }
}

fn read_byte() -> Option<u8> {
    // Line status register bit 0: data ready.
    (inb(COM2 + 5) & 1 != 0).then(|| inb(COM2))
}

struct Gdb {
    session: Session<VcpuCpu, Com2>,
    mtf: bool,
    /// gdb asked for one instruction.
    user_step: bool,
    /// An access to a managed page being stepped over.
    over: Option<StepOver>,
    /// RFLAGS.TF set by Vigil for a step, and the guest's own TF before it.
    tf_ours: bool,
    guest_tf: bool,
    last_poll: u64,
    period: u64,
}

// SAFETY: only the boot CPU exists and only its exit loop uses the debugger; the vCPU pointer
// and the session's shared mute flag never cross to another CPU.
unsafe impl Send for Gdb {}

static GDB: Mutex<Option<Gdb>> = Mutex::new(None);
/// Set once the stub exists, so that without a debugger the exit path does not even take the
/// lock.
static ACTIVE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn active() -> bool {
    ACTIVE.load(core::sync::atomic::Ordering::Relaxed)
}

/// Where a log line goes: plain text, an `O` packet (gdb waits for a stop), or a buffer
/// (gdb is attached and the guest stopped: console output is not allowed then).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Plain = 0,
    Packet = 1,
    Held = 2,
}

static ROUTE: AtomicU8 = AtomicU8::new(Route::Plain as u8);
static HELD_LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
const HELD_LOG_MAX: usize = 16 << 10;

pub fn route() -> Route {
    match ROUTE.load(Ordering::Relaxed) {
        1 => Route::Packet,
        2 => Route::Held,
        _ => Route::Plain,
    }
}

/// Keeps log text while the guest is stopped under gdb (dropped beyond 16 KiB).
pub fn hold_log(text: &str) {
    let mut buf = HELD_LOG.lock();
    let room = HELD_LOG_MAX.saturating_sub(buf.len());
    buf.extend_from_slice(&text.as_bytes()[..text.len().min(room)]);
}

const TF: u64 = 1 << 8;
/// Host ticks between polls of COM2 while the guest runs.
const POLL_TICKS: u64 = 1 << 21;

/// Sets up the stub (option `gdb=com2`): break-in polling, #BP and #DB exits.
pub fn init(vcpu: &mut Vcpu, layout: Layout) {
    let caps = vcpu.caps;
    let mut pin = vcpu.vmcs.read(Field::PinBasedControls);
    if caps.has_preemption_timer() {
        pin |= PinBased::VMX_PREEMPTION_TIMER.bits() as u64;
        vcpu.vmcs.write(Field::PinBasedControls, pin);
        // The timer counts down at the TSC rate divided by 2^rate (SDM Vol. 3C 26.5.1); it is
        // reloaded from this field at every VM entry.
        let value = POLL_TICKS >> caps.misc_preemption_timer_rate();
        vcpu.vmcs
            .write(Field::VmxPreemptionTimerValue, value.max(1));
    } else {
        log::warn!("gdb: no VMX-preemption timer: break-in is seen only at the guest's own exits");
    }
    let bitmap = vcpu.vmcs.read(Field::ExceptionBitmap) | (1 << 1) | (1 << 3);
    vcpu.vmcs.write(Field::ExceptionBitmap, bitmap);
    let mtf = caps.has_mtf() && mtf_works(vcpu);
    if caps.has_mtf() && !mtf {
        log::warn!(
            "gdb: the monitor trap flag is reported but did not trap: stepping with RFLAGS.TF"
        );
    }
    let mut session = Session::new(VcpuCpu(vcpu), layout, Com2);
    session.target.step_mechanism = if mtf {
        "monitor trap flag"
    } else if caps.has_mtf() {
        "RFLAGS.TF (the monitor trap flag is reported but did not trap)"
    } else {
        "RFLAGS.TF (this processor has no monitor trap flag)"
    };
    session.target.time_mode = match vcpu.config.tsc {
        vigil::config::TscMode::Frozen | vigil::config::TscMode::Hide => "frozen (hidden)",
        vigil::config::TscMode::Native => "running (tsc=native has no offset to hide it)",
        _ => "hidden through the TSC offset",
    };
    log::info!(
        "gdb stub on COM2 ({} registers, single-step by {}, EPT execute-only {})",
        layout.name(),
        if mtf { "MTF" } else { "TF" },
        if caps.ept_execute_only() {
            "yes"
        } else {
            "no: breakpoints visible to guest reads"
        }
    );
    ACTIVE.store(true, core::sync::atomic::Ordering::Relaxed);
    *GDB.lock() = Some(Gdb {
        session,
        mtf,
        user_step: false,
        over: None,
        tf_ours: false,
        guest_tf: false,
        last_poll: 0,
        period: POLL_TICKS,
    });
}

/// `gdb-wait=on`: waits for gdb to attach and continue before the first guest instruction.
pub fn wait_for_attach(vcpu: &mut Vcpu) -> Option<Stop> {
    let mut guard = GDB.lock();
    let g = guard.as_mut()?;
    log::info!("gdb: waiting for a client on COM2 before the guest's first instruction");
    match hold(g, vcpu, StopKind::Attach, false) {
        Action::Stop(s) => Some(s),
        _ => None,
    }
}

/// Before an exit's own handler: the debugger's exits (MTF, preemption timer, its #BP/#DB,
/// EPT violations on its pages). `None` lets the normal handler run.
pub fn intercept(vcpu: &mut Vcpu, exit: &Exit) -> Option<Action> {
    if !active() {
        return None;
    }
    let mut guard = GDB.lock();
    let g = guard.as_mut()?;
    g.session.target.cpu = VcpuCpu(vcpu);
    match *exit {
        Exit::PreemptionTimer => Some(poll(g, vcpu)),
        Exit::MonitorTrap => Some(step_done(g, vcpu)),
        Exit::Exception { vector: 3, .. }
            if g.session.target.state.is_sw_breakpoint(vcpu.rip()) =>
        {
            Some(hold(g, vcpu, StopKind::SwBreak, true))
        }
        Exit::Exception { vector: 1, .. } => {
            // Exit qualification: B0-B3 in bits 0-3, BS in bit 14 (SDM Vol. 3C 28.2.1).
            let q = vcpu.exit_qualification;
            if q & (1 << 14) != 0 && g.tf_ours {
                return Some(step_done(g, vcpu));
            }
            let ours = (0..4).any(|s| q & (1 << s) != 0 && g.session.target.state.hw[s].is_some());
            ours.then(|| hold(g, vcpu, StopKind::HwBreak, true))
        }
        Exit::EptViolation {
            gpa,
            read,
            write,
            fetch,
            ..
        } if g.session.target.state.manages(gpa) => {
            let cpu = &mut g.session.target.cpu;
            let so = g
                .session
                .target
                .state
                .begin_step_over(cpu, gpa, read || fetch, write);
            g.over = Some(so);
            // The access may have been part of delivering an event (a frame pushed onto a
            // watched stack page): deliver it again, or it is lost.
            vcpu.reinject_idt_vectoring();
            arm_step(g, vcpu);
            Some(Action::Resume)
        }
        _ => None,
    }
}

/// After an exit's handler: a step whose instruction was emulated is complete; and COM2 is
/// polled once per period.
pub fn after(vcpu: &mut Vcpu, action: Action) -> Action {
    if !active() {
        return action;
    }
    let mut guard = GDB.lock();
    let Some(g) = guard.as_mut() else {
        return action;
    };
    g.session.target.cpu = VcpuCpu(vcpu);
    if action == Action::Advance && (g.user_step || g.over.is_some()) {
        vcpu.apply(action);
        return step_done(g, vcpu);
    }
    if matches!(action, Action::Stop(_)) {
        return action;
    }
    let now = crate::arch::regs::rdtsc();
    if now.wrapping_sub(g.last_poll) > g.period {
        if let Action::Stop(s) = poll(g, vcpu) {
            return Action::Stop(s);
        }
    }
    action
}

/// Whether the monitor trap flag really traps: one `nop; cpuid` run at the calibration
/// scratch bytes (guest RAM in the boot data page that nothing else uses) must exit with MTF
/// after the NOP, not at the CPUID. Emulators may report the control without implementing it.
fn mtf_works(vcpu: &mut Vcpu) -> bool {
    use vigil::loader::GuestMemory;
    let scratch = crate::guest::calibration_scratch();
    if crate::vmm::guest_mem::Loader
        .write(scratch, &[0x90, 0x0F, 0xA2])
        .is_err()
    {
        return false;
    }
    let (rip, regs, hide) = (vcpu.rip(), vcpu.regs, vcpu.regs.hide);
    let primary = vcpu.vmcs.read(Field::PrimaryProcBasedControls);
    let mtf = PrimaryProcBased::MONITOR_TRAP_FLAG.bits() as u64;
    vcpu.vmcs
        .write(Field::PrimaryProcBasedControls, primary | mtf);
    vcpu.regs.hide = 0;
    vcpu.set_rip(scratch);
    let exit = vcpu.enter();
    let stopped_at = vcpu.rip();
    vcpu.vmcs.write(Field::PrimaryProcBasedControls, primary);
    // Keep the launch state (the VMCS is launched now), put everything else back.
    vcpu.regs = crate::vmm::switch::GuestRegs {
        launched: vcpu.regs.launched,
        exit_tsc: vcpu.regs.exit_tsc,
        hide,
        ..regs
    };
    vcpu.set_rip(rip);
    matches!(exit, Ok(Exit::MonitorTrap)) && stopped_at == scratch + 1
}

fn arm_step(g: &mut Gdb, vcpu: &mut Vcpu) {
    if g.mtf {
        let p = vcpu.vmcs.read(Field::PrimaryProcBasedControls);
        vcpu.vmcs.write(
            Field::PrimaryProcBasedControls,
            p | PrimaryProcBased::MONITOR_TRAP_FLAG.bits() as u64,
        );
    } else if !g.tf_ours {
        let flags = vcpu.rflags();
        g.guest_tf = flags & TF != 0;
        g.tf_ours = true;
        vcpu.vmcs.write(Field::GuestRflags, flags | TF);
    }
}

fn disarm_step(g: &mut Gdb, vcpu: &mut Vcpu) {
    let p = vcpu.vmcs.read(Field::PrimaryProcBasedControls);
    vcpu.vmcs.write(
        Field::PrimaryProcBasedControls,
        p & !(PrimaryProcBased::MONITOR_TRAP_FLAG.bits() as u64),
    );
    if g.tf_ours {
        let flags = vcpu.rflags() & !TF;
        vcpu.vmcs
            .write(Field::GuestRflags, flags | if g.guest_tf { TF } else { 0 });
        g.tf_ours = false;
    }
}

/// One instruction retired under a single step.
fn step_done(g: &mut Gdb, vcpu: &mut Vcpu) -> Action {
    disarm_step(g, vcpu);
    let mut hit = None;
    if let Some(so) = g.over.take() {
        let cpu = &mut g.session.target.cpu;
        hit = g.session.target.state.finish_step_over(cpu, &so);
    }
    if let Some(h) = hit {
        g.user_step = false;
        return hold(
            g,
            vcpu,
            StopKind::Watch {
                kind: h.kind,
                addr: h.gva,
            },
            true,
        );
    }
    if core::mem::take(&mut g.user_step) {
        return hold(g, vcpu, StopKind::Step, true);
    }
    Action::Resume
}

/// Reads what gdb sent while the guest runs.
fn poll(g: &mut Gdb, vcpu: &mut Vcpu) -> Action {
    g.last_poll = crate::arch::regs::rdtsc();
    while let Some(byte) = read_byte() {
        match g.session.feed(byte) {
            Event::Hold(kind) => return hold(g, vcpu, kind, false),
            Event::Kill => return killed(),
            Event::Resume(kind) => resume(g, vcpu, kind),
            Event::Detach | Event::None => {}
        }
    }
    Action::Resume
}

fn killed() -> Action {
    log::info!("gdb: killed the guest");
    Action::Stop(Stop::Failed("killed by the debugger"))
}

fn resume(g: &mut Gdb, vcpu: &mut Vcpu, kind: ResumeKind) {
    if kind == ResumeKind::Step {
        g.user_step = true;
        arm_step(g, vcpu);
    }
}

/// Holds the guest until gdb resumes it (reporting the stop first if `report`).
fn hold(g: &mut Gdb, vcpu: &mut Vcpu, kind: StopKind, report: bool) -> Action {
    if report && !g.session.report_stop(kind) {
        return Action::Resume;
    }
    ROUTE.store(Route::Held as u8, Ordering::Relaxed);
    let start = crate::arch::regs::rdtsc();
    let action = loop {
        let Some(byte) = read_byte() else {
            core::hint::spin_loop();
            continue;
        };
        match g.session.feed(byte) {
            Event::Resume(kind) => {
                resume(g, vcpu, kind);
                break Action::Resume;
            }
            Event::Detach => {
                disarm_step(g, vcpu);
                g.user_step = false;
                g.over = None;
                log::info!("gdb: detached; the guest runs on");
                break Action::Resume;
            }
            Event::Kill => break killed(),
            Event::Hold(_) | Event::None => {}
        }
    };
    let held = crate::arch::regs::rdtsc().wrapping_sub(start);
    // Frozen and hide take the whole exit out at the next entry; an offset alone needs the
    // stop taken out here (SDM Vol. 3C 26.3, TSC offsetting).
    let t = &mut vcpu.tsc.v;
    if t.mode.virtualized() && !t.hides_exits() {
        t.offset = t.offset.wrapping_sub(held);
        vcpu.sync_tsc();
    }
    let route = if g.session.gdb_waits_for_stop() {
        Route::Packet
    } else {
        Route::Plain
    };
    ROUTE.store(route as u8, Ordering::Relaxed);
    let text = core::mem::take(&mut *HELD_LOG.lock());
    if !text.is_empty() {
        let mut port = Com2;
        if route == Route::Packet {
            vigil::debugger::console::o_packets(&text, &mut |b| port.put(b));
        } else {
            text.iter().for_each(|&b| port.put(b));
        }
    }
    action
}

/// The ELF class (EI_CLASS) of the first ELF boot module, read before any module is loaded
/// (loading may overwrite a module that overlaps its load range).
pub fn elf_class(ranges: impl Iterator<Item = (u64, u64)>) -> Option<u8> {
    ranges
        .filter(|(s, e)| e > s && e - s >= 5)
        .find_map(|(start, _)| {
            // SAFETY: modules lie in RAM GRUB reported; five bytes are read before anything
            // overwrites them.
            let ident = unsafe { core::slice::from_raw_parts(start as *const u8, 5) };
            (ident[..4] == *b"\x7fELF").then(|| ident[4])
        })
}

/// Starts the stub if the command line asks for it.
pub fn start_if_configured(vcpu: &mut Vcpu, elf_class: Option<u8>) {
    if vcpu.config.gdb {
        let layout = vcpu
            .config
            .gdb_arch
            .unwrap_or_else(|| Layout::from_elf_class(elf_class.unwrap_or(2)));
        init(vcpu, layout);
    }
}
