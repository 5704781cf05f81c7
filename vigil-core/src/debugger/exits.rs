//! The debugger's side of the exit loop: its own exits, its stops, and the link to gdb.
//!
//! - **All-stop.** gdb sees one thread per vCPU (`super::threads`), and a stop stops them all:
//!   the vCPU that stops holds the machine (`crate::smp`), every other vCPU parks at its next
//!   exit, and only then is the stop reported. Each vCPU exits at least every [`POLL_TICKS`]
//!   (VMX: the preemption timer, SDM Vol. 3C 26.5.1), so the others join within that much guest
//!   time; no interrupt is sent to a processor, the local APICs being the guest's. The holding
//!   vCPU then serves gdb until it resumes, detaches or kills. A vCPU whose own stop comes
//!   while another holds keeps it and reports it once released (a breakpoint simply hits
//!   again).
//! - **Break-in.** The periodic exit also looks at the link: when gdb has sent something (a
//!   Ctrl-C, a new client), that vCPU holds the machine and reads it.
//! - **Single steps** use the backend's per-instruction exit (VMX's monitor trap flag, SDM Vol.
//!   3C 26.5.2) or, without one, RFLAGS.TF with #DB intercepted. A step whose instruction Vigil
//!   emulated (an instruction exit answered with "advance") is complete at that exit. gdb steps
//!   one vCPU at a time and the others stay stopped: the holder hands the machine to the vCPU
//!   that steps, which reports the step.
//! - **Breakpoints and watchpoints**: see [`super::state`]; nested page faults on the pages it
//!   manages are stepped over with the page open, with every other vCPU parked meanwhile (the
//!   nested tables are shared: no vCPU may run on the open page).
//! - **Time.** A stop is hidden from the guest's TSC like an exit in `tsc=frozen`/`hide`; with
//!   `tsc=offset` every vCPU takes out of its offset the same time: the span during which all of
//!   them were stopped, so their clocks stay one clock (`Time::held`). With `tsc=native` stops
//!   show.

use super::arch::Layout;
use super::session::{Event, Port, Session};
use super::state::StepOver;
use super::threads::{Mailboxes, Release, Snapshot, VcpuThreads};
use super::{GuestCpu, ResumeKind, StopKind};
use crate::config::TscMode;
use crate::cpu::Cpu;
use crate::exit::{Action, Exit, Stop};
use crate::smp::Released;
use crate::vcpu::{Host, Vcpu};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use x86_arch::event::{BP, DB};
use x86_arch::regs::{DR6_B0_B3, DR6_BS, RFLAGS_TF};

/// Where Vigil's log lines go while a debugger is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Plain text (no client).
    Plain,
    /// Console-output packets (gdb waits for a stop and prints them).
    Packet,
    /// Kept until the guest runs again (gdb is attached and the guest stopped: console output
    /// is not allowed then).
    Held,
}

/// The byte pipe to gdb (COM2 in Vigil), and the console that shares it.
pub trait Link: Port {
    /// A byte from gdb, if one has arrived.
    fn read(&mut self) -> Option<u8>;
    /// Whether a byte from gdb waits, without taking it; any vCPU may ask at any time.
    fn ready(&self) -> bool;
    /// Where Vigil's log lines go from now on (text kept while held goes out then).
    fn set_route(&mut self, route: Route);
}

/// Host ticks between polls of the link while the guest runs.
pub const POLL_TICKS: u64 = crate::smp::POLL_TICKS;
/// With several vCPUs the poll is also how fast the others join a stop (and a step-over):
/// shorter, for an interactive debugger, at the cost of an exit per this many ticks.
pub const SMP_POLL_TICKS: u64 = 1 << 18;

/// No hardware breakpoint in this slot.
const NO_SLOT: u64 = u64::MAX;

/// What every vCPU's debugger shares. The session (gdb's protocol state, the breakpoints and
/// watchpoints) and the link are used only by the vCPU that holds the machine, so by one
/// processor at a time; the rest is atomic.
pub struct Shared<V: Vcpu + 'static, L: Link> {
    session: UnsafeCell<Session<VcpuThreads<V>, L>>,
    link: UnsafeCell<L>,
    boxes: &'static Mailboxes,
    /// Host ticks during which every vCPU was stopped by the debugger, summed. Each vCPU takes
    /// what it has not taken yet out of its TSC offset before it runs again.
    held_total: AtomicU64,
    /// The hardware breakpoints (addresses; [`NO_SLOT`] for none) and their generation.
    hw: [AtomicU64; 4],
    hw_generation: AtomicU64,
    /// Software breakpoints plus pages the debugger manages: when 0, a #BP or a nested page
    /// fault is the guest's own and nobody needs to stop.
    armed: AtomicU32,
}

// SAFETY: the session and the link are used only by the vCPU holding the machine (one at a
// time, `crate::smp`'s hold is the lock; `Link::ready` is documented as safe from anywhere);
// everything else is atomic or immutable.
unsafe impl<V: Vcpu + 'static, L: Link> Sync for Shared<V, L> {}

impl<V: Vcpu + 'static, L: Link> Shared<V, L> {
    /// The debugger of a machine of `count` vCPUs, on `link`, showing registers in `layout`.
    /// `step_trap`: the vCPUs single-step by the backend's step exit (else RFLAGS.TF).
    pub fn new(layout: Layout, link: L, count: usize, step_trap: bool, tsc: TscMode) -> Self {
        let boxes: &'static Mailboxes = alloc::boxed::Box::leak(alloc::boxed::Box::default());
        let mut session = Session::new(VcpuThreads::new(count, boxes), layout, link.clone());
        session.target.step_mechanism = if step_trap {
            "monitor trap flag"
        } else {
            "RFLAGS.TF (no working monitor trap flag)"
        };
        session.target.time_mode = match tsc {
            TscMode::Frozen | TscMode::Hide(_) => "frozen (hidden)",
            TscMode::Native => "running (tsc=native has no offset to hide it)",
            _ => "hidden through the TSC offset",
        };
        Shared {
            session: UnsafeCell::new(session),
            link: UnsafeCell::new(link),
            boxes,
            held_total: AtomicU64::new(0),
            hw: [const { AtomicU64::new(NO_SLOT) }; 4],
            hw_generation: AtomicU64::new(0),
            armed: AtomicU32::new(0),
        }
    }

    /// Whether a byte from gdb waits.
    fn ready(&self) -> bool {
        // SAFETY: `Link::ready` may be called from any vCPU at any time.
        unsafe { (*self.link.get()).ready() }
    }
}

pub struct Debugger<V: Vcpu + 'static, L: Link + 'static> {
    cpu: Cpu<V>,
    shared: &'static Shared<V, L>,
    /// Steps use the backend's per-instruction exit.
    step_trap: bool,
    /// gdb asked for one instruction of this vCPU.
    user_step: bool,
    /// An access to a managed page being stepped over.
    over: Option<StepOver>,
    /// RFLAGS.TF set by Vigil for a step, and the guest's own TF before it.
    tf_ours: bool,
    guest_tf: bool,
    last_poll: u64,
    period: u64,
    /// A stop that came while another vCPU held the machine: reported once released.
    pending: Option<StopKind>,
    /// What of `Shared::held_total` and the hardware breakpoints this vCPU has taken.
    held_seen: u64,
    hw_seen: u64,
}

impl<V: Vcpu + 'static, L: Link + 'static> Debugger<V, L> {
    /// A machine of one vCPU under the debugger.
    pub fn new(cpu: Cpu<V>, layout: Layout, link: L) -> Self {
        let step_trap = cpu.vcpu.has_step_trap();
        let tsc = cpu.config().tsc;
        let shared = alloc::boxed::Box::leak(alloc::boxed::Box::new(Shared::new(
            layout, link, 1, step_trap, tsc,
        )));
        Self::join(cpu, shared)
    }

    /// vCPU `cpu` comes under the machine's debugger `shared`: break-in polling, #BP and #DB
    /// intercepted. Call on the vCPU's own processor.
    pub fn join(mut cpu: Cpu<V>, shared: &'static Shared<V, L>) -> Self {
        let period = if cpu.vm.smp.multi() {
            SMP_POLL_TICKS
        } else {
            POLL_TICKS
        };
        let polled = cpu.vcpu.set_poll_timer(Some(period));
        if !polled {
            log::warn!("gdb: no periodic exit: break-in is seen only at the guest's own exits");
        }
        cpu.vcpu.intercept_exception(BP, true);
        cpu.vcpu.intercept_exception(DB, true);
        let step_trap = cpu.vcpu.has_step_trap();
        if cpu.is_bsp() {
            let exec_only = cpu.vcpu.exec_only_pages();
            // SAFETY: before the guest runs, the boot vCPU alone uses the session.
            let layout = unsafe { (*shared.session.get()).target.layout };
            log::info!(
                "gdb stub on COM2 ({} registers, {} vCPU thread(s), single-step by {}, \
                 execute-only pages {})",
                layout.name(),
                cpu.vm.smp.count(),
                if step_trap { "MTF" } else { "TF" },
                if exec_only {
                    "yes"
                } else {
                    "no: pages with breakpoints are closed and each access stepped over"
                }
            );
        }
        Debugger {
            cpu,
            shared,
            step_trap,
            user_step: false,
            over: None,
            tf_ours: false,
            guest_tf: false,
            last_poll: 0,
            period,
            pending: None,
            held_seen: 0,
            hw_seen: 0,
        }
    }

    /// The shared debugger this vCPU belongs to.
    pub fn shared(&self) -> &'static Shared<V, L> {
        self.shared
    }

    /// The vCPU being debugged.
    pub fn cpu(&mut self) -> &mut Cpu<V> {
        &mut self.cpu
    }

    /// Gives the vCPU back (the run is over).
    pub fn into_cpu(self) -> Cpu<V> {
        self.cpu
    }

    fn id(&self) -> usize {
        self.cpu.id as usize
    }

    /// The session and the link. Only while this vCPU holds the machine, and one use at a
    /// time (they are the machine's, not this vCPU's: the borrow is not tied to `self`).
    #[allow(clippy::mut_from_ref)]
    fn session(&self) -> (&'static mut Session<VcpuThreads<V>, L>, &'static mut L) {
        debug_assert_eq!(self.cpu.vm.smp.holder(), Some(self.id()));
        let shared: &'static Shared<V, L> = self.shared;
        // SAFETY: this vCPU holds the machine: no other processor uses them (`Shared`), and
        // this vCPU's callers do not keep two of these borrows alive at once.
        unsafe { (&mut *shared.session.get(), &mut *shared.link.get()) }
    }

    /// `gdb-wait=on`: waits for gdb to attach and continue before the first guest instruction.
    pub fn wait_for_attach(&mut self) -> Option<Stop> {
        log::info!("gdb: waiting for a client on COM2 before the guest's first instruction");
        match self.hold(StopKind::Attach, false) {
            Action::Stop(s) => Some(s),
            _ => None,
        }
    }

    /// One exit: the debugger's own (its step and poll exits, its #BP/#DB, nested page faults on
    /// its pages) are answered here; every other goes to its handler. Then a step whose
    /// instruction was emulated is complete, and the link is polled once per period.
    pub fn handle(&mut self, exit: &Exit) -> Action {
        let action = match self.intercept(exit) {
            Some(a) => a,
            None => crate::exit::dispatch(&mut self.cpu, exit),
        };
        self.after(action)
    }

    /// Whether the debugger has breakpoints or managed pages (else a #BP or a nested page fault
    /// is the guest's own).
    fn armed(&self) -> bool {
        self.shared.armed.load(Ordering::SeqCst) != 0
    }

    fn intercept(&mut self, exit: &Exit) -> Option<Action> {
        match *exit {
            Exit::Timer => Some(self.poll()),
            Exit::Step => Some(self.step_done()),
            Exit::Exception { event, .. } if event.vector == BP && self.armed() => {
                // The breakpoints are the session's: look under the hold.
                if !self.acquire() {
                    // Another vCPU holds the machine: the INT3 runs again once it lets go.
                    return Some(Action::Resume);
                }
                let rip = self.cpu.vcpu.rip();
                let (session, _) = self.session();
                if session.target.state.is_sw_breakpoint(rip) {
                    Some(self.serve(StopKind::SwBreak, true))
                } else {
                    self.let_go();
                    None
                }
            }
            Exit::Exception { event, info } if event.vector == DB => {
                // The causes: B0-B3 and BS (SDM Vol. 3C 28.2.1).
                if info & DR6_BS != 0 && self.tf_ours {
                    return Some(self.step_done());
                }
                let ours = (0..4).any(|s| {
                    info & DR6_B0_B3 & (1 << s) != 0
                        && self.shared.hw[s].load(Ordering::SeqCst) != NO_SLOT
                });
                // An instruction breakpoint is a fault: it hits again if this one waits.
                ours.then(|| self.hold(StopKind::HwBreak, true))
            }
            Exit::NestedFault(f) if self.armed() => {
                if !self.acquire() {
                    // The instruction runs again (and faults again) once the holder lets go.
                    return Some(Action::Resume);
                }
                let (session, _) = self.session();
                if !session.target.state.manages(f.gpa) {
                    self.let_go();
                    return None;
                }
                // A closed page with breakpoints (no execute-only pages): fetching the
                // instruction at a breakpoint's address is hitting it, before any of it runs.
                if f.fetch && session.target.state.is_sw_breakpoint(self.cpu.vcpu.rip()) {
                    return Some(self.serve(StopKind::SwBreak, true));
                }
                // Every other vCPU stays parked until the step is over: the page is open in
                // the shared nested tables meanwhile.
                let so = session.target.state.begin_step_over(
                    &mut self.cpu,
                    f.gpa,
                    f.read || f.fetch,
                    f.write,
                );
                self.over = Some(so);
                // The access may have been part of delivering an event (a frame pushed onto a
                // watched stack page): the completion delivers it again, as after any exit
                // that interrupted an event.
                self.arm_step();
                Some(Action::Resume)
            }
            _ => None,
        }
    }

    fn after(&mut self, action: Action) -> Action {
        if action == Action::Advance && (self.user_step || self.over.is_some()) {
            // The emulated instruction is the step: retire it before reporting the stop (its
            // completion then has nothing left to do).
            self.disarm_step();
            crate::exit::complete::complete(&mut self.cpu, Action::Advance);
            return self.step_done();
        }
        if matches!(action, Action::Stop(_)) {
            return action;
        }
        let now = self.cpu.vcpu.host().rdtsc();
        if now.wrapping_sub(self.last_poll) > self.period {
            if let Action::Stop(s) = self.poll() {
                return Action::Stop(s);
            }
        }
        action
    }

    fn arm_step(&mut self) {
        if self.step_trap {
            self.cpu.vcpu.set_step_trap(true);
        } else if !self.tf_ours {
            let vcpu = &mut self.cpu.vcpu;
            let flags = vcpu.rflags();
            self.guest_tf = flags & RFLAGS_TF != 0;
            self.tf_ours = true;
            vcpu.set_rflags(flags | RFLAGS_TF);
        }
    }

    fn disarm_step(&mut self) {
        let vcpu = &mut self.cpu.vcpu;
        if self.step_trap {
            vcpu.set_step_trap(false);
        }
        if self.tf_ours {
            let flags = vcpu.rflags() & !RFLAGS_TF;
            vcpu.set_rflags(flags | if self.guest_tf { RFLAGS_TF } else { 0 });
            self.tf_ours = false;
        }
    }

    /// One instruction retired under a single step.
    fn step_done(&mut self) -> Action {
        self.disarm_step();
        if let Some(so) = self.over.take() {
            // This vCPU has held the machine since the step-over began.
            let (session, _) = self.session();
            let hit = session.target.state.finish_step_over(&mut self.cpu, &so);
            self.sync_armed();
            if let Some(h) = hit {
                self.user_step = false;
                return self.serve(
                    StopKind::Watch {
                        kind: h.kind,
                        addr: h.gva,
                    },
                    true,
                );
            }
            if !self.user_step {
                self.let_go();
            }
        }
        if core::mem::take(&mut self.user_step) {
            return self.hold(StopKind::Step, true);
        }
        Action::Resume
    }

    /// Reads what gdb sent while the guest runs: a Ctrl-C or a new client stops the machine.
    fn poll(&mut self) -> Action {
        self.last_poll = self.cpu.vcpu.host().rdtsc();
        if !self.shared.ready() || !self.acquire() {
            // Nothing from gdb, or another vCPU holds the machine and reads it.
            return Action::Resume;
        }
        let me = self.id();
        let start = self.cpu.vcpu.host().rdtsc();
        let (session, link) = self.session();
        session.target.cpu.enter(&mut self.cpu, me);
        let mut outcome = None;
        while let Some(byte) = link.read() {
            match session.feed(byte) {
                Event::Hold(kind) => {
                    outcome = Some(kind);
                    break;
                }
                Event::Kill => {
                    session.target.cpu.leave();
                    return killed();
                }
                // gdb resumed before it ever saw a stop (its first packets after an attach):
                // nothing to hold for.
                Event::Resume(kind) => {
                    session.target.cpu.leave();
                    return self.resume(kind, 0);
                }
                Event::Detach | Event::None => {}
            }
        }
        session.target.cpu.leave();
        match outcome {
            // The stop was reported by the session (Ctrl-C), or gdb just attached.
            Some(kind) => self.serve_since(kind, false, start),
            None => {
                self.let_go();
                Action::Resume
            }
        }
    }

    /// Makes this vCPU the holder and every other vCPU quiet; false if another vCPU holds the
    /// machine (this one then parks at its next entry).
    fn acquire(&mut self) -> bool {
        let me = self.id();
        let smp = &self.cpu.vm.smp;
        if smp.holder() != Some(me) && !smp.try_hold(me) {
            return false;
        }
        smp.wait_quiet(me, || false);
        true
    }

    /// Lets the other vCPUs run on, hiding nothing (the hold was Vigil's own business).
    fn let_go(&mut self) {
        self.cpu.vm.smp.release(self.id());
    }

    /// Stops the machine for `kind` and serves gdb until it resumes (reporting the stop first
    /// if `report`). If another vCPU holds the machine, a stop that would be lost (a step, a
    /// watchpoint hit) is kept and reported once this vCPU is released.
    fn hold(&mut self, kind: StopKind, report: bool) -> Action {
        if !self.acquire() {
            if report && matches!(kind, StopKind::Step | StopKind::Watch { .. }) {
                self.pending = Some(kind);
            }
            return Action::Resume;
        }
        self.serve(kind, report)
    }

    fn serve(&mut self, kind: StopKind, report: bool) -> Action {
        let start = self.cpu.vcpu.host().rdtsc();
        self.serve_since(kind, report, start)
    }

    /// Holding the machine since `start` (every other vCPU quiet): reports the stop and serves
    /// gdb's packets until it resumes, detaches or kills.
    fn serve_since(&mut self, kind: StopKind, report: bool, start: u64) -> Action {
        let me = self.id();
        self.take_hw();
        let (session, link) = self.session();
        session.target.cpu.enter(&mut self.cpu, me);
        if report && !session.report_stop(kind) {
            // No client waits for a stop: run on.
            session.target.cpu.leave();
            self.let_go();
            return Action::Resume;
        }
        link.set_route(Route::Held);
        let outcome = loop {
            let Some(byte) = link.read() else {
                core::hint::spin_loop();
                continue;
            };
            match session.feed(byte) {
                Event::Resume(kind) => break Ok(kind),
                Event::Detach => {
                    log::info!("gdb: detached; the guest runs on");
                    break Err(false);
                }
                Event::Kill => break Err(true),
                Event::Hold(_) | Event::None => {}
            }
        };
        let hw = (session.target.cpu.hw_generation, session.target.cpu.hw);
        session.target.cpu.leave();
        let route = if session.gdb_waits_for_stop() {
            Route::Packet
        } else {
            Route::Plain
        };
        link.set_route(route);
        self.publish_hw(hw);
        self.sync_armed();
        let held = self.cpu.vcpu.host().rdtsc().wrapping_sub(start);
        match outcome {
            Ok(kind) => self.resume(kind, held),
            Err(false) => {
                self.disarm_step();
                self.user_step = false;
                self.over = None;
                self.resume(ResumeKind::Continue, held)
            }
            Err(true) => killed(),
        }
    }

    /// gdb resumes the machine after a stop that lasted `held` host ticks: every vCPU takes it
    /// out of its time, then all run on, or one single-steps while the others stay stopped.
    fn resume(&mut self, kind: ResumeKind, held: u64) -> Action {
        let me = self.id();
        self.shared.held_total.fetch_add(held, Ordering::SeqCst);
        self.take_held();
        match kind {
            ResumeKind::Continue => self.let_go(),
            ResumeKind::Step(i) if i == me || i >= self.cpu.vm.smp.count() => {
                // This vCPU steps and keeps the machine.
                self.user_step = true;
                self.arm_step();
            }
            ResumeKind::Step(i) => {
                // vCPU i steps and reports; this one parks at its next entry.
                self.shared.boxes.0[i].set_release(Release::Step);
                self.cpu.vm.smp.hand_over(me, i);
            }
        }
        Action::Resume
    }

    /// Takes out of this vCPU's TSC what the debugger held since it last looked.
    fn take_held(&mut self) {
        let total = self.shared.held_total.load(Ordering::SeqCst);
        let held = total.wrapping_sub(self.held_seen);
        self.held_seen = total;
        if held != 0 {
            let cpu = &mut self.cpu;
            cpu.time.held(&mut cpu.vcpu, held);
        }
    }

    /// Publishes the hardware breakpoint slots the session changed, for the other vCPUs.
    fn publish_hw(&mut self, (generation, slots): (u64, [Option<u64>; 4])) {
        if generation == self.shared.hw_generation.load(Ordering::SeqCst) {
            return;
        }
        for (cell, slot) in self.shared.hw.iter().zip(slots) {
            cell.store(slot.unwrap_or(NO_SLOT), Ordering::SeqCst);
        }
        self.shared
            .hw_generation
            .store(generation, Ordering::SeqCst);
        // This vCPU's slots were set directly by the session.
        self.hw_seen = generation;
    }

    /// Applies hardware breakpoint slots another vCPU's session changed.
    fn take_hw(&mut self) {
        let generation = self.shared.hw_generation.load(Ordering::SeqCst);
        if generation == self.hw_seen {
            return;
        }
        self.hw_seen = generation;
        for slot in 0..4 {
            let addr = self.shared.hw[slot].load(Ordering::SeqCst);
            let use_ = (addr != NO_SLOT).then_some(super::HwSlot {
                addr,
                rw: 0,
                len: 0,
            });
            self.cpu.set_hw_slot(slot, use_);
        }
    }

    /// Records whether anything of the debugger's can make a #BP or a nested page fault ours.
    fn sync_armed(&mut self) {
        let (session, _) = self.session();
        let n = session.target.state.sw.len() + session.target.state.managed_pages();
        self.shared.armed.store(n as u32, Ordering::SeqCst);
    }

    /// Publishes what this vCPU shows the debugger while it waits for a start-up IPI.
    pub fn before_waiting(&mut self) {
        let me = self.id();
        self.shared.boxes.0[me].publish(Snapshot::of(&self.cpu, true));
    }

    /// Another vCPU holds the machine (or the run ended): park until released, then take
    /// what gdb changed for this vCPU (registers, hardware breakpoints, the held time), step if
    /// the holder handed the machine over for that, and report a stop that came meanwhile.
    pub fn meet(&mut self) -> Option<Stop> {
        let me = self.id();
        self.shared.boxes.0[me].publish(Snapshot::of(&self.cpu, false));
        if self.cpu.vm.smp.park(me) == Released::Ended {
            return Some(Stop::Elsewhere);
        }
        let (regs, release) = self.shared.boxes.0[me].take();
        if let Some(r) = regs {
            self.cpu.set_regs(&r);
        }
        self.take_hw();
        self.take_held();
        if release == Release::Step {
            // The holder handed the machine to this vCPU for one instruction.
            self.user_step = true;
            self.arm_step();
        } else if let Some(kind) = self.pending.take() {
            if let Action::Stop(s) = self.hold(kind, true) {
                return Some(s);
            }
        }
        None
    }
}

fn killed() -> Action {
    log::info!("gdb: killed the guest");
    Action::Stop(Stop::Failed("killed by the debugger"))
}
