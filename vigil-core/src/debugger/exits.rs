//! The debugger's side of the exit loop: its own exits, its stops, and the link to gdb.
//!
//! - **Break-in.** A periodic exit (VMX: the preemption timer, SDM Vol. 3C 26.5.1) polls the
//!   link, so gdb's Ctrl-C or a new client is seen without the guest's cooperation. Other exits
//!   poll too once a period has passed.
//! - **Stops.** A stop holds the guest inside the exit that caused it: Vigil reports the stop
//!   and serves gdb's packets until gdb resumes, detaches or kills. The exit's host time is then
//!   hidden from the guest like every exit in `tsc=frozen` and `tsc=hide`; with `tsc=offset` the
//!   stop's length is taken out of the offset (`Time::held`). With `tsc=native` stops show.
//! - **Single steps** use the backend's per-instruction exit (VMX's monitor trap flag, SDM Vol.
//!   3C 26.5.2) or, without one, RFLAGS.TF with #DB intercepted. A step whose instruction Vigil
//!   emulated (an instruction exit answered with "advance") is complete at that exit.
//! - **Breakpoints and watchpoints**: see [`super::state`]; nested page faults on the pages it
//!   manages are stepped over with the page open, then matched.
//!
//! The debugger owns the vCPU while it exists ([`Debugger::cpu`]): its target is the [`Cpu`]
//! itself, which implements [`super::GuestCpu`] (`vcpu.rs`).

use super::arch::Layout;
use super::session::{Event, Port, Session};
use super::state::StepOver;
use super::{ResumeKind, StopKind};
use crate::config::TscMode;
use crate::cpu::Cpu;
use crate::exit::{Action, Exit, Stop};
use crate::vcpu::{Host, Vcpu};
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
    /// Where Vigil's log lines go from now on (text kept while held goes out then).
    fn set_route(&mut self, route: Route);
}

/// Host ticks between polls of the link while the guest runs.
pub const POLL_TICKS: u64 = 1 << 21;

pub struct Debugger<V: Vcpu, L: Link> {
    session: Session<Cpu<V>, L>,
    link: L,
    /// Steps use the backend's per-instruction exit.
    step_trap: bool,
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

impl<V: Vcpu, L: Link> Debugger<V, L> {
    /// Takes over the vCPU: break-in polling, #BP and #DB intercepted.
    pub fn new(mut cpu: Cpu<V>, layout: Layout, link: L) -> Self {
        let polled = cpu.vcpu.set_poll_timer(Some(POLL_TICKS));
        if !polled {
            log::warn!("gdb: no periodic exit: break-in is seen only at the guest's own exits");
        }
        cpu.vcpu.intercept_exception(BP, true);
        cpu.vcpu.intercept_exception(DB, true);
        let step_trap = cpu.vcpu.has_step_trap();
        let exec_only = cpu.vcpu.exec_only_pages();
        let time_mode = match cpu.config().tsc {
            TscMode::Frozen | TscMode::Hide => "frozen (hidden)",
            TscMode::Native => "running (tsc=native has no offset to hide it)",
            _ => "hidden through the TSC offset",
        };
        let mut session = Session::new(cpu, layout, link.clone());
        session.target.step_mechanism = if step_trap {
            "monitor trap flag"
        } else {
            "RFLAGS.TF (no working monitor trap flag)"
        };
        session.target.time_mode = time_mode;
        log::info!(
            "gdb stub on COM2 ({} registers, single-step by {}, execute-only pages {})",
            layout.name(),
            if step_trap { "MTF" } else { "TF" },
            if exec_only {
                "yes"
            } else {
                "no: pages with breakpoints are closed and each access stepped over"
            }
        );
        Debugger {
            session,
            link,
            step_trap,
            user_step: false,
            over: None,
            tf_ours: false,
            guest_tf: false,
            last_poll: 0,
            period: POLL_TICKS,
        }
    }

    /// The vCPU being debugged.
    pub fn cpu(&mut self) -> &mut Cpu<V> {
        &mut self.session.target.cpu
    }

    /// Gives the vCPU back (the run is over).
    pub fn into_cpu(self) -> Cpu<V> {
        self.session.into_target().cpu
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
            None => crate::exit::dispatch(self.cpu(), exit),
        };
        self.after(action)
    }

    fn intercept(&mut self, exit: &Exit) -> Option<Action> {
        match *exit {
            Exit::Timer => Some(self.poll()),
            Exit::Step => Some(self.step_done()),
            Exit::Exception { event, .. }
                if event.vector == BP
                    && self
                        .session
                        .target
                        .state
                        .is_sw_breakpoint(self.session.target.cpu.vcpu.rip()) =>
            {
                Some(self.hold(StopKind::SwBreak, true))
            }
            Exit::Exception { event, info } if event.vector == DB => {
                // The causes: B0-B3 and BS (SDM Vol. 3C 28.2.1).
                if info & DR6_BS != 0 && self.tf_ours {
                    return Some(self.step_done());
                }
                let hw = self.session.target.state.hw;
                let ours = (0..4).any(|s| info & DR6_B0_B3 & (1 << s) != 0 && hw[s].is_some());
                ours.then(|| self.hold(StopKind::HwBreak, true))
            }
            // A closed page with breakpoints (no execute-only pages): fetching the instruction
            // at a breakpoint's address is hitting it, before anything of it runs.
            Exit::NestedFault(f)
                if f.fetch
                    && self.session.target.state.manages(f.gpa)
                    && self
                        .session
                        .target
                        .state
                        .is_sw_breakpoint(self.session.target.cpu.vcpu.rip()) =>
            {
                Some(self.hold(StopKind::SwBreak, true))
            }
            Exit::NestedFault(f) if self.session.target.state.manages(f.gpa) => {
                let target = &mut self.session.target;
                let so = target.state.begin_step_over(
                    &mut target.cpu,
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
            crate::exit::complete::complete(self.cpu(), Action::Advance);
            return self.step_done();
        }
        if matches!(action, Action::Stop(_)) {
            return action;
        }
        let now = self.cpu().vcpu.host().rdtsc();
        if now.wrapping_sub(self.last_poll) > self.period {
            if let Action::Stop(s) = self.poll() {
                return Action::Stop(s);
            }
        }
        action
    }

    fn arm_step(&mut self) {
        if self.step_trap {
            self.cpu().vcpu.set_step_trap(true);
        } else if !self.tf_ours {
            let vcpu = &mut self.session.target.cpu.vcpu;
            let flags = vcpu.rflags();
            self.guest_tf = flags & RFLAGS_TF != 0;
            self.tf_ours = true;
            vcpu.set_rflags(flags | RFLAGS_TF);
        }
    }

    fn disarm_step(&mut self) {
        let (tf_ours, guest_tf) = (self.tf_ours, self.guest_tf);
        let vcpu = &mut self.session.target.cpu.vcpu;
        if self.step_trap {
            vcpu.set_step_trap(false);
        }
        if tf_ours {
            let flags = vcpu.rflags() & !RFLAGS_TF;
            vcpu.set_rflags(flags | if guest_tf { RFLAGS_TF } else { 0 });
            self.tf_ours = false;
        }
    }

    /// One instruction retired under a single step.
    fn step_done(&mut self) -> Action {
        self.disarm_step();
        let mut hit = None;
        if let Some(so) = self.over.take() {
            let target = &mut self.session.target;
            hit = target.state.finish_step_over(&mut target.cpu, &so);
        }
        if let Some(h) = hit {
            self.user_step = false;
            return self.hold(
                StopKind::Watch {
                    kind: h.kind,
                    addr: h.gva,
                },
                true,
            );
        }
        if core::mem::take(&mut self.user_step) {
            return self.hold(StopKind::Step, true);
        }
        Action::Resume
    }

    /// Reads what gdb sent while the guest runs.
    fn poll(&mut self) -> Action {
        self.last_poll = self.cpu().vcpu.host().rdtsc();
        while let Some(byte) = self.link.read() {
            match self.session.feed(byte) {
                Event::Hold(kind) => return self.hold(kind, false),
                Event::Kill => return killed(),
                Event::Resume(kind) => self.resume(kind),
                Event::Detach | Event::None => {}
            }
        }
        Action::Resume
    }

    fn resume(&mut self, kind: ResumeKind) {
        if kind == ResumeKind::Step {
            self.user_step = true;
            self.arm_step();
        }
    }

    /// Holds the guest until gdb resumes it (reporting the stop first if `report`).
    fn hold(&mut self, kind: StopKind, report: bool) -> Action {
        if report && !self.session.report_stop(kind) {
            return Action::Resume;
        }
        self.link.set_route(Route::Held);
        let start = self.cpu().vcpu.host().rdtsc();
        let action = loop {
            let Some(byte) = self.link.read() else {
                core::hint::spin_loop();
                continue;
            };
            match self.session.feed(byte) {
                Event::Resume(kind) => {
                    self.resume(kind);
                    break Action::Resume;
                }
                Event::Detach => {
                    self.disarm_step();
                    self.user_step = false;
                    self.over = None;
                    log::info!("gdb: detached; the guest runs on");
                    break Action::Resume;
                }
                Event::Kill => break killed(),
                Event::Hold(_) | Event::None => {}
            }
        };
        let cpu = self.cpu();
        let held = cpu.vcpu.host().rdtsc().wrapping_sub(start);
        cpu.time.held(&mut cpu.vcpu, held);
        let route = if self.session.gdb_waits_for_stop() {
            Route::Packet
        } else {
            Route::Plain
        };
        self.link.set_route(route);
        action
    }
}

fn killed() -> Action {
    log::info!("gdb: killed the guest");
    Action::Stop(Stop::Failed("killed by the debugger"))
}
