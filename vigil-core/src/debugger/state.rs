//! Breakpoints and watchpoints, and the nested-paging (EPT) permissions they give each
//! guest-physical page.
//!
//! **Software breakpoints** are INT3 bytes (0xCC) written into guest memory, with #BP
//! intercepted. The guest must not see them, so a page holding one is mapped *execute-only* in
//! the nested tables when the processor allows it (EPT: SDM Vol. 3C 29.3.2,
//! IA32_VMX_EPT_VPID_CAP bit 0): the guest's instruction fetches run the INT3, while its reads
//! and writes of that page cause nested page faults. On such a fault Vigil puts the original
//! bytes back, opens the page, single-steps the one instruction (the backend's step exit, or
//! RFLAGS.TF without one) and then writes the INT3s again (taking a byte the guest wrote as the
//! new original) and closes the page. The debugger's own memory accesses go through
//! [`DebugState::read_virt`] and [`DebugState::write_virt`], which show and update the original
//! bytes.
//!
//! **Watchpoints** take away the permission the watched access needs on the containing
//! page (write: W; read or access: R, and with it W since write-without-read is not allowed).
//! Any access to the page then exits; the same step-over runs the instruction with the page
//! open, and afterwards the access is matched against the exact watched range: an access whose
//! first byte is in the range, or a write that changed a byte of it. Only a match stops the
//! guest, with RIP after the writing instruction, as an x86 data breakpoint would (a trap).
//! A read-modify-write instruction (`add [x], 1`) reads as well as writes, but its nested page
//! fault need not say so (SDM Vol. 3C 28.2.1): on a page with a read or access watchpoint
//! a write is decoded ([`super::insn`]) to find out.

use super::{insn, AccessError, GuestCpu, HwSlot};
use crate::nested::Perms;
use alloc::vec::Vec;
use gdbstub::target::ext::breakpoints::WatchKind;

pub const PAGE: u64 = 4096;
pub const MAX_SW: usize = 64;
pub const MAX_WATCH: usize = 8;
/// The longest watched range (a range within one page).
pub const MAX_WATCH_LEN: u64 = 8;
const INT3: u8 = 0xCC;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwBreakpoint {
    pub gva: u64,
    pub gpa: u64,
    pub original: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch {
    pub gva: u64,
    pub gpa: u64,
    pub len: u64,
    pub kind: WatchKind,
}

/// An instruction being run with its page opened, until the single step completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepOver {
    pub page: u64,
    pub gpa: u64,
    pub read: bool,
    pub write: bool,
    /// The bytes of each watched range on the page before the instruction (by watch index).
    snapshot: [[u8; MAX_WATCH_LEN as usize]; MAX_WATCH],
}

/// A watchpoint that fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchHit {
    pub kind: WatchKind,
    pub gva: u64,
}

#[derive(Default)]
pub struct DebugState {
    pub sw: Vec<SwBreakpoint>,
    pub watches: Vec<Watch>,
    pub hw: [Option<u64>; 4],
    /// Pages whose nested-paging permissions Vigil changed (to put them back).
    pages: Vec<u64>,
}

fn page_of(a: u64) -> u64 {
    a & !(PAGE - 1)
}

impl DebugState {
    /// The permissions a page needs for the breakpoints and watchpoints on it.
    pub fn perms_for(&self, page: u64, exec_only: bool) -> Perms {
        let mut p = Perms::RWX;
        let on_page = |gpa: u64| page_of(gpa) == page;
        if self.sw.iter().any(|b| on_page(b.gpa)) {
            // The guest must not read the INT3s: execute-only where the processor has it, else
            // the page is closed entirely (AMD's nested paging has no read permission apart from
            // presence) and every access is stepped over with the original bytes, while a fetch
            // at a breakpoint's address is the breakpoint (`exits.rs`).
            p = if exec_only { Perms::X } else { Perms::NONE };
        }
        for w in self.watches.iter().filter(|w| on_page(w.gpa)) {
            match w.kind {
                WatchKind::Write => p.write = false,
                WatchKind::Read | WatchKind::ReadWrite => {
                    p.read = false;
                    p.write = false;
                    // Execute-only needs the processor's support; without it the page is closed
                    // entirely and fetches from it are stepped over like any other access.
                    if !exec_only {
                        p.exec = false;
                    }
                }
            }
        }
        p
    }

    /// How many pages have restricted permissions.
    pub fn managed_pages(&self) -> usize {
        self.pages.len()
    }

    /// Whether a nested page fault at `gpa` is on a page the debugger manages.
    pub fn manages(&self, gpa: u64) -> bool {
        self.pages.contains(&page_of(gpa))
    }

    /// Applies the permissions of `page` to the nested tables and remembers the page if
    /// restricted.
    pub fn rearm(&mut self, cpu: &mut dyn GuestCpu, page: u64) {
        let perms = self.perms_for(page, cpu.exec_only());
        cpu.set_page_perms(page, perms);
        let known = self.pages.iter().position(|&p| p == page);
        match (perms == Perms::RWX, known) {
            (true, Some(i)) => {
                self.pages.swap_remove(i);
            }
            (false, None) => self.pages.push(page),
            _ => {}
        }
    }

    pub fn add_sw(&mut self, cpu: &mut dyn GuestCpu, gva: u64) -> Result<bool, AccessError> {
        if self.sw.iter().any(|b| b.gva == gva) {
            return Ok(true);
        }
        if self.sw.len() >= MAX_SW {
            return Ok(false);
        }
        let gpa = cpu.translate(gva)?;
        // Two virtual addresses may alias one byte: the first breakpoint keeps the original.
        let original = match self.sw.iter().find(|b| b.gpa == gpa) {
            Some(b) => b.original,
            None => {
                let mut byte = [0u8];
                if !cpu.read_phys(gpa, &mut byte) || !cpu.write_phys(gpa, &[INT3]) {
                    return Err(AccessError::NotRam);
                }
                byte[0]
            }
        };
        self.sw.push(SwBreakpoint { gva, gpa, original });
        self.rearm(cpu, page_of(gpa));
        Ok(true)
    }

    pub fn remove_sw(&mut self, cpu: &mut dyn GuestCpu, gva: u64) -> bool {
        let Some(i) = self.sw.iter().position(|b| b.gva == gva) else {
            return false;
        };
        let b = self.sw.swap_remove(i);
        if !self.sw.iter().any(|o| o.gpa == b.gpa) {
            cpu.write_phys(b.gpa, &[b.original]);
        }
        self.rearm(cpu, page_of(b.gpa));
        true
    }

    pub fn add_watch(
        &mut self,
        cpu: &mut dyn GuestCpu,
        gva: u64,
        len: u64,
        kind: WatchKind,
    ) -> Result<bool, AccessError> {
        if len == 0 || len > MAX_WATCH_LEN || self.watches.len() >= MAX_WATCH {
            return Ok(false);
        }
        let gpa = cpu.translate(gva)?;
        // The range must lie in one guest-physical page.
        if page_of(gpa) != page_of(gpa + len - 1) {
            return Ok(false);
        }
        self.watches.push(Watch {
            gva,
            gpa,
            len,
            kind,
        });
        self.rearm(cpu, page_of(gpa));
        Ok(true)
    }

    pub fn remove_watch(
        &mut self,
        cpu: &mut dyn GuestCpu,
        gva: u64,
        len: u64,
        kind: WatchKind,
    ) -> bool {
        let Some(i) = self
            .watches
            .iter()
            .position(|w| w.gva == gva && w.len == len && w.kind == kind)
        else {
            return false;
        };
        let w = self.watches.swap_remove(i);
        self.rearm(cpu, page_of(w.gpa));
        true
    }

    /// Hardware breakpoints use debug-register slots from 0 up.
    pub fn add_hw(&mut self, cpu: &mut dyn GuestCpu, gva: u64) -> bool {
        if self.hw.contains(&Some(gva)) {
            return true;
        }
        let Some(slot) = self.hw.iter().position(Option::is_none) else {
            return false;
        };
        self.hw[slot] = Some(gva);
        cpu.set_hw_slot(
            slot,
            Some(HwSlot {
                addr: gva,
                rw: 0,
                len: 0,
            }),
        );
        true
    }

    pub fn remove_hw(&mut self, cpu: &mut dyn GuestCpu, gva: u64) -> bool {
        let Some(slot) = self.hw.iter().position(|s| *s == Some(gva)) else {
            return false;
        };
        self.hw[slot] = None;
        cpu.set_hw_slot(slot, None);
        true
    }

    /// Removes every breakpoint and watchpoint (detach, kill): the guest is left as it was.
    pub fn clear(&mut self, cpu: &mut dyn GuestCpu) {
        while let Some(b) = self.sw.last().copied() {
            self.remove_sw(cpu, b.gva);
        }
        self.watches.clear();
        for page in core::mem::take(&mut self.pages) {
            cpu.set_page_perms(page, Perms::RWX);
        }
        for slot in 0..4 {
            if self.hw[slot].take().is_some() {
                cpu.set_hw_slot(slot, None);
            }
        }
    }

    /// Guest-virtual read for the debugger, with the original bytes under software breakpoints.
    pub fn read_virt(
        &self,
        cpu: &dyn GuestCpu,
        gva: u64,
        buf: &mut [u8],
    ) -> Result<(), AccessError> {
        let mut done = 0;
        while done < buf.len() {
            let at = gva.wrapping_add(done as u64);
            let n = ((PAGE - (at & (PAGE - 1))) as usize).min(buf.len() - done);
            let gpa = cpu.translate(at)?;
            let part = &mut buf[done..done + n];
            if !cpu.read_phys(gpa, part) {
                return Err(AccessError::NotRam);
            }
            for b in &self.sw {
                if b.gpa >= gpa && b.gpa < gpa + n as u64 {
                    part[(b.gpa - gpa) as usize] = b.original;
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Guest-virtual write for the debugger: a byte under a software breakpoint becomes its new
    /// original and the INT3 stays. Every page is translated before anything is written.
    pub fn write_virt(
        &mut self,
        cpu: &mut dyn GuestCpu,
        gva: u64,
        data: &[u8],
    ) -> Result<(), AccessError> {
        let mut chunks: Vec<(u64, usize, usize)> = Vec::new();
        let mut done = 0;
        while done < data.len() {
            let at = gva.wrapping_add(done as u64);
            let n = ((PAGE - (at & (PAGE - 1))) as usize).min(data.len() - done);
            chunks.push((cpu.translate(at)?, done, n));
            done += n;
        }
        for (gpa, from, n) in chunks {
            let mut part: Vec<u8> = data[from..from + n].to_vec();
            for b in self.sw.iter_mut() {
                if b.gpa >= gpa && b.gpa < gpa + n as u64 {
                    let i = (b.gpa - gpa) as usize;
                    b.original = part[i];
                    part[i] = INT3;
                }
            }
            if !cpu.write_phys(gpa, &part) {
                return Err(AccessError::NotRam);
            }
        }
        Ok(())
    }

    /// The guest touched a managed page (a nested page fault at `gpa`): put the original bytes of
    /// the page's breakpoints back and open it for one instruction. The caller single-steps and
    /// then calls [`Self::finish_step_over`].
    pub fn begin_step_over(
        &mut self,
        cpu: &mut dyn GuestCpu,
        gpa: u64,
        read: bool,
        write: bool,
    ) -> StepOver {
        let page = page_of(gpa);
        let read = read || (write && self.watches_reads(page) && self.rmw_at_rip(cpu));
        if read || write {
            for b in self.sw.iter().filter(|b| page_of(b.gpa) == page) {
                cpu.write_phys(b.gpa, &[b.original]);
            }
        }
        let mut snapshot = [[0u8; MAX_WATCH_LEN as usize]; MAX_WATCH];
        for (w, snap) in self.watches.iter().zip(snapshot.iter_mut()) {
            if page_of(w.gpa) == page {
                cpu.read_phys(w.gpa, &mut snap[..w.len as usize]);
            }
        }
        cpu.set_page_perms(page, Perms::RWX);
        StepOver {
            page,
            gpa,
            read,
            write,
            snapshot,
        }
    }

    /// The stepped instruction retired: write the INT3s again (a byte the guest changed is the
    /// new original), close the page, and say which watchpoint the access hit, if any.
    pub fn finish_step_over(&mut self, cpu: &mut dyn GuestCpu, s: &StepOver) -> Option<WatchHit> {
        for b in self.sw.iter_mut().filter(|b| page_of(b.gpa) == s.page) {
            let mut now = [0u8];
            if cpu.read_phys(b.gpa, &mut now) && now[0] != INT3 {
                b.original = now[0];
            }
            cpu.write_phys(b.gpa, &[INT3]);
        }
        let mut hit = None;
        for (w, snap) in self.watches.iter().zip(s.snapshot.iter()) {
            if page_of(w.gpa) != s.page || hit.is_some() {
                continue;
            }
            let starts_inside = s.gpa >= w.gpa && s.gpa < w.gpa + w.len;
            let mut now = [0u8; MAX_WATCH_LEN as usize];
            cpu.read_phys(w.gpa, &mut now[..w.len as usize]);
            let changed = now[..w.len as usize] != snap[..w.len as usize];
            let wants_write = matches!(w.kind, WatchKind::Write | WatchKind::ReadWrite);
            let wants_read = matches!(w.kind, WatchKind::Read | WatchKind::ReadWrite);
            // A read-modify-write instruction is both: it hits a read watchpoint too.
            if (s.write && wants_write && (starts_inside || changed))
                || (s.read && wants_read && starts_inside)
            {
                hit = Some(WatchHit {
                    kind: w.kind,
                    gva: w.gva,
                });
            }
        }
        self.rearm(cpu, s.page);
        hit
    }

    /// Whether a read or access watchpoint lies on `page`.
    fn watches_reads(&self, page: u64) -> bool {
        self.watches
            .iter()
            .any(|w| page_of(w.gpa) == page && w.kind != WatchKind::Write)
    }

    /// Whether the instruction at the guest's RIP reads the memory it writes. Its bytes are read
    /// as the debugger reads memory (original bytes under breakpoints), up to the first byte
    /// that is not mapped.
    fn rmw_at_rip(&self, cpu: &dyn GuestCpu) -> bool {
        let r = cpu.regs();
        let long = cpu.long_mode();
        // Outside 64-bit mode the linear address is CS.base + EIP, 32 bits (SDM Vol. 3A 3.4).
        let at = if long {
            r.rip
        } else {
            r.cs_base.wrapping_add(r.rip) & 0xFFFF_FFFF
        };
        let mut bytes = [0u8; insn::MAX_LEN];
        let first = ((PAGE - (at & (PAGE - 1))) as usize).min(bytes.len());
        if self.read_virt(cpu, at, &mut bytes[..first]).is_err() {
            return false;
        }
        let next = at.wrapping_add(first as u64) & if long { u64::MAX } else { 0xFFFF_FFFF };
        let len = if first < bytes.len() && self.read_virt(cpu, next, &mut bytes[first..]).is_ok() {
            bytes.len()
        } else {
            first
        };
        insn::reads_destination(&bytes[..len], long)
    }

    /// Whether a #BP at `gva` (the INT3's address) is one of the debugger's.
    pub fn is_sw_breakpoint(&self, gva: u64) -> bool {
        self.sw.iter().any(|b| b.gva == gva)
    }

    /// The hardware slot armed for `gva`.
    pub fn hw_slot(&self, gva: u64) -> Option<usize> {
        self.hw.iter().position(|s| *s == Some(gva))
    }
}
