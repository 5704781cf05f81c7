//! Several vCPUs: what they share and how they meet.
//!
//! - [`startup`]: the start-up protocol of one vCPU (INIT, start-up IPIs), pure and
//!   host-tested, carried out through the vCPU trait.
//! - [`apic`]: the ICR decoded and its destinations resolved, for a backend that must deliver
//!   INIT and SIPI itself.
//! - [`Smp`] (here): the machine-wide meeting points. Each vCPU runs its own exit loop on its
//!   own processor; they share the configuration, the ownership table and the nested page
//!   tables (`crate::cpu::Vm`), and meet here:
//!   - **Holds**: one vCPU (the debugger at a stop, a run that ends) asks every other to park
//!     in Vigil; each parks at its next exit. A vCPU waiting for a start-up IPI runs no guest
//!     code and counts as parked. The backend makes every vCPU exit at least every
//!     [`POLL_TICKS`] host ticks of guest execution when there is more than one (VMX: the
//!     preemption timer), so a hold completes without sending the guest's processors any
//!     interrupt: the local APICs are the guest's.
//!   - **The end of the run**: the vCPU whose guest stops the machine claims the end, holds
//!     the others, prints every vCPU's statistics and powers off.
//!   - **Posted start-up signals**: a backend that catches the guest's INIT and SIPI itself
//!     (a trapped ICR) posts them to their targets ([`Smp::post`]), which take them in order.
//!   - **Nested-table changes**: whoever changes the shared nested tables bumps a generation;
//!     every vCPU compares it before each entry and drops its cached translations when it moved
//!     (VMX: INVEPT). Changes are made while the other vCPUs are parked, so none runs on a stale
//!     translation.

pub mod apic;
pub mod startup;

use crate::config::TscMode;
use crate::stats::ExitStats;
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// The most vCPUs a machine may have (one per processor; Vigil's per-CPU blocks).
pub const MAX_VCPUS: usize = 8;

/// With more than one vCPU, every vCPU exits at least this often (host ticks of guest
/// execution), so that holds complete.
pub const POLL_TICKS: u64 = 1 << 21;

/// What one vCPU is doing, as the others see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Presence {
    /// Not in this machine (no processor, or not started yet).
    Absent = 0,
    /// Running guest code, or handling one of its exits.
    Running = 1,
    /// In the guest's wait-for-SIPI state: runs no guest code until a start-up IPI.
    WaitingForSipi = 2,
    /// Held in Vigil by another vCPU.
    Parked = 3,
    /// Stopped for good: the run is over.
    Ended = 4,
}

impl Presence {
    fn from_u8(v: u8) -> Presence {
        match v {
            1 => Presence::Running,
            2 => Presence::WaitingForSipi,
            3 => Presence::Parked,
            4 => Presence::Ended,
            _ => Presence::Absent,
        }
    }

    /// Runs no guest code and touches nothing shared until released.
    pub fn quiet(self) -> bool {
        self != Presence::Running
    }
}

/// One vCPU's public face.
pub struct Slot {
    presence: AtomicU8,
    /// Start-up signals posted to it by another vCPU ([`Smp::post`]).
    signals: AtomicU32,
    /// Its exit statistics (for the table at the end of the run).
    stats: AtomicPtr<ExitStats>,
    /// Its processor's local APIC ID.
    apic_id: AtomicU32,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            presence: AtomicU8::new(Presence::Absent as u8),
            signals: AtomicU32::new(0),
            stats: AtomicPtr::new(core::ptr::null_mut()),
            apic_id: AtomicU32::new(0),
        }
    }
}

/// Posted-signal bits: an INIT is pending; a SIPI is pending (its vector in bits 7:0).
const POSTED_INIT: u32 = 1 << 31;
const POSTED_SIPI: u32 = 1 << 30;

/// Why a hold ends for a parked vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    /// The holder let go: run on.
    Resume,
    /// The run is over (another vCPU ended it).
    Ended,
}

pub struct Smp {
    count: usize,
    slots: [Slot; MAX_VCPUS],
    /// 1 + the index of the vCPU holding the others; 0: nobody.
    holder: AtomicU32,
    /// A vCPU claimed the end of the run.
    ending: AtomicBool,
    /// Bumped on every change of the shared nested tables.
    nested_generation: AtomicU64,
    /// The vCPUs' clocks under `tsc=hide` (`crate::time::smp`).
    pub clocks: crate::time::smp::Clocks,
}

impl core::fmt::Debug for Smp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Smp").field("count", &self.count).finish()
    }
}

impl Smp {
    /// A machine of `count` vCPUs (at least one, at most [`MAX_VCPUS`]).
    pub fn new(count: usize) -> Smp {
        Smp {
            count: count.clamp(1, MAX_VCPUS),
            slots: [const { Slot::new() }; MAX_VCPUS],
            holder: AtomicU32::new(0),
            ending: AtomicBool::new(false),
            nested_generation: AtomicU64::new(0),
            clocks: crate::time::smp::Clocks::new(),
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether there is more than one vCPU.
    pub fn multi(&self) -> bool {
        self.count > 1
    }

    /// vCPU `id` joins the machine, running (the boot vCPU) or waiting for a start-up IPI.
    pub fn join(&self, id: usize, apic_id: u32, stats: *const ExitStats, presence: Presence) {
        let s = &self.slots[id];
        s.apic_id.store(apic_id, Ordering::Relaxed);
        s.stats.store(stats as *mut ExitStats, Ordering::Release);
        s.presence.store(presence as u8, Ordering::SeqCst);
    }

    pub fn presence(&self, id: usize) -> Presence {
        Presence::from_u8(self.slots[id].presence.load(Ordering::SeqCst))
    }

    /// Records whether vCPU `id` waits for a start-up IPI (no guest code) or runs.
    pub fn set_presence(&self, id: usize, p: Presence) {
        self.slots[id].presence.store(p as u8, Ordering::SeqCst);
    }

    pub fn apic_id(&self, id: usize) -> u32 {
        self.slots[id].apic_id.load(Ordering::Relaxed)
    }

    /// Whether a vCPU must look up from its loop before the next entry: someone holds, or the
    /// run ends. One load on the exit path.
    #[inline(always)]
    pub fn attention(&self) -> bool {
        self.holder.load(Ordering::SeqCst) != 0 || self.ending.load(Ordering::Relaxed)
    }

    pub fn ending(&self) -> bool {
        self.ending.load(Ordering::SeqCst)
    }

    /// The vCPU holding the others, if any.
    pub fn holder(&self) -> Option<usize> {
        match self.holder.load(Ordering::SeqCst) {
            0 => None,
            h => Some(h as usize - 1),
        }
    }

    /// vCPU `me` asks to hold every other vCPU; false if another holds already (then `me`
    /// parks first: see [`Smp::park`]). Returns at once: [`Smp::wait_quiet`] waits for them.
    pub fn try_hold(&self, me: usize) -> bool {
        self.holder
            .compare_exchange(0, me as u32 + 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Whether every vCPU but `me` is quiet (parked, waiting for a start-up IPI, ended).
    pub fn all_quiet(&self, me: usize) -> bool {
        (0..self.count).all(|i| i == me || self.presence(i).quiet())
    }

    /// Waits until every vCPU but `me` is quiet, calling `idle` meanwhile; gives up (false)
    /// once `give_up` says so.
    pub fn wait_quiet(&self, me: usize, mut give_up: impl FnMut() -> bool) -> bool {
        loop {
            if self.all_quiet(me) {
                return true;
            }
            if give_up() {
                return false;
            }
            core::hint::spin_loop();
        }
    }

    /// The holder `me` hands the machine to vCPU `to` (parked), which leaves its park as the
    /// holder while every other vCPU stays parked; `me` parks at its next entry.
    pub fn hand_over(&self, me: usize, to: usize) {
        let _ = self.holder.compare_exchange(
            me as u32 + 1,
            to as u32 + 1,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Lets the held vCPUs run on.
    pub fn release(&self, me: usize) {
        let _ = self
            .holder
            .compare_exchange(me as u32 + 1, 0, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// vCPU `me` parks until the holder releases it, hands the machine to it, or the run ends.
    /// Its presence is then what it was before.
    pub fn park(&self, me: usize) -> Released {
        let before = self.presence(me);
        self.set_presence(me, Presence::Parked);
        let released = loop {
            if self.ending() {
                break Released::Ended;
            }
            match self.holder() {
                None => break Released::Resume,
                Some(h) if h == me => break Released::Resume,
                Some(_) => {}
            }
            core::hint::spin_loop();
        };
        match released {
            Released::Ended => self.set_presence(me, Presence::Ended),
            Released::Resume => self.set_presence(me, before),
        }
        released
    }

    /// vCPU `me` claims the end of the run: false if another vCPU claimed it first (then `me`
    /// only stops). The others park at their next exit and end there.
    pub fn claim_end(&self, me: usize) -> bool {
        let first = !self.ending.swap(true, Ordering::SeqCst);
        self.set_presence(me, Presence::Ended);
        first
    }

    /// Every vCPU's statistics, by vCPU number (those that joined).
    pub fn stats(&self) -> impl Iterator<Item = (usize, &ExitStats)> + '_ {
        (0..self.count).filter_map(|i| {
            let p = self.slots[i].stats.load(Ordering::Acquire);
            // SAFETY: set by `join` from a vCPU's boxed statistics, which live as long as the
            // run; read once the vCPU is quiet (or, for one that never parked, racily but only
            // for counters it may still be adding to).
            (!p.is_null()).then(|| (i, unsafe { &*p }))
        })
    }

    /// Posts a start-up signal to vCPU `to`, for a backend that delivers INIT and SIPI itself
    /// (it caught the guest's ICR write and decoded its destinations with [`apic`]); the target
    /// takes it with [`Smp::take_signals`] and feeds it to [`startup::next`]. An INIT overrides a
    /// SIPI that was still pending (it came first); the de-assert reaches nobody and is never
    /// posted. Waking a target that runs in the guest is the backend's business.
    pub fn post(&self, to: usize, signal: startup::Signal) {
        let slot = &self.slots[to];
        match signal {
            startup::Signal::Init => {
                slot.signals.store(POSTED_INIT, Ordering::SeqCst);
            }
            startup::Signal::Sipi(v) => {
                let _ = slot
                    .signals
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                        Some((s & POSTED_INIT) | POSTED_SIPI | v as u32)
                    });
            }
            startup::Signal::InitDeassert => {}
        }
    }

    /// The signals posted to vCPU `me` since it last looked, in the order they take effect: an
    /// INIT first, then a SIPI.
    pub fn take_signals(&self, me: usize) -> [Option<startup::Signal>; 2] {
        let s = self.slots[me].signals.swap(0, Ordering::SeqCst);
        [
            (s & POSTED_INIT != 0).then_some(startup::Signal::Init),
            (s & POSTED_SIPI != 0).then_some(startup::Signal::Sipi(s as u8)),
        ]
    }

    /// The nested tables' generation now.
    #[inline(always)]
    pub fn nested_generation(&self) -> u64 {
        self.nested_generation.load(Ordering::SeqCst)
    }

    /// The shared nested tables changed: every vCPU drops what it cached before its next entry.
    /// Returns the new generation.
    pub fn nested_changed(&self) -> u64 {
        self.nested_generation.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// Refuses the time mode that cannot keep several vCPUs' TSCs together: `tsc=frozen` stops a
/// vCPU's clock for the whole of each of its exits, while another vCPU's clock runs on through
/// it, so a value read on one processor could be behind one read earlier on another. (`hide`
/// takes out only what `crate::time::smp` allows.)
pub fn check_time_mode(tsc: TscMode, cpus: usize) -> Result<(), String> {
    if tsc != TscMode::Frozen || cpus < 2 {
        return Ok(());
    }
    Err(format!(
        "tsc=frozen stops each vCPU's TSC for the whole of its own exits, so with {cpus} \
         processors the guest's TSCs would drift apart (a value read on one processor could be \
         behind one read earlier on another); use tsc=hide, native, offset:N or scale:P/Q, or \
         one processor"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HideLimit;

    #[test]
    fn only_frozen_time_is_refused_on_several_processors() {
        assert!(check_time_mode(TscMode::Frozen, 1).is_ok());
        let why = check_time_mode(TscMode::Frozen, 2).unwrap_err();
        assert!(why.contains("2 processors"), "{why}");
        for mode in [
            TscMode::Hide(HideLimit::Bounded),
            TscMode::Hide(HideLimit::Unbounded),
            TscMode::Native,
            TscMode::Offset(5),
            TscMode::Scale(3, 2),
        ] {
            assert!(check_time_mode(mode, 4).is_ok());
        }
    }
    use std::sync::Arc;

    #[test]
    fn a_hold_waits_for_every_running_vcpu_and_counts_waiting_ones_as_quiet() {
        let smp = Arc::new(Smp::new(3));
        smp.join(0, 0, core::ptr::null(), Presence::Running);
        smp.join(1, 1, core::ptr::null(), Presence::Running);
        smp.join(2, 2, core::ptr::null(), Presence::WaitingForSipi);
        assert!(smp.try_hold(0));
        assert!(!smp.try_hold(1), "one holder at a time");
        assert!(!smp.all_quiet(0), "vCPU 1 still runs");
        let other = {
            let smp = smp.clone();
            std::thread::spawn(move || {
                assert!(smp.attention());
                let r = smp.park(1);
                (r, smp.presence(1))
            })
        };
        assert!(smp.wait_quiet(0, || false));
        assert_eq!(smp.presence(1), Presence::Parked);
        smp.release(0);
        let (released, after) = other.join().unwrap();
        assert_eq!(released, Released::Resume);
        assert_eq!(after, Presence::Running, "back to what it was");
        assert!(!smp.attention());
    }

    #[test]
    fn the_end_is_claimed_once_and_ends_parked_vcpus() {
        let smp = Arc::new(Smp::new(2));
        smp.join(0, 0, core::ptr::null(), Presence::Running);
        smp.join(1, 1, core::ptr::null(), Presence::Running);
        assert!(smp.try_hold(0));
        let parked = {
            let smp = smp.clone();
            std::thread::spawn(move || smp.park(1))
        };
        assert!(smp.wait_quiet(0, || false));
        assert!(smp.claim_end(0));
        assert!(!smp.claim_end(1), "only the first claim ends the run");
        assert_eq!(parked.join().unwrap(), Released::Ended);
        assert_eq!(smp.presence(1), Presence::Ended);
    }

    #[test]
    fn a_hold_handed_over_lets_one_vcpu_out_and_keeps_the_others() {
        let smp = Arc::new(Smp::new(3));
        for i in 0..3 {
            smp.join(i, i as u32, core::ptr::null(), Presence::Running);
        }
        assert!(smp.try_hold(0));
        let spawn = |i: usize| {
            let smp = smp.clone();
            std::thread::spawn(move || (smp.park(i), smp.holder()))
        };
        let (one, two) = (spawn(1), spawn(2));
        assert!(smp.wait_quiet(0, || false));
        smp.hand_over(0, 1);
        assert_eq!(one.join().unwrap(), (Released::Resume, Some(1)));
        assert_eq!(smp.presence(2), Presence::Parked, "vCPU 2 stays");
        assert!(smp.attention(), "and vCPU 0 must park too");
        smp.release(1);
        assert_eq!(two.join().unwrap(), (Released::Resume, None));
    }

    #[test]
    fn waiting_gives_up_when_asked() {
        let smp = Smp::new(2);
        smp.join(1, 1, core::ptr::null(), Presence::Running);
        let mut tries = 0;
        assert!(!smp.wait_quiet(0, || {
            tries += 1;
            tries > 10
        }));
    }

    #[test]
    fn posted_signals_come_out_init_first_and_an_init_overrides_an_older_sipi() {
        use startup::Signal::{Init, InitDeassert, Sipi};
        let smp = Smp::new(2);
        assert_eq!(smp.take_signals(1), [None, None]);
        // Linux's order: INIT, de-assert, SIPI, SIPI.
        smp.post(1, Init);
        smp.post(1, InitDeassert);
        smp.post(1, Sipi(0x9A));
        smp.post(1, Sipi(0x9A));
        assert_eq!(smp.take_signals(1), [Some(Init), Some(Sipi(0x9A))]);
        assert_eq!(smp.take_signals(1), [None, None], "taken once");
        // A SIPI, then an INIT before the target looked: the INIT came last.
        smp.post(1, Sipi(0x10));
        smp.post(1, Init);
        assert_eq!(smp.take_signals(1), [Some(Init), None]);
        // Fed to the state machine in that order, a waiting vCPU starts.
        let mut state = startup::Startup::WaitForSipi;
        smp.post(1, Init);
        smp.post(1, Sipi(0x20));
        let mut effects = alloc::vec::Vec::new();
        for s in smp.take_signals(1).into_iter().flatten() {
            let (next, e) = startup::next(false, state, s);
            state = next;
            effects.push(e);
        }
        assert_eq!(
            effects,
            [startup::Effect::None, startup::Effect::Start(0x20)]
        );
    }

    #[test]
    fn nested_generation_moves_on_every_change() {
        let smp = Smp::new(1);
        let g = smp.nested_generation();
        assert_eq!(smp.nested_changed(), g + 1);
        assert_eq!(smp.nested_generation(), g + 1);
    }
}
