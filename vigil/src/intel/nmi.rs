//! NMIs that arrive while Vigil runs in VMX root. The guest owns the interrupt controllers, so
//! an NMI that comes between a VM exit and the next entry is the guest's (an IPI it sent itself,
//! a watchdog, its performance counters): it reaches Vigil's IDT only because Vigil happened to
//! be running. Vigil's NMI handler records it, and it is delivered to the guest at the next
//! entry that can take it (no other event injected, no STI/MOV SS shadow, NMIs not blocked,
//! not waiting for a SIPI; SDM Vol. 3C 27.3.1.5) — never fatal.
//!
//! An NMI that lands after Vigil last looked (between the check before an entry and the entry
//! itself) is injected by the handler itself: while the vCPU is entering, the handler writes the
//! VM-entry interruption information, which nothing else writes then. If the entry cannot take
//! an NMI, it waits for the next exit.

use super::vcpu::VmxVcpu;
use core::sync::atomic::{AtomicU64, Ordering};
use vmx::exit::InterruptionInfo;
use vmx::vmcs::{Field, RealVmcs, VmcsAccess};
use x86_arch::event::Event;

/// NMIs taken in VMX root and not yet delivered: one bit per CPU (`percpu::MAX_CPUS` <= 64),
/// since an NMI belongs to the guest of the processor that took it. An NMI is a latch, so one
/// bit holds any number of them.
static PENDING: AtomicU64 = AtomicU64::new(0);
/// One bit per CPU, set while that vCPU prepares its entry and enters: the handler may then
/// inject by itself.
static ENTERING: AtomicU64 = AtomicU64::new(0);
/// NMIs taken in VMX root, and how many of them the handler injected itself.
static TAKEN: AtomicU64 = AtomicU64::new(0);
static INJECTED_BY_HANDLER: AtomicU64 = AtomicU64::new(0);
/// How soon to try again to inject an NMI the guest could not take at an entry, in host ticks:
/// the preemption timer brings the guest back, so a held NMI is late but never lost.
const RETRY_TICKS: u64 = 1 << 12;

fn bit() -> u64 {
    1 << (crate::percpu::current().map_or(0, |c| c.id) & 63)
}

/// How many NMIs arrived while Vigil ran, and how many of those the handler injected itself
/// (the rest waited for the next entry), for the closing statistics.
pub fn counts() -> (u64, u64) {
    (
        TAKEN.load(Ordering::Relaxed),
        INJECTED_BY_HANDLER.load(Ordering::Relaxed),
    )
}

/// Interruptibility state bits (SDM Vol. 3C 25.4.2, Table 25-3).
const BLOCKING_STI: u64 = 1 << 0;
const BLOCKING_MOV_SS: u64 = 1 << 1;
const BLOCKING_NMI: u64 = 1 << 3;
const ACTIVITY_SHUTDOWN: u64 = 2;
const ACTIVITY_WAIT_FOR_SIPI: u64 = 3;
const VALID: u64 = 1 << 31;

/// Injects an NMI into the next entry if it can take one now; false otherwise.
fn try_inject(vmcs: &mut RealVmcs) -> bool {
    if vmcs.read(Field::VmEntryInterruptionInfo) & VALID != 0 {
        return false;
    }
    let blocking = vmcs.read(Field::GuestInterruptibilityState);
    let activity = vmcs.read(Field::GuestActivityState);
    if blocking & (BLOCKING_STI | BLOCKING_MOV_SS | BLOCKING_NMI) != 0
        || activity == ACTIVITY_SHUTDOWN
        || activity == ACTIVITY_WAIT_FOR_SIPI
    {
        return false;
    }
    let info = InterruptionInfo::from_event(&Event::nmi());
    vmcs.write(Field::VmEntryInterruptionInfo, info.0 as u64);
    // Delivery wakes a halted guest.
    vmcs.write(Field::GuestActivityState, 0);
    true
}

/// Vigil's NMI handler (from the IDT, on the fault stack).
pub fn taken() {
    TAKEN.fetch_add(1, Ordering::Relaxed);
    let me = bit();
    if ENTERING.load(Ordering::SeqCst) & me != 0
        && crate::percpu::current().is_some_and(|c| c.vmcs_loaded.load(Ordering::Relaxed))
    {
        let mut vmcs = RealVmcs;
        if try_inject(&mut vmcs) {
            INJECTED_BY_HANDLER.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    PENDING.fetch_or(me, Ordering::SeqCst);
}

impl VmxVcpu {
    /// Before an entry: from now on the NMI handler injects by itself; an NMI it recorded
    /// earlier is injected now if this entry can take it, else the preemption timer brings the
    /// guest back soon to try again. With nothing held anywhere this is one load.
    pub(super) fn nmi_before_entry(&mut self) {
        let me = bit();
        ENTERING.fetch_or(me, Ordering::SeqCst);
        let held = PENDING.load(Ordering::Relaxed) & me != 0
            && PENDING.fetch_and(!me, Ordering::SeqCst) & me != 0;
        if held && !try_inject(&mut self.vmcs) {
            PENDING.fetch_or(me, Ordering::SeqCst);
            self.retry_nmi(true);
        } else if self.nmi_retry {
            self.retry_nmi(false);
        }
    }

    /// After the exit: Vigil handles it, and NMIs wait for the next entry again. Every VM exit
    /// clears the valid bit of the VM-entry interruption information (SDM Vol. 3C 28.2.4), so
    /// an injection found there now is the handler's, made between the exit and this call: it
    /// goes back to waiting, as the exit's own handling may inject another event.
    pub(super) fn nmi_after_exit(&mut self) {
        let me = bit();
        ENTERING.fetch_and(!me, Ordering::SeqCst);
        if self.vmcs.read(Field::VmEntryInterruptionInfo) & VALID != 0 {
            self.vmcs.write(Field::VmEntryInterruptionInfo, 0);
            PENDING.fetch_or(me, Ordering::SeqCst);
        }
    }

    /// Shortens the preemption timer while an NMI is held (`on`), or gives it back to its
    /// regular use.
    fn retry_nmi(&mut self, on: bool) {
        if on {
            let retry = self.poll.map_or(RETRY_TICKS, |p| p.min(RETRY_TICKS));
            self.nmi_retry = self.arm_preemption_timer(Some(retry));
        } else {
            self.nmi_retry = false;
            self.arm_preemption_timer(self.poll);
        }
    }
}
