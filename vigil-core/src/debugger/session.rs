//! One debugging connection: checked packets ([`Framer`]) into the `gdbstub` state machine,
//! its requests out as [`Event`]s for the exit loop.
//!
//! gdb retransmits a packet whose acknowledgement does not come within its remote timeout
//! (GDB manual, "Packet Acknowledgment"); on a slow or loaded machine Vigil's `+` can come late,
//! and the copy arrives after the original was already answered. Answering it again would put
//! every later reply one packet out of step with gdb. gdb sends nothing new before it has read
//! the reply to its packet and acknowledged it with `+`, so in acknowledgement mode a packet
//! identical to the last one, with no `+` from gdb since the last reply, is the retransmission:
//! it is acknowledged and not answered again. A packet repeated on purpose (a second `stepi`)
//! follows gdb's `+` and is answered as usual.
//!
//! `gdbstub` consumes its state machine on any error. The session then answers the packet with
//! an error reply and builds a new state machine in the same protocol state: no-ack mode is
//! replayed, and a target gdb believes running is put back into the running state, both with the
//! stub's own replies muted. So no input ends the session, and gdb sees an `E` reply.

use super::arch::Layout;
use super::framing::{packet, Frame, Framer, Reject, MAX_BODY};
use super::target::tid;
use super::target::{DebugTarget, Request};
use super::threads::Threads;
use super::{ResumeKind, StopKind};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::Cell;
use gdbstub::common::Signal;
use gdbstub::conn::Connection;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};

/// The byte pipe to gdb (COM2 in Vigil, a buffer in tests).
pub trait Port: Clone {
    fn put(&mut self, byte: u8);
}

/// The `gdbstub` connection: the port, with the replies switched off while the session replays
/// packets into a rebuilt state machine.
#[derive(Clone)]
pub struct Wire<P: Port> {
    port: P,
    mute: Rc<Cell<bool>>,
}

impl<P: Port> Connection for Wire<P> {
    type Error = ();

    fn write(&mut self, byte: u8) -> Result<(), ()> {
        if !self.mute.get() {
            self.port.put(byte);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

/// What the exit loop must do after a byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    None,
    /// Let the guest run (continue or one step).
    Resume(ResumeKind),
    /// Hold the guest: a client attached, or gdb interrupted it (the stop is already reported).
    Hold(StopKind),
    /// gdb detached: breakpoints are gone, the guest runs on.
    Detach,
    /// gdb killed the guest: the run ends.
    Kill,
}

type Machine<C, P> = GdbStubStateMachine<'static, DebugTarget<C>, Wire<P>>;

pub struct Session<C: Threads, P: Port> {
    sm: Option<Machine<C, P>>,
    pub target: DebugTarget<C>,
    framer: Framer,
    wire: Wire<P>,
    no_ack: bool,
    /// A client has spoken since the start or its last detach.
    pub attached: bool,
    /// Times the state machine was rebuilt after an error.
    pub restarts: u64,
    /// The last packet answered, and whether gdb has not acknowledged anything since.
    last: Vec<u8>,
    unacked: bool,
}

const NO_ACK: &[u8] = b"$QStartNoAckMode#b0";
const CONTINUE: &[u8] = b"$c#63";

impl<C: Threads, P: Port> Session<C, P> {
    pub fn new(cpu: C, layout: Layout, port: P) -> Self {
        let wire = Wire {
            port,
            mute: Rc::new(Cell::new(false)),
        };
        let mut s = Session {
            sm: None,
            target: DebugTarget::new(cpu, layout),
            framer: Framer::new(),
            wire,
            no_ack: false,
            attached: false,
            restarts: 0,
            last: Vec::new(),
            unacked: false,
        };
        s.sm = s.fresh();
        s
    }

    fn fresh(&mut self) -> Option<Machine<C, P>> {
        GdbStub::builder(self.wire.clone())
            .packet_buffer_size(MAX_BODY + 8)
            .build()
            .ok()?
            .run_state_machine(&mut self.target)
            .ok()
    }

    /// The target, once the session is over.
    pub fn into_target(self) -> DebugTarget<C> {
        self.target
    }

    /// Whether gdb is waiting for the guest to stop (it may take console output then).
    pub fn gdb_waits_for_stop(&self) -> bool {
        self.attached && matches!(self.sm, Some(GdbStubStateMachine::Running(_)))
    }

    fn put_all(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.wire.port.put(b);
        }
    }

    fn error_reply(&mut self) {
        let mut out = Vec::new();
        packet(b"E01", &mut |b| out.push(b));
        self.put_all(&out);
    }

    /// Rebuilds the state machine after an error, in the protocol state gdb expects.
    fn rebuild(&mut self, was_running: bool) {
        self.restarts += 1;
        self.sm = self.fresh();
        let replay: &[&[u8]] = match (self.no_ack, was_running) {
            (true, true) => &[NO_ACK, CONTINUE],
            (true, false) => &[NO_ACK],
            (false, true) => &[CONTINUE],
            (false, false) => &[],
        };
        self.wire.mute.set(true);
        for p in replay {
            for &b in *p {
                self.step_machine(b);
            }
        }
        self.target.request = None;
        self.wire.mute.set(false);
    }

    /// One byte into the state machine; on error the machine is rebuilt. Returns false if the
    /// byte caused an error.
    fn step_machine(&mut self, byte: u8) -> bool {
        let Some(sm) = self.sm.take() else {
            return false;
        };
        let result = match sm {
            GdbStubStateMachine::Idle(m) => m.incoming_data(&mut self.target, byte),
            GdbStubStateMachine::Running(m) => m.incoming_data(&mut self.target, byte),
            GdbStubStateMachine::CtrlCInterrupt(m) => {
                m.interrupt_handled(&mut self.target, None::<MultiThreadStopReason<u64>>)
            }
            GdbStubStateMachine::Disconnected(m) => Ok(m.return_to_idle()),
        };
        match result {
            Ok(sm) => {
                self.sm = Some(sm);
                true
            }
            Err(_) => false,
        }
    }

    fn running(&self) -> bool {
        matches!(self.sm, Some(GdbStubStateMachine::Running(_)))
    }

    /// Feeds one byte from gdb.
    pub fn feed(&mut self, byte: u8) -> Event {
        if self.sm.is_none() {
            self.rebuild(false);
        }
        let packet: Vec<u8> = match self.framer.push(byte) {
            Frame::None => return Event::None,
            Frame::Ack => {
                self.unacked = false;
                return Event::None;
            }
            Frame::Interrupt => return self.interrupt(),
            Frame::Rejected(why) => {
                if !self.no_ack {
                    self.put_all(if why == Reject::BadChecksum {
                        b"-"
                    } else {
                        b"+"
                    });
                }
                if why == Reject::TooLong || self.no_ack {
                    self.error_reply();
                }
                return Event::None;
            }
            Frame::Packet(p) => p.to_vec(),
        };
        if !self.no_ack && self.unacked && packet == self.last {
            self.put_all(b"+");
            self.target.retransmissions += 1;
            return Event::None;
        }
        if !self.no_ack {
            self.last.clone_from(&packet);
            self.unacked = true;
        }
        let newly = !self.attached;
        self.attached = true;
        let was_running = self.running();
        for &b in &packet {
            if !self.step_machine(b) {
                self.error_reply();
                self.rebuild(was_running);
                return if newly {
                    Event::Hold(StopKind::Attach)
                } else {
                    Event::None
                };
            }
        }
        if packet == NO_ACK {
            self.no_ack = true;
        }
        match self.sm.take() {
            Some(GdbStubStateMachine::Disconnected(m)) => {
                let reason = m.get_reason();
                self.sm = Some(m.return_to_idle());
                self.target.state.clear(self.target.cpu.current());
                let hw = self.target.state.hw;
                self.target.cpu.hw_changed(&hw);
                self.attached = false;
                self.no_ack = false;
                self.unacked = false;
                // The next client starts a new protocol session.
                self.sm = self.fresh();
                match reason {
                    DisconnectReason::Kill => Event::Kill,
                    _ => Event::Detach,
                }
            }
            sm => {
                self.sm = sm;
                match self.target.request.take() {
                    Some(Request::Resume(kind)) if self.running() => Event::Resume(kind),
                    _ if newly => Event::Hold(StopKind::Attach),
                    _ => Event::None,
                }
            }
        }
    }

    /// gdb's Ctrl-C: while the guest runs, stop it and report SIGINT.
    fn interrupt(&mut self) -> Event {
        if !self.running() {
            return Event::None;
        }
        if !self.step_machine(0x03) {
            self.rebuild(true);
            return Event::None;
        }
        match self.sm.take() {
            Some(GdbStubStateMachine::CtrlCInterrupt(m)) => {
                let reason = MultiThreadStopReason::<u64>::SignalWithThread {
                    tid: tid(self.target.cpu.current_index()),
                    signal: Signal::SIGINT,
                };
                match m.interrupt_handled(&mut self.target, Some(reason)) {
                    Ok(sm) => {
                        self.sm = Some(sm);
                        Event::Hold(StopKind::Interrupt)
                    }
                    Err(_) => {
                        self.rebuild(false);
                        Event::None
                    }
                }
            }
            sm => {
                self.sm = sm;
                Event::None
            }
        }
    }

    /// Tells gdb the guest stopped. Returns false if gdb was not waiting for a stop (no client,
    /// or the protocol is idle), in which case the caller should not hold the guest.
    pub fn report_stop(&mut self, kind: StopKind) -> bool {
        if !self.attached {
            return false;
        }
        let Some(GdbStubStateMachine::Running(m)) = self.sm.take() else {
            return self.sm.is_some();
        };
        // Every stop names the vCPU it happened on (a step too: gdb then knows which thread
        // stepped).
        let t = tid(self.target.cpu.current_index());
        let signal = |signal| MultiThreadStopReason::SignalWithThread { tid: t, signal };
        let reason: MultiThreadStopReason<u64> = match kind {
            StopKind::Attach | StopKind::Step => signal(Signal::SIGTRAP),
            StopKind::Interrupt => signal(Signal::SIGINT),
            StopKind::SwBreak => MultiThreadStopReason::SwBreak(t),
            StopKind::HwBreak => MultiThreadStopReason::HwBreak(t),
            StopKind::Watch { kind, addr } => MultiThreadStopReason::Watch { tid: t, kind, addr },
        };
        match m.report_stop(&mut self.target, reason) {
            Ok(sm) => {
                self.sm = Some(sm);
                true
            }
            Err(_) => {
                self.rebuild(false);
                true
            }
        }
    }

    /// Counts of the packet path, for reports and tests: (packets, rejected, dropped bytes).
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.framer.packets,
            self.framer.rejected,
            self.framer.dropped,
        )
    }
}
