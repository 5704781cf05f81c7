//! One gdb thread per vCPU.
//!
//! The protocol logic sees the machine through [`Threads`]: thread `i` is vCPU `i` (gdb's thread
//! ID `i + 1`). Any single [`GuestCpu`] is a machine of one thread, which is how the host tests
//! drive it.
//!
//! Under Vigil each vCPU runs on its own processor, and only that processor can reach its
//! control block. While the machine is held, the vCPU that holds it (the one whose stop gdb was
//! told about) serves gdb: its own vCPU directly, every other one through the [`Snapshot`] that
//! vCPU published into its [`Mailbox`] before it parked (or before it started waiting for a
//! start-up IPI). Registers gdb writes to another vCPU wait in its mailbox until that vCPU
//! leaves its park, on its own processor. Guest memory and the nested tables are the machine's:
//! the holding vCPU reads and writes them for every thread, translating through that thread's
//! own paging registers.

use super::{AccessError, CpuRegs, GuestCpu, HwSlot, Info};
use crate::cpu::Cpu;
use crate::nested::Perms;
use crate::smp::MAX_VCPUS;
use crate::vcpu::{Mode, Vcpu};
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, Ordering};
use x86_arch::paging::{self, Access, PagingRegs};

/// The machine as the debugger's protocol logic sees it.
pub trait Threads {
    /// How many vCPUs (threads) the machine has.
    fn count(&self) -> usize;
    /// Which vCPU stopped (the one gdb was told about); breakpoints, watchpoints and `monitor`
    /// commands act through it.
    fn current_index(&self) -> usize;
    /// vCPU `i`, if there is one.
    fn thread(&mut self, i: usize) -> Option<&mut dyn GuestCpu>;
    /// Whether gdb may write vCPU `i`'s registers now (not while it waits for a start-up IPI:
    /// its processor holds it in the guest).
    fn writable(&self, _i: usize) -> bool {
        true
    }
    /// What vCPU `i` is doing, for `info threads`.
    fn describe(&self, _i: usize) -> &'static str {
        "vCPU"
    }
    /// The hardware breakpoint slots changed: every vCPU takes them before it runs again.
    fn hw_changed(&mut self, _slots: &[Option<u64>; 4]) {}

    /// The vCPU that stopped.
    fn current(&mut self) -> &mut dyn GuestCpu {
        let i = self.current_index();
        self.thread(i).expect("the current vCPU exists")
    }
}

/// A single vCPU is a machine of one thread.
impl<C: GuestCpu> Threads for C {
    fn count(&self) -> usize {
        1
    }
    fn current_index(&self) -> usize {
        0
    }
    fn thread(&mut self, i: usize) -> Option<&mut dyn GuestCpu> {
        (i == 0).then_some(self as &mut dyn GuestCpu)
    }
}

/// What a vCPU shows the debugger while it is parked or waiting for a start-up IPI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub regs: CpuRegs,
    pub paging: Option<PagingRegs>,
    pub long_mode: bool,
    pub cr2: u64,
    pub dr7: u64,
    pub mode: &'static str,
    pub cpl: u8,
    /// Waiting for a start-up IPI.
    pub waiting: bool,
}

impl Snapshot {
    /// Taken on the vCPU's own processor.
    pub fn of<V: Vcpu>(cpu: &Cpu<V>, waiting: bool) -> Snapshot {
        let v = &cpu.vcpu;
        Snapshot {
            regs: cpu.regs(),
            paging: Some(v.paging_regs()),
            long_mode: v.long_mode_64(),
            cr2: v.cr2(),
            dr7: v.dr(7),
            mode: mode_name(v.mode()),
            cpl: v.cpl(),
            waiting,
        }
    }
}

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Long64 => "64-bit",
        Mode::Real => "real",
        Mode::Virtual8086 => "virtual-8086",
        Mode::Protected16 | Mode::Protected32 => "protected",
    }
}

/// How a parked vCPU leaves its park.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Release {
    /// Run on.
    Continue = 0,
    /// Run one instruction and report it (this vCPU becomes the holder).
    Step = 1,
}

/// One vCPU's exchange with the holder. The vCPU writes it only while it runs (before it
/// parks or starts waiting); the holder reads and writes it only while the vCPU is quiet. The
/// vCPU's presence (`crate::smp`, stored and loaded sequentially consistent) orders the two.
pub struct Mailbox {
    snap: UnsafeCell<Snapshot>,
    /// Registers gdb wrote, for the vCPU to take before it runs again.
    written: UnsafeCell<Option<CpuRegs>>,
    release: AtomicU8,
}

// SAFETY: see the type's documentation: the vCPU and the holder never use a mailbox at the same
// time, and the presence handshake orders their accesses.
unsafe impl Sync for Mailbox {}

impl Mailbox {
    const fn new() -> Mailbox {
        Mailbox {
            snap: UnsafeCell::new(Snapshot {
                regs: CpuRegs {
                    gpr: [0; 16],
                    rip: 0,
                    rflags: 0,
                    seg: [0; 6],
                    fs_base: 0,
                    gs_base: 0,
                    cs_base: 0,
                },
                paging: None,
                long_mode: false,
                cr2: 0,
                dr7: 0,
                mode: "",
                cpl: 0,
                waiting: false,
            }),
            written: UnsafeCell::new(None),
            release: AtomicU8::new(Release::Continue as u8),
        }
    }

    /// The vCPU publishes what it shows while quiet. Call on its processor, before it parks.
    pub fn publish(&self, snap: Snapshot) {
        // SAFETY: the vCPU is not quiet: no holder reads this mailbox now.
        unsafe { *self.snap.get() = snap };
    }

    /// The vCPU takes the registers gdb wrote, if any, and how to leave its park. Call on its
    /// processor, after the hold let it go.
    pub fn take(&self) -> (Option<CpuRegs>, Release) {
        // SAFETY: the holder let go or handed over: it no longer uses this mailbox.
        let regs = unsafe { (*self.written.get()).take() };
        let release = match self.release.swap(Release::Continue as u8, Ordering::SeqCst) {
            1 => Release::Step,
            _ => Release::Continue,
        };
        (regs, release)
    }

    /// The holder asks the (quiet) vCPU to leave its park this way.
    pub fn set_release(&self, r: Release) {
        self.release.store(r as u8, Ordering::SeqCst);
    }
}

/// Every vCPU's mailbox.
pub struct Mailboxes(pub [Mailbox; MAX_VCPUS]);

impl Mailboxes {
    pub const fn new() -> Mailboxes {
        Mailboxes([const { Mailbox::new() }; MAX_VCPUS])
    }
}

impl Default for Mailboxes {
    fn default() -> Self {
        Mailboxes::new()
    }
}

/// The machine during a hold, as the holding vCPU serves it to gdb.
pub struct VcpuThreads<V: Vcpu + 'static> {
    /// The holder's vCPU, set for the duration of a hold (null otherwise).
    local: *mut Cpu<V>,
    local_id: usize,
    count: usize,
    boxes: &'static Mailboxes,
    /// The view of another vCPU handed out by `thread`.
    remote: Option<Remote<V>>,
    /// The hardware breakpoint slots every vCPU takes, and their generation.
    pub hw: [Option<u64>; 4],
    pub hw_generation: u64,
}

impl<V: Vcpu + 'static> VcpuThreads<V> {
    pub fn new(count: usize, boxes: &'static Mailboxes) -> Self {
        VcpuThreads {
            local: core::ptr::null_mut(),
            local_id: 0,
            count: count.clamp(1, MAX_VCPUS),
            boxes,
            remote: None,
            hw: [None; 4],
            hw_generation: 0,
        }
    }

    /// The holder `id` serves gdb with its vCPU `cpu` until [`VcpuThreads::leave`].
    pub fn enter(&mut self, cpu: &mut Cpu<V>, id: usize) {
        self.local = cpu;
        self.local_id = id;
    }

    pub fn leave(&mut self) {
        self.local = core::ptr::null_mut();
        self.remote = None;
    }

    pub fn mailbox(&self, i: usize) -> &'static Mailbox {
        &self.boxes.0[i]
    }

    fn snapshot(&self, i: usize) -> &Snapshot {
        // SAFETY: `i` is quiet while the holder serves gdb (the hold waited for it).
        unsafe { &*self.boxes.0[i].snap.get() }
    }
}

impl<V: Vcpu + 'static> Threads for VcpuThreads<V> {
    fn count(&self) -> usize {
        self.count
    }

    fn current_index(&self) -> usize {
        self.local_id
    }

    fn thread(&mut self, i: usize) -> Option<&mut dyn GuestCpu> {
        if self.local.is_null() || i >= self.count {
            return None;
        }
        if i == self.local_id {
            // SAFETY: set by `enter` from the holder's own vCPU, which outlives the hold and
            // is not otherwise used while the session runs.
            return Some(unsafe { &mut *self.local });
        }
        self.remote = Some(Remote {
            local: self.local,
            mailbox: &self.boxes.0[i],
            index: i,
        });
        self.remote.as_mut().map(|r| r as &mut dyn GuestCpu)
    }

    fn writable(&self, i: usize) -> bool {
        i == self.local_id || !self.snapshot(i).waiting
    }

    fn describe(&self, i: usize) -> &'static str {
        if i == self.local_id {
            "vCPU (stopped here)"
        } else if self.snapshot(i).waiting {
            "vCPU (waiting for a start-up IPI)"
        } else {
            "vCPU"
        }
    }

    fn hw_changed(&mut self, slots: &[Option<u64>; 4]) {
        self.hw = *slots;
        self.hw_generation += 1;
    }
}

/// Another vCPU, as the holder serves it: registers from its snapshot, writes to its mailbox,
/// memory through the holder's vCPU (the machine's memory) with this vCPU's paging registers.
pub struct Remote<V: Vcpu + 'static> {
    local: *mut Cpu<V>,
    mailbox: &'static Mailbox,
    index: usize,
}

impl<V: Vcpu + 'static> Remote<V> {
    fn snap(&self) -> &Snapshot {
        // SAFETY: this vCPU is quiet for the whole hold.
        unsafe { &*self.mailbox.snap.get() }
    }

    fn local(&self) -> &Cpu<V> {
        // SAFETY: the holder's vCPU, valid during the hold (`VcpuThreads::thread`).
        unsafe { &*self.local }
    }

    fn local_mut(&mut self) -> &mut Cpu<V> {
        // SAFETY: as above.
        unsafe { &mut *self.local }
    }
}

impl<V: Vcpu + 'static> GuestCpu for Remote<V> {
    fn regs(&self) -> CpuRegs {
        self.snap().regs
    }

    fn set_regs(&mut self, regs: &CpuRegs) {
        // SAFETY: this vCPU is quiet; it takes the registers when it leaves its park.
        unsafe {
            (*self.mailbox.snap.get()).regs = *regs;
            *self.mailbox.written.get() = Some(*regs);
        }
    }

    fn long_mode(&self) -> bool {
        self.snap().long_mode
    }

    fn translate(&self, gva: u64) -> Result<u64, AccessError> {
        let paging = self.snap().paging.ok_or(AccessError::Unmapped)?;
        let local = self.local();
        let read = |gpa: u64| {
            let mut b = [0u8; 8];
            local.read_phys(gpa, &mut b).then(|| u64::from_le_bytes(b))
        };
        let gpa = paging::translate(&read, &paging, gva, Access::READ)
            .map_err(|_| AccessError::Unmapped)?
            .gpa;
        if local.read_phys(gpa, &mut [0u8]) {
            Ok(gpa)
        } else {
            Err(AccessError::NotRam)
        }
    }

    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.local().read_phys(gpa, buf)
    }

    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool {
        self.local_mut().write_phys(gpa, data)
    }

    fn set_page_perms(&mut self, page: u64, perms: Perms) -> bool {
        self.local_mut().set_page_perms(page, perms)
    }

    fn exec_only(&self) -> bool {
        self.local().exec_only()
    }

    /// Hardware breakpoints are the machine's: every vCPU takes the slots (`hw_changed`).
    fn set_hw_slot(&mut self, _slot: usize, _use: Option<HwSlot>) {}

    fn info(&mut self, what: Info, out: &mut dyn Write) -> fmt::Result {
        let s = *self.snap();
        match what {
            Info::ControlRegs => {
                let p = s.paging.unwrap_or(PagingRegs {
                    cr0: 0,
                    cr3: 0,
                    cr4: 0,
                    efer: 0,
                    phys_addr_width: 0,
                });
                writeln!(out, "cr0  {:#018x}", p.cr0)?;
                writeln!(out, "cr2  {:#018x}", s.cr2)?;
                writeln!(out, "cr3  {:#018x}", p.cr3)?;
                writeln!(out, "cr4  {:#018x}", p.cr4)?;
                writeln!(out, "efer {:#018x}", p.efer)?;
                writeln!(out, "dr7  {:#018x}", s.dr7)?;
                writeln!(out, "mode {} cpl {}", s.mode, s.cpl)
            }
            _ => writeln!(
                out,
                "vCPU {}'s control block is on its own processor: ask while it is the one \
                 that stopped",
                self.index
            ),
        }
    }
}
