//! The `gdbstub` target: what each GDB request does to the guest. Every request that cannot be
//! carried out gets an error reply (an errno, never a fatal error), so no request ends the
//! session or reaches a panic.
//!
//! The target is multi-threaded: one thread per vCPU (gdb's thread ID = vCPU number + 1), over
//! [`Threads`]. Registers and memory reads name their thread; breakpoints, watchpoints and
//! `monitor` commands act through the vCPU that stopped. A resume either continues every vCPU or
//! single-steps one while the others stay stopped (also when gdb lets the others continue: its
//! `stepi` then behaves as with `set scheduler-locking step`).

use super::arch::{GdbRegs, GuestArch, Layout};
use super::state::DebugState;
use super::threads::Threads;
use super::{GuestCpu, ResumeKind};
use gdbstub::common::{Signal, Tid};
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::ext::target_description_xml_override::{
    TargetDescriptionXmlOverride, TargetDescriptionXmlOverrideOps,
};
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};

/// errno values in error replies (GDB manual, "Errno Values"): EFAULT for memory that is not
/// there, EINVAL for a request that makes no sense, ENOSPC for no free breakpoint slot.
pub const EFAULT: u8 = 14;
pub const EINVAL: u8 = 22;

/// What the stub asked the guest to do next, taken by the caller after each packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Resume(ResumeKind),
}

pub struct DebugTarget<C: Threads> {
    /// The machine's vCPUs.
    pub cpu: C,
    /// The vCPU the next resume single-steps, if any (set while gdb's resume actions arrive).
    step: Option<usize>,
    pub state: DebugState,
    pub layout: Layout,
    /// Set by resume/step; taken by the session.
    pub request: Option<Request>,
    /// Whether single-steps use the monitor trap flag (else RFLAGS.TF); for `monitor status`.
    pub step_mechanism: &'static str,
    /// The guest's time mode, for `monitor status`.
    pub time_mode: &'static str,
    /// Packets gdb sent again because our acknowledgement came late, answered only once
    /// (`session::Session::feed`); for `monitor status`.
    pub retransmissions: u64,
}

/// gdb's thread ID of vCPU `i`.
pub fn tid(i: usize) -> Tid {
    Tid::new(i + 1).expect("non-zero")
}

impl<C: Threads> DebugTarget<C> {
    pub fn new(cpu: C, layout: Layout) -> Self {
        DebugTarget {
            cpu,
            step: None,
            state: DebugState::default(),
            layout,
            request: None,
            step_mechanism: "monitor trap flag",
            time_mode: "frozen",
            retransmissions: 0,
        }
    }
}

impl<C: Threads> Target for DebugTarget<C> {
    type Arch = GuestArch;
    type Error = &'static str;

    fn base_ops(&mut self) -> BaseOps<'_, GuestArch, &'static str> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    fn support_target_description_xml_override(
        &mut self,
    ) -> Option<TargetDescriptionXmlOverrideOps<'_, Self>> {
        Some(self)
    }
}

impl<C: Threads> DebugTarget<C> {
    /// vCPU of gdb's thread `tid`.
    fn thread(&mut self, tid: Tid) -> Result<&mut dyn GuestCpu, TargetError<&'static str>> {
        self.cpu
            .thread(tid.get() - 1)
            .ok_or(TargetError::Errno(EINVAL))
    }

    /// Outside 64-bit mode linear addresses have 32 bits (gdb may sign-extend them).
    fn address_for(layout: Layout, cpu: &dyn GuestCpu, a: u64) -> u64 {
        if layout == Layout::I386 || !cpu.long_mode() {
            a & 0xFFFF_FFFF
        } else {
            a
        }
    }

    /// An address for the vCPU that stopped (breakpoints, watchpoints).
    fn address(&mut self, a: u64) -> u64 {
        let layout = self.layout;
        Self::address_for(layout, self.cpu.current(), a)
    }
}

impl<C: Threads> MultiThreadBase for DebugTarget<C> {
    fn read_registers(&mut self, regs: &mut GdbRegs, tid: Tid) -> TargetResult<(), Self> {
        let layout = self.layout;
        *regs = GdbRegs::from_cpu(layout, &self.thread(tid)?.regs());
        Ok(())
    }

    fn write_registers(&mut self, regs: &GdbRegs, tid: Tid) -> TargetResult<(), Self> {
        if regs.layout != self.layout || !self.cpu.writable(tid.get() - 1) {
            return Err(TargetError::Errno(EINVAL));
        }
        let cpu = self.thread(tid)?;
        let mut r = cpu.regs();
        regs.apply_to(&mut r);
        cpu.set_regs(&r);
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        let layout = self.layout;
        let state = &self.state;
        let cpu = self
            .cpu
            .thread(tid.get() - 1)
            .ok_or(TargetError::Errno(EINVAL))?;
        let start = Self::address_for(layout, cpu, start);
        // Read what can be read: gdb accepts a short answer, and an empty one is an error.
        let mut done = 0;
        while done < data.len() {
            let at = start.wrapping_add(done as u64);
            let n = (4096 - (at & 4095) as usize).min(data.len() - done);
            if state.read_virt(cpu, at, &mut data[done..done + n]).is_err() {
                break;
            }
            done += n;
        }
        if done == 0 && !data.is_empty() {
            return Err(TargetError::Errno(EFAULT));
        }
        Ok(done)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        let layout = self.layout;
        let state = &mut self.state;
        let cpu = self
            .cpu
            .thread(tid.get() - 1)
            .ok_or(TargetError::Errno(EINVAL))?;
        let start = Self::address_for(layout, cpu, start);
        state
            .write_virt(cpu, start, data)
            .map_err(|_| TargetError::Errno(EFAULT))
    }

    fn list_active_threads(&mut self, active: &mut dyn FnMut(Tid)) -> Result<(), &'static str> {
        for i in 0..self.cpu.count() {
            active(tid(i));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}

impl<C: Threads> ThreadExtraInfo for DebugTarget<C> {
    fn thread_extra_info(&self, tid: Tid, buf: &mut [u8]) -> Result<usize, &'static str> {
        let text = self.cpu.describe(tid.get() - 1).as_bytes();
        let n = text.len().min(buf.len());
        buf[..n].copy_from_slice(&text[..n]);
        Ok(n)
    }
}

impl<C: Threads> MultiThreadResume for DebugTarget<C> {
    fn resume(&mut self) -> Result<(), &'static str> {
        let kind = match self.step.take() {
            Some(i) => ResumeKind::Step(i),
            None => ResumeKind::Continue,
        };
        self.request = Some(Request::Resume(kind));
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), &'static str> {
        self.step = None;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        signal: Option<Signal>,
    ) -> Result<(), &'static str> {
        // Signals have no meaning for a whole machine; they are ignored, as QEMU does.
        let _ = signal;
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl<C: Threads> MultiThreadSingleStep for DebugTarget<C> {
    fn set_resume_action_step(
        &mut self,
        tid: Tid,
        signal: Option<Signal>,
    ) -> Result<(), &'static str> {
        let _ = signal;
        if tid.get() > self.cpu.count() {
            return Err("no such thread");
        }
        // One vCPU steps at a time; the others stay stopped whatever gdb asked for them.
        self.step.get_or_insert(tid.get() - 1);
        Ok(())
    }
}

impl<C: Threads> MultiThreadSchedulerLocking for DebugTarget<C> {
    /// Only the threads gdb named run: a step is one vCPU's anyway, and a continue of named
    /// threads continues all of them (Vigil does not run some vCPUs while holding others).
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), &'static str> {
        Ok(())
    }
}

impl<C: Threads> Breakpoints for DebugTarget<C> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl<C: Threads> SwBreakpoint for DebugTarget<C> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let addr = self.address(addr);
        self.state
            .add_sw(self.cpu.current(), addr)
            .map_err(|_| TargetError::Errno(EFAULT))
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let addr = self.address(addr);
        Ok(self.state.remove_sw(self.cpu.current(), addr))
    }
}

impl<C: Threads> HwBreakpoint for DebugTarget<C> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let addr = self.address(addr);
        let added = self.state.add_hw(self.cpu.current(), addr);
        self.cpu.hw_changed(&self.state.hw);
        Ok(added)
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let addr = self.address(addr);
        let removed = self.state.remove_hw(self.cpu.current(), addr);
        self.cpu.hw_changed(&self.state.hw);
        Ok(removed)
    }
}

impl<C: Threads> HwWatchpoint for DebugTarget<C> {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let addr = self.address(addr);
        self.state
            .add_watch(self.cpu.current(), addr, len, kind)
            .map_err(|_| TargetError::Errno(EFAULT))
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let addr = self.address(addr);
        Ok(self.state.remove_watch(self.cpu.current(), addr, len, kind))
    }
}

impl<C: Threads> TargetDescriptionXmlOverride for DebugTarget<C> {
    fn target_description_xml(
        &self,
        annex: &[u8],
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        if annex != b"target.xml" {
            return Err(TargetError::Errno(EINVAL));
        }
        let xml = self.layout.target_xml().as_bytes();
        let start = (offset as usize).min(xml.len());
        let n = length.min(buf.len()).min(xml.len() - start);
        buf[..n].copy_from_slice(&xml[start..start + n]);
        Ok(n)
    }
}

impl<C: Threads> MonitorCmd for DebugTarget<C> {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), &'static str> {
        // Errors go to gdb's console as text: a monitor command always answers.
        let _ = super::monitor::run(self, cmd, &mut out);
        Ok(())
    }
}
