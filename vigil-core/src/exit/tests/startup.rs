//! INIT and start-up IPI exits through the start-up protocol (`crate::smp::startup`): an
//! application vCPU waits in the INIT state, starts at its SIPI's vector, ignores a second SIPI,
//! goes back to waiting on INIT; the boot vCPU never starts by SIPI and stops the run on INIT.

use crate::exit::{Action, Exit, Stop};
use crate::smp::startup::{enter_init_state, Startup};
use crate::testing::{cpu, exit, FakeVcpu};
use crate::vcpu::{gpr, Activity, DescriptorTable, Flush, Seg, Vcpu};
use x86_arch::regs::*;

/// Application vCPU 1 as it comes out of INIT.
fn ap() -> crate::cpu::Cpu<FakeVcpu> {
    let mut c = cpu("");
    c.id = 1;
    c.vcpu.host.cpuid.insert((1, 0), [0x0005_0654, 0, 0, 0]);
    enter_init_state(&mut c);
    c
}

#[test]
fn init_leaves_the_architectural_init_state() {
    let mut c = ap();
    let v = &c.vcpu;
    assert_eq!(c.startup, Startup::WaitForSipi);
    assert_eq!(v.activity, Activity::WaitForSipi);
    // SDM Vol. 3A Table 10-1, INIT column.
    assert_eq!(v.rip, 0xFFF0);
    assert_eq!(v.rflags, 0x2);
    assert_eq!(v.cr0, 0x6000_0010);
    assert_eq!((v.cr2, v.cr3, v.cr4, v.efer), (0, 0, 0, 0));
    let cs = v.segment(Seg::Cs);
    assert_eq!(
        (cs.selector, cs.base, cs.limit),
        (0xF000, 0xFFFF_0000, 0xFFFF)
    );
    for seg in [Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs, Seg::Ss] {
        let s = v.segment(seg);
        assert_eq!((s.selector, s.base, s.limit), (0, 0, 0xFFFF), "{seg:?}");
        assert!(s.attrs.present && s.attrs.s && !s.attrs.unusable);
    }
    assert_eq!(v.dtable(DescriptorTable::Gdtr), (0, 0xFFFF));
    assert_eq!(v.dtable(DescriptorTable::Idtr), (0, 0xFFFF));
    assert_eq!(v.gpr(gpr::RDX), 0x0005_0654, "the processor signature");
    assert_eq!(v.gpr(gpr::RAX), 0);
    assert_eq!((v.dr(6), v.dr(7)), (DR6_FIXED1, DR7_FIXED1));
    assert_eq!(v.flushes, [Flush::All], "INIT drops cached translations");
    assert_eq!(v.host.apic_inits, 1, "and resets the local APIC");
    let _ = &mut c;
}

#[test]
fn sipi_starts_a_waiting_vcpu_in_real_mode_and_a_second_is_ignored() {
    let mut c = ap();
    assert_eq!(exit(&mut c, Exit::Sipi { vector: 0x9A }), Action::Resume);
    let cs = c.vcpu.segs[Seg::Cs as usize];
    assert_eq!((cs.selector, cs.base, cs.limit), (0x9A00, 0x9_A000, 0xFFFF));
    assert_eq!(c.vcpu.rip, 0);
    assert_eq!(c.vcpu.activity, Activity::Active);
    assert_eq!(c.startup, Startup::Starting);
    assert!(!c.vcpu.intr.nmi, "nothing blocks events after a SIPI");
    // The second SIPI of the protocol finds it running (here: already at 0x9A00:0x10).
    c.vcpu.rip = 0x10;
    assert_eq!(exit(&mut c, Exit::Sipi { vector: 0x9A }), Action::Resume);
    assert_eq!(c.vcpu.rip, 0x10);
    assert_eq!(c.vcpu.segs[Seg::Cs as usize].selector, 0x9A00);
}

#[test]
fn the_waiting_state_comes_from_vigil_not_from_the_processor() {
    // An emulator may save ACTIVE as the activity state of an exit taken in wait-for-SIPI
    // (Bochs 3.0): the SIPI still starts the vCPU, and blocking by NMI it saved is cleared.
    let mut c = ap();
    c.vcpu.activity = Activity::Active;
    c.vcpu.intr.nmi = true;
    exit(&mut c, Exit::Sipi { vector: 0x10 });
    assert_eq!(
        (c.vcpu.rip, c.vcpu.segs[Seg::Cs as usize].base),
        (0, 0x1_0000)
    );
    assert!(!c.vcpu.intr.nmi);
}

#[test]
fn an_init_held_through_the_wait_does_not_undo_the_start() {
    // The processor exits for the INIT it held while the vCPU waited, right after the SIPI's
    // entry (Bochs 3.0): the start stands, and the guest's second SIPI is then ignored.
    let mut c = ap();
    exit(&mut c, Exit::Sipi { vector: 0x9A });
    assert_eq!(exit(&mut c, Exit::Init), Action::Resume);
    assert_eq!(c.startup, Startup::Running);
    assert_eq!(
        (c.vcpu.rip, c.vcpu.segs[Seg::Cs as usize].base),
        (0, 0x9_A000)
    );
    assert_eq!(c.vcpu.host.apic_inits, 1, "only the INIT that created it");
    exit(&mut c, Exit::Sipi { vector: 0x9A });
    assert_eq!(c.vcpu.rip, 0);
}

#[test]
fn init_to_a_running_ap_makes_it_wait_for_the_next_sipi() {
    let mut c = ap();
    exit(&mut c, Exit::Sipi { vector: 0x9A });
    // It ran: the exit loop saw another exit.
    c.startup = c.startup.after_exit();
    c.vcpu.rip = 0x1234;
    c.vcpu.cr0 = CR0_PE | CR0_PG | CR0_ET | CR0_NE;
    c.vcpu.efer = EFER_LME | EFER_LMA;
    c.events.pending_nmi = true;
    assert_eq!(exit(&mut c, Exit::Init), Action::Resume);
    assert_eq!(c.startup, Startup::WaitForSipi);
    assert_eq!(
        (c.vcpu.rip, c.vcpu.cr0, c.vcpu.efer),
        (0xFFF0, 0x6000_0010, 0)
    );
    assert!(!c.events.pending_nmi, "INIT drops what was pending");
    // An INIT while it waits changes nothing (the INIT of the next INIT-SIPI-SIPI).
    c.vcpu.gprs[0] = 7;
    assert_eq!(exit(&mut c, Exit::Init), Action::Resume);
    assert_eq!(c.vcpu.gprs[0], 7);
    assert_eq!(c.vcpu.host.apic_inits, 2);
    exit(&mut c, Exit::Sipi { vector: 0x20 });
    assert_eq!(
        (c.vcpu.rip, c.vcpu.segs[Seg::Cs as usize].base),
        (0, 0x2_0000)
    );
}

#[test]
fn the_boot_vcpu_is_never_started_by_sipi_and_stops_on_init() {
    let mut c = cpu("");
    assert_eq!(exit(&mut c, Exit::Sipi { vector: 0x10 }), Action::Resume);
    assert_eq!(c.vcpu.rip, 0x1000);
    assert_eq!(
        exit(&mut c, Exit::Init),
        Action::Stop(Stop::Failed("guest reset (INIT) is not supported"))
    );
    assert_eq!(c.vcpu.reports.len(), 1);
}
