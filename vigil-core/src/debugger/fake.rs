//! A fake vCPU for the host tests: 1 MiB of guest RAM identity-mapped, guest-virtual addresses
//! below 1 MiB translating to themselves, and a record of the EPT permissions and debug slots
//! the debugger set.

use super::{AccessError, CpuRegs, GuestCpu, HwSlot, Info};
use crate::nested::Perms;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;

pub const RAM: usize = 1 << 20;

pub struct FakeCpu {
    pub regs: CpuRegs,
    pub mem: Vec<u8>,
    pub perms: BTreeMap<u64, Perms>,
    pub slots: [Option<HwSlot>; 4],
    pub exec_only: bool,
    pub long_mode: bool,
}

impl FakeCpu {
    pub fn new() -> FakeCpu {
        FakeCpu {
            regs: CpuRegs::default(),
            mem: alloc::vec![0; RAM],
            perms: BTreeMap::new(),
            slots: [None; 4],
            exec_only: true,
            long_mode: true,
        }
    }

    /// Permissions of a page (RWX if never set).
    pub fn perms_of(&self, page: u64) -> Perms {
        self.perms.get(&page).copied().unwrap_or(Perms::RWX)
    }
}

impl GuestCpu for FakeCpu {
    fn regs(&self) -> CpuRegs {
        self.regs
    }
    fn set_regs(&mut self, regs: &CpuRegs) {
        self.regs = *regs;
    }
    fn long_mode(&self) -> bool {
        self.long_mode
    }
    fn translate(&self, gva: u64) -> Result<u64, AccessError> {
        if gva < RAM as u64 {
            Ok(gva)
        } else {
            Err(AccessError::Unmapped)
        }
    }
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let end = gpa.checked_add(buf.len() as u64);
        match end {
            Some(end) if end <= RAM as u64 => {
                buf.copy_from_slice(&self.mem[gpa as usize..end as usize]);
                true
            }
            _ => false,
        }
    }
    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool {
        let end = gpa.checked_add(data.len() as u64);
        match end {
            Some(end) if end <= RAM as u64 => {
                self.mem[gpa as usize..end as usize].copy_from_slice(data);
                true
            }
            _ => false,
        }
    }
    fn set_page_perms(&mut self, page: u64, perms: Perms) -> bool {
        self.perms.insert(page, perms);
        true
    }
    fn exec_only(&self) -> bool {
        self.exec_only
    }
    fn set_hw_slot(&mut self, slot: usize, use_: Option<HwSlot>) {
        self.slots[slot] = use_;
    }
    fn info(&mut self, what: Info, out: &mut dyn fmt::Write) -> fmt::Result {
        writeln!(out, "info {what:?}")
    }
}

/// A port that collects what the stub writes.
#[derive(Clone, Default)]
pub struct Collect(pub Rc<RefCell<Vec<u8>>>);

impl Collect {
    pub fn take(&self) -> Vec<u8> {
        core::mem::take(&mut *self.0.borrow_mut())
    }
}

impl super::session::Port for Collect {
    fn put(&mut self, byte: u8) {
        let mut v = self.0.borrow_mut();
        // Bounded, so endless fuzzing cannot exhaust memory.
        if v.len() < 1 << 20 {
            v.push(byte);
        }
    }
}
