//! The start-up protocol of one vCPU, vendor-neutral: what an INIT and a start-up IPI (SIPI) do
//! to it (SDM Vol. 3A 9.4, "Multiple-Processor (MP) Initialization"; 11.6.1 for the IPIs).
//!
//! An application processor comes out of power-up or INIT in the *wait-for-SIPI* state; the
//! first SIPI starts it in real mode at vector × 4096, and any later SIPI is ignored while it
//! runs. An INIT puts a running application processor back into the INIT state to wait again;
//! one that already waits stays as it is. INIT level de-assert reaches no processor. An INIT to
//! the boot processor resets it into the firmware: Vigil does not emulate a reset and stops.
//!
//! [`next`] is the whole state machine, pure and host-tested; [`enter_init_state`] and [`start`]
//! carry an effect out through the vCPU trait, so any backend drives the same protocol from its
//! own mechanism: VMX from its INIT and SIPI VM exits (the processor decodes destinations and
//! holds waiting vCPUs in the wait-for-SIPI activity state), SVM from trapped writes to the
//! ICR (`super::apic` decodes them; the waiting vCPU parks in Vigil).
//!
//! The state is Vigil's own, never read back from the processor: an emulator may report the
//! wrong activity state on a SIPI exit (Bochs 3.0, docs/platform.md).
//!
//! One state is Vigil's addition: *starting*, from a SIPI until the vCPU's next exit. An INIT
//! that reaches a processor waiting for a SIPI is blocked (SDM Vol. 3C 26.2), and a processor
//! may hold it pending and exit for it as soon as the SIPI's entry unblocks it (Bochs 3.0
//! does), before the vCPU ran an instruction. That INIT is the one of the same INIT-SIPI pair:
//! it came before the SIPI and found the processor in the INIT state already. So an INIT while
//! starting changes nothing, where taking it would undo the SIPI and leave the guest's second
//! SIPI to rescue the start-up.

use crate::cpu::Cpu;
use crate::vcpu::{
    Activity, DescriptorTable, Flush, Host, Interruptibility, Seg, SegAttrs, Segment, Vcpu,
};
use x86_arch::regs::{DR6_FIXED1, DR7_FIXED1};

/// Where a vCPU is in the start-up protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Startup {
    /// Running guest code (halted counts as running: an interrupt wakes it).
    Running,
    /// In the INIT state, waiting for a start-up IPI.
    WaitForSipi,
    /// Started by a SIPI, and has not exited since (see the module's documentation).
    Starting,
}

impl Startup {
    /// The state after an exit that was not an INIT or a SIPI: a starting vCPU has run.
    pub fn after_exit(self) -> Startup {
        match self {
            Startup::Starting => Startup::Running,
            s => s,
        }
    }
}

/// A start-up signal arriving at a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// INIT (level assert, or edge).
    Init,
    /// INIT level de-assert.
    InitDeassert,
    /// A start-up IPI with its vector.
    Sipi(u8),
}

/// What a signal does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing: a SIPI to a running processor, an INIT to one that already waits, a de-assert.
    None,
    /// Into the INIT state, to wait for a start-up IPI.
    Init,
    /// Start in real mode at vector × 4096.
    Start(u8),
    /// INIT to the boot processor: a reset of the machine's boot path, which Vigil does not
    /// emulate.
    Reset,
}

/// The state machine: the state after `signal` and what it does to the vCPU.
pub const fn next(bsp: bool, state: Startup, signal: Signal) -> (Startup, Effect) {
    match (signal, state) {
        (Signal::InitDeassert, s) => (s, Effect::None),
        (Signal::Init, s) if bsp => (s, Effect::Reset),
        (Signal::Init, Startup::Running) => (Startup::WaitForSipi, Effect::Init),
        (Signal::Init, Startup::WaitForSipi) => (Startup::WaitForSipi, Effect::None),
        // The INIT held while it waited: it was done before the SIPI.
        (Signal::Init, Startup::Starting) => (Startup::Running, Effect::None),
        (Signal::Sipi(v), Startup::WaitForSipi) if !bsp => (Startup::Starting, Effect::Start(v)),
        (Signal::Sipi(_), s) => (s, Effect::None),
    }
}

/// A data segment of the INIT state: selector 0, base 0, limit 0xFFFF, present, read/write,
/// accessed (SDM Vol. 3A Table 10-1).
fn init_data_segment() -> Segment {
    Segment {
        selector: 0,
        base: 0,
        limit: 0xFFFF,
        attrs: SegAttrs {
            typ: 0x3,
            s: true,
            present: true,
            ..SegAttrs::default()
        },
    }
}

/// Puts the vCPU into the state INIT leaves a processor in (SDM Vol. 3A Table 10-1, the INIT
/// column), waiting for a start-up IPI. Registers INIT leaves alone (x87/SSE state, most MSRs,
/// the MTRRs, PAT) stay as they are. The local APIC is reset as INIT resets it (11.4.7.3): the
/// INIT never reached it, the backend caught it. Translations the processor cached for this
/// vCPU are dropped, as INIT drops them.
pub fn enter_init_state<V: Vcpu>(cpu: &mut Cpu<V>) {
    let signature = cpu.vcpu.host().cpuid(1, 0)[0];
    let v = &mut cpu.vcpu;
    for n in 0..16 {
        v.set_gpr(n, 0);
    }
    // EDX holds the processor's family, model and stepping (Table 10-1, footnote).
    v.set_gpr(crate::vcpu::gpr::RDX, signature as u64);
    v.set_efer(0);
    v.set_cr0(0x6000_0010); // CD, NW, ET
    v.set_cr4(0);
    v.set_cr3(0);
    v.set_cr2(0);
    v.set_rflags(0x2);
    v.set_rip(0xFFF0);
    v.set_segment(
        Seg::Cs,
        &Segment {
            selector: 0xF000,
            base: 0xFFFF_0000,
            limit: 0xFFFF,
            attrs: SegAttrs {
                typ: 0xB, // code, readable, accessed
                ..init_data_segment().attrs
            },
        },
    );
    for seg in [Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs, Seg::Ss] {
        v.set_segment(seg, &init_data_segment());
    }
    let system = |typ| Segment {
        attrs: SegAttrs {
            typ,
            s: false,
            present: true,
            ..SegAttrs::default()
        },
        ..init_data_segment()
    };
    v.set_segment(Seg::Ldtr, &system(0x2));
    // A busy 32-bit TSS: what VM entry accepts for TR outside IA-32e mode, and what long mode
    // may be entered with before the software loads its own (a 16-bit TSS makes the CR0.PG
    // write that activates IA-32e mode fault: SDM Vol. 3A 10.8.5).
    v.set_segment(Seg::Tr, &system(0xB));
    v.set_dtable(DescriptorTable::Gdtr, 0, 0xFFFF);
    v.set_dtable(DescriptorTable::Idtr, 0, 0xFFFF);
    for dr in 0..4 {
        v.set_dr(dr, 0);
    }
    v.set_dr(6, DR6_FIXED1);
    v.set_dr(7, DR7_FIXED1);
    v.set_interruptibility(Interruptibility::default());
    v.set_activity(Activity::WaitForSipi);
    v.flush(Flush::All);
    v.host().init_local_apic();
    cpu.events = Default::default();
    cpu.startup = Startup::WaitForSipi;
    cpu.time.waiting(true);
}

/// Starts a waiting vCPU in real mode at vector × 4096: CS.selector = vector × 256, CS.base =
/// vector × 4096, IP = 0 (SDM Vol. 3A 9.4.4.1, 11.6.1). Everything else is the INIT state it
/// waited in.
pub fn start<V: Vcpu>(cpu: &mut Cpu<V>, vector: u8) {
    let v = &mut cpu.vcpu;
    v.set_segment(
        Seg::Cs,
        &Segment {
            selector: (vector as u16) << 8,
            base: (vector as u64) << 12,
            limit: 0xFFFF,
            attrs: SegAttrs {
                typ: 0xB, // code, readable, accessed: the INIT state's CS
                ..init_data_segment().attrs
            },
        },
    );
    v.set_rip(0);
    // Nothing blocks events in a freshly started processor (an emulator may leave NMIs
    // blocked after a SIPI exit: docs/platform.md).
    v.set_interruptibility(Interruptibility::default());
    v.set_activity(Activity::Active);
    cpu.startup = Startup::Starting;
    cpu.time.waiting(false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use Effect as E;
    use Signal as S;
    use Startup::{Running, Starting, WaitForSipi};

    /// Feeds signals to an application processor from `state`; returns the effects.
    fn feed(mut state: Startup, signals: &[Signal]) -> (Startup, alloc::vec::Vec<Effect>) {
        let mut effects = alloc::vec::Vec::new();
        for &s in signals {
            let (next_state, e) = next(false, state, s);
            state = next_state;
            effects.push(e);
        }
        (state, effects)
    }

    #[test]
    fn linux_bring_up_starts_the_waiting_ap_once() {
        // INIT assert, INIT de-assert, SIPI, SIPI (wakeup_secondary_cpu_via_init).
        let (state, effects) = feed(
            WaitForSipi,
            &[S::Init, S::InitDeassert, S::Sipi(0x9A), S::Sipi(0x9A)],
        );
        assert_eq!(state, Starting);
        assert_eq!(effects, [E::None, E::None, E::Start(0x9A), E::None]);
        assert_eq!(state.after_exit(), Running, "its next exit: it ran");
    }

    #[test]
    fn an_init_held_while_waiting_does_not_undo_the_start() {
        // The processor held the INIT it got while waiting and exits for it right after the
        // SIPI's entry: the vCPU keeps running, and a second SIPI is then ignored.
        let (state, effects) = feed(
            WaitForSipi,
            &[S::Init, S::Sipi(0x9A), S::Init, S::Sipi(0x9A)],
        );
        assert_eq!(state, Running);
        assert_eq!(effects, [E::None, E::Start(0x9A), E::None, E::None]);
        // Once it ran, an INIT is the guest's own.
        let (state, effects) = feed(Running, &[S::Init]);
        assert_eq!((state, effects.as_slice()), (WaitForSipi, &[E::Init][..]));
    }

    #[test]
    fn init_to_a_running_ap_makes_it_wait_again() {
        let (state, effects) = feed(Running, &[S::Init, S::Init, S::Sipi(0x10)]);
        assert_eq!(state, Starting);
        assert_eq!(effects, [E::Init, E::None, E::Start(0x10)]);
        let (state, effects) = feed(state.after_exit(), &[S::Init]);
        assert_eq!((state, effects.as_slice()), (WaitForSipi, &[E::Init][..]));
    }

    #[test]
    fn a_sipi_that_finds_the_processor_running_is_ignored() {
        // The second SIPI of the protocol, or one that arrives while the first still starts it.
        assert_eq!(next(false, Running, S::Sipi(1)), (Running, E::None));
        assert_eq!(next(false, Starting, S::Sipi(1)), (Starting, E::None));
        // A SIPI before any INIT: the processor waits from power-up, so it starts.
        assert_eq!(
            next(false, WaitForSipi, S::Sipi(7)),
            (Starting, E::Start(7))
        );
    }

    #[test]
    fn the_boot_processor_is_never_started_and_init_resets_it() {
        assert_eq!(next(true, Running, S::Sipi(1)), (Running, E::None));
        assert_eq!(next(true, Running, S::Init), (Running, E::Reset));
        assert_eq!(next(true, Running, S::InitDeassert), (Running, E::None));
    }

    #[test]
    fn deassert_never_changes_anything() {
        for state in [Running, WaitForSipi, Starting] {
            assert_eq!(next(false, state, S::InitDeassert), (state, E::None));
        }
    }
}
