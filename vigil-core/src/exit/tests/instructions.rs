//! The instruction exits with small handlers: HLT, RDTSC/RDTSCP, RDPMC, XSETBV, INVD, INVLPG,
//! INVPCID, the undefined instructions, and the exits that end or start a vCPU.

use crate::exit::{Action, Exit, Stop, TaskSwitchSource};
use crate::testing::{cpu, exit, FakeVcpu};
use crate::vcpu::{msr, Activity, Flush, Seg};
use x86_arch::event::Event;
use x86_arch::regs::*;

#[test]
fn hlt_halts_and_retires() {
    let mut c = cpu("trap=hlt");
    assert_eq!(exit(&mut c, Exit::Hlt), Action::Advance);
    assert_eq!(c.vcpu.activity, Activity::Halt);
    assert_eq!(c.vcpu.rip, 0x1002);
    assert_eq!(c.vcpu.single_steps, 0);
}

#[test]
fn hlt_with_tf_owes_the_single_step_trap() {
    // Bare metal traps after HLT; with VMX the trap must be pending while the vCPU halts, or
    // VM entry fails (SDM Vol. 3C 27.3.1.5).
    let mut c = cpu("trap=hlt");
    c.vcpu.rflags |= RFLAGS_TF;
    exit(&mut c, Exit::Hlt);
    assert_eq!(c.vcpu.activity, Activity::Halt);
    assert_eq!(c.vcpu.single_steps, 1);
    // With DEBUGCTL.BTF only branches trap.
    let mut c = cpu("trap=hlt");
    c.vcpu.rflags |= RFLAGS_TF;
    c.vcpu.msrs.insert(msr::IA32_DEBUGCTL, DEBUGCTL_BTF);
    exit(&mut c, Exit::Hlt);
    assert_eq!(c.vcpu.single_steps, 0);
}

#[test]
fn rdtsc_returns_the_guests_tsc_at_the_exit() {
    let mut c = cpu("trap=rdtsc tsc=offset:0x100000000000");
    c.exit_tsc = 0x1234;
    c.vcpu.gprs[0] = u64::MAX;
    c.vcpu.gprs[2] = u64::MAX;
    assert_eq!(exit(&mut c, Exit::Rdtsc), Action::Advance);
    assert_eq!(c.vcpu.gprs[0], 0x1234, "EAX zero-extended");
    assert_eq!(c.vcpu.gprs[2], 0x1000);
    assert_eq!(c.time.last_emulated, Some(0x1000_0000_1234));
}

#[test]
fn rdtscp_also_returns_tsc_aux() {
    let mut c = cpu("trap=rdtsc");
    c.vcpu.host.msrs.insert(0xC000_0103, 0xFFFF_FFFF_0000_0007);
    c.vcpu.gprs[1] = u64::MAX;
    exit(&mut c, Exit::Rdtscp);
    assert_eq!(c.vcpu.gprs[1], 7);
}

#[test]
fn hidden_time_reads_the_tsc_when_the_instruction_ran() {
    let mut c = cpu("tsc=hide");
    c.time.v.calibration.exit_lag = 15;
    c.exit_tsc = 1000;
    exit(&mut c, Exit::Rdtsc);
    assert_eq!(c.vcpu.gprs[0], 985);
}

#[test]
fn rdpmc_checks_cpl_and_pce() {
    let mut c = cpu("trap=rdpmc");
    c.vcpu.host.pmcs.insert(0, 0x1_0000_0002);
    c.vcpu.gprs[1] = 0;
    assert_eq!(exit(&mut c, Exit::Rdpmc), Action::Advance);
    assert_eq!((c.vcpu.gprs[2], c.vcpu.gprs[0]), (1, 2));
    c.vcpu.segs[Seg::Ss as usize].attrs.dpl = 3;
    assert_eq!(exit(&mut c, Exit::Rdpmc), Action::Inject(Event::GP0));
    c.vcpu.cr4 |= CR4_PCE;
    assert_eq!(exit(&mut c, Exit::Rdpmc), Action::Advance);
    c.vcpu.gprs[1] = 9;
    assert_eq!(
        exit(&mut c, Exit::Rdpmc),
        Action::Inject(Event::GP0),
        "absent counter"
    );
}

#[test]
fn xsetbv_faults_where_the_guests_would() {
    let mut c = cpu("");
    c.vcpu.gprs[0] = 0b11;
    assert_eq!(
        exit(&mut c, Exit::Xsetbv),
        Action::Inject(Event::UD),
        "no OSXSAVE"
    );
    c.vcpu.cr4 |= CR4_OSXSAVE;
    c.vcpu.gprs[0] = 0b100;
    assert_eq!(
        exit(&mut c, Exit::Xsetbv),
        Action::Inject(Event::GP0),
        "x87 cleared"
    );
    c.vcpu.gprs[0] = 0b101;
    assert_eq!(
        exit(&mut c, Exit::Xsetbv),
        Action::Inject(Event::GP0),
        "AVX without SSE"
    );
    c.vcpu.gprs[0] = 0b1001;
    assert_eq!(
        exit(&mut c, Exit::Xsetbv),
        Action::Inject(Event::GP0),
        "unsupported"
    );
    c.vcpu.gprs[1] = 1;
    c.vcpu.gprs[0] = 0b11;
    assert_eq!(
        exit(&mut c, Exit::Xsetbv),
        Action::Inject(Event::GP0),
        "XCR1"
    );
    c.vcpu.gprs[1] = 0;
    assert_eq!(exit(&mut c, Exit::Xsetbv), Action::Advance);
    assert_eq!(c.vcpu.host.xcr0, 0b11);
}

#[test]
fn invd_writes_back_instead() {
    let mut c = cpu("");
    assert_eq!(exit(&mut c, Exit::Invd), Action::Advance);
    assert_eq!(c.vcpu.host.caches_written_back, 1);
}

#[test]
fn invlpg_drops_that_one_address() {
    let mut c = cpu("trap=invlpg");
    exit(&mut c, Exit::Invlpg { linear: 0x7000 });
    assert_eq!(c.vcpu.flushes, [Flush::Address(0x7000)]);
}

fn invpcid(c: &mut crate::cpu::Cpu<FakeVcpu>, kind: u64, pcid: u64, address: u64) -> Action {
    c.vcpu.poke64(0x6000, pcid);
    c.vcpu.poke64(0x6008, address);
    c.vcpu.gprs[9] = kind;
    exit(
        c,
        Exit::Invpcid {
            kind_gpr: 9,
            descriptor: 0x6000,
        },
    )
}

#[test]
fn invpcid_flushes_by_type() {
    let mut c = cpu("trap=invlpg");
    c.vcpu.cr4 |= CR4_PCIDE;
    assert_eq!(invpcid(&mut c, 0, 3, 0x4000), Action::Advance);
    assert_eq!(invpcid(&mut c, 1, 3, 0), Action::Advance);
    assert_eq!(invpcid(&mut c, 2, 0, 0), Action::Advance);
    assert_eq!(invpcid(&mut c, 3, 0, 0), Action::Advance);
    assert_eq!(
        c.vcpu.flushes,
        [
            Flush::Address(0x4000),
            Flush::NonGlobal,
            Flush::All,
            Flush::NonGlobal
        ]
    );
}

#[test]
fn invpcid_faults_as_the_processor_does() {
    let mut c = cpu("trap=invlpg");
    assert_eq!(invpcid(&mut c, 4, 0, 0), Action::Inject(Event::GP0), "type");
    assert_eq!(
        invpcid(&mut c, 0, 1 << 12, 0),
        Action::Inject(Event::GP0),
        "reserved"
    );
    assert_eq!(
        invpcid(&mut c, 0, 5, 0),
        Action::Inject(Event::GP0),
        "PCID without PCIDE"
    );
    assert_eq!(
        invpcid(&mut c, 0, 0, 0x8000_0000_0000),
        Action::Inject(Event::GP0),
        "non-canonical"
    );
    c.vcpu.segs[Seg::Ss as usize].attrs.dpl = 3;
    assert_eq!(
        invpcid(&mut c, 2, 0, 0),
        Action::Inject(Event::GP0),
        "CPL 3"
    );
    assert!(c.vcpu.flushes.is_empty());
    // A descriptor on an unmapped page: the #PF its load would get.
    let mut c = cpu("trap=invlpg");
    c.vcpu.gprs[9] = 2;
    let a = exit(
        &mut c,
        Exit::Invpcid {
            kind_gpr: 9,
            descriptor: 0x40_0000,
        },
    );
    assert_eq!(a, Action::Inject(Event::page_fault(0)));
    assert_eq!(c.vcpu.cr2, 0x40_0000);
}

#[test]
fn virtualization_instructions_are_undefined() {
    let mut c = cpu("");
    assert_eq!(
        exit(&mut c, Exit::Undefined { mnemonic: "VMXON" }),
        Action::Inject(Event::UD)
    );
    assert_eq!(c.vcpu.rip, 0x1000);
}

#[test]
fn triple_fault_init_and_impossible_task_switches_stop_with_a_report() {
    let mut c = cpu("");
    assert_eq!(
        exit(&mut c, Exit::TripleFault),
        Action::Stop(Stop::Failed("guest triple fault"))
    );
    assert!(matches!(
        exit(&mut c, Exit::Init),
        Action::Stop(Stop::Failed(_))
    ));
    // A task gate with no event being delivered, and a task switch in IA-32e mode (where the
    // processor raises #GP instead): neither can come from a guest.
    let a = exit(
        &mut c,
        Exit::TaskSwitch {
            selector: 0x28,
            source: TaskSwitchSource::Gate,
        },
    );
    assert!(matches!(a, Action::Stop(Stop::Failed(_))));
    assert_eq!(c.vcpu.reports.len(), 3);
    assert!(c.vcpu.reports[2].contains("0x28"));
    let a = exit(
        &mut c,
        Exit::TaskSwitch {
            selector: 0x28,
            source: TaskSwitchSource::Jmp,
        },
    );
    assert!(matches!(a, Action::Stop(Stop::Failed(_))));
    assert!(c.vcpu.reports[3].contains("IA-32e"));
    assert!(matches!(
        exit(&mut c, Exit::Unhandled { reason: "RSM" }),
        Action::Stop(Stop::Failed(_))
    ));
    assert!(c.vcpu.reports[4].contains("RSM"));
}

#[test]
fn the_debuggers_exits_without_a_debugger_change_nothing() {
    let mut c = cpu("");
    assert_eq!(exit(&mut c, Exit::Step), Action::Resume);
    assert_eq!(exit(&mut c, Exit::Timer), Action::Resume);
    assert_eq!(c.vcpu.rip, 0x1000);
}
