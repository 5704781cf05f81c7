//! The `gdbstub` target: what each GDB request does to the guest. Every request that cannot be
//! carried out gets an error reply (an errno, never a fatal error), so no request ends the
//! session or reaches a panic.

use super::arch::{GdbRegs, GuestArch, Layout};
use super::state::DebugState;
use super::{GuestCpu, ResumeKind};
use gdbstub::common::Signal;
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
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

pub struct DebugTarget<C: GuestCpu> {
    pub cpu: C,
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

impl<C: GuestCpu> DebugTarget<C> {
    pub fn new(cpu: C, layout: Layout) -> Self {
        DebugTarget {
            cpu,
            state: DebugState::default(),
            layout,
            request: None,
            step_mechanism: "monitor trap flag",
            time_mode: "frozen",
            retransmissions: 0,
        }
    }
}

impl<C: GuestCpu> Target for DebugTarget<C> {
    type Arch = GuestArch;
    type Error = &'static str;

    fn base_ops(&mut self) -> BaseOps<'_, GuestArch, &'static str> {
        BaseOps::SingleThread(self)
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

impl<C: GuestCpu> SingleThreadBase for DebugTarget<C> {
    fn read_registers(&mut self, regs: &mut GdbRegs) -> TargetResult<(), Self> {
        *regs = GdbRegs::from_cpu(self.layout, &self.cpu.regs());
        Ok(())
    }

    fn write_registers(&mut self, regs: &GdbRegs) -> TargetResult<(), Self> {
        if regs.layout != self.layout {
            return Err(TargetError::Errno(EINVAL));
        }
        let mut r = self.cpu.regs();
        regs.apply_to(&mut r);
        self.cpu.set_regs(&r);
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        let start = self.address(start);
        // Read what can be read: gdb accepts a short answer, and an empty one is an error.
        let mut done = 0;
        while done < data.len() {
            let at = start.wrapping_add(done as u64);
            let n = (4096 - (at & 4095) as usize).min(data.len() - done);
            if self
                .state
                .read_virt(&self.cpu, at, &mut data[done..done + n])
                .is_err()
            {
                break;
            }
            done += n;
        }
        if done == 0 && !data.is_empty() {
            return Err(TargetError::Errno(EFAULT));
        }
        Ok(done)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        let start = self.address(start);
        self.state
            .write_virt(&mut self.cpu, start, data)
            .map_err(|_| TargetError::Errno(EFAULT))
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl<C: GuestCpu> DebugTarget<C> {
    /// Outside 64-bit mode linear addresses have 32 bits (gdb may sign-extend them).
    fn address(&self, a: u64) -> u64 {
        if self.layout == Layout::I386 || !self.cpu.long_mode() {
            a & 0xFFFF_FFFF
        } else {
            a
        }
    }
}

impl<C: GuestCpu> SingleThreadResume for DebugTarget<C> {
    fn resume(&mut self, signal: Option<Signal>) -> Result<(), &'static str> {
        // Signals have no meaning for a whole machine; they are ignored, as QEMU does.
        let _ = signal;
        self.request = Some(Request::Resume(ResumeKind::Continue));
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl<C: GuestCpu> SingleThreadSingleStep for DebugTarget<C> {
    fn step(&mut self, signal: Option<Signal>) -> Result<(), &'static str> {
        let _ = signal;
        self.request = Some(Request::Resume(ResumeKind::Step));
        Ok(())
    }
}

impl<C: GuestCpu> Breakpoints for DebugTarget<C> {
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

impl<C: GuestCpu> SwBreakpoint for DebugTarget<C> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let addr = self.address(addr);
        self.state
            .add_sw(&mut self.cpu, addr)
            .map_err(|_| TargetError::Errno(EFAULT))
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let addr = self.address(addr);
        Ok(self.state.remove_sw(&mut self.cpu, addr))
    }
}

impl<C: GuestCpu> HwBreakpoint for DebugTarget<C> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let addr = self.address(addr);
        Ok(self.state.add_hw(&mut self.cpu, addr))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let addr = self.address(addr);
        Ok(self.state.remove_hw(&mut self.cpu, addr))
    }
}

impl<C: GuestCpu> HwWatchpoint for DebugTarget<C> {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let addr = self.address(addr);
        self.state
            .add_watch(&mut self.cpu, addr, len, kind)
            .map_err(|_| TargetError::Errno(EFAULT))
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let addr = self.address(addr);
        Ok(self.state.remove_watch(&mut self.cpu, addr, len, kind))
    }
}

impl<C: GuestCpu> TargetDescriptionXmlOverride for DebugTarget<C> {
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

impl<C: GuestCpu> MonitorCmd for DebugTarget<C> {
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
