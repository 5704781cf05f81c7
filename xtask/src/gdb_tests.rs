//! Scenarios with a real gdb: batch-mode gdb, with the debuggee's symbols, drives Vigil's stub
//! through the COM2 relay while the debuggee runs (`guest-kit/src/bin/debuggee.rs`). The checks
//! compare what gdb printed (`gdb.out` in the run directory) with what the guest reported.

use crate::gdb_checks::{
    attach_running, debuggee32_alone, debuggee_alone, session, session_i386, step_alone, step_mtf,
    vigil_panic,
};
use crate::outcome::Mode;
use crate::scenarios::Scenario;

/// Frozen time, so the guest's TSC does not see the stops; the stub waits for gdb before the
/// guest's first instruction.
const OPTIONS: &str = "gdb=com2 gdb-wait=on tsc=frozen";

/// gdb single-steps by the monitor trap flag over instructions a debugger can get wrong
/// (`sti`, `mov ss`, `pushfq`, `popfq`, CPUID), on the model that has MTF. Needs a Bochs that
/// delivers MTF (`scenarios::needs`).
pub const STEP_SCENARIO: &str = "gdb-step-mtf";
/// The same `step` case without gdb or Vigil: what the guest must observe.
pub const STEP_BARE: &str = "gdb-step-bare";
/// The full session with gdb's default remote timeout on a deliberately loaded machine.
pub const LOADED_SCENARIO: &str = "gdb-session-loaded";

pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "gdb-session-tigerlake",
            guest: "debuggee",
            guest_args: "",
            mode: Mode::Vigil,
            vigil_options: OPTIONS,
            cpu_model: "tigerlake",
            timeout_secs: 150,
            baseline: None,
            check: session,
        },
        Scenario {
            name: "gdb-session-skylake",
            guest: "debuggee",
            guest_args: "",
            mode: Mode::Vigil,
            vigil_options: OPTIONS,
            cpu_model: crate::bochs::DEFAULT_CPU_MODEL,
            timeout_secs: 150,
            baseline: None,
            check: session,
        },
        Scenario {
            name: "gdb-debuggee-bare",
            guest: "debuggee",
            guest_args: "",
            mode: Mode::Bare,
            vigil_options: "",
            cpu_model: crate::bochs::DEFAULT_CPU_MODEL,
            timeout_secs: 90,
            baseline: None,
            check: debuggee_alone,
        },
        Scenario {
            name: "gdb-debuggee32-bare",
            guest: "debuggee32",
            guest_args: "",
            mode: Mode::Bare,
            vigil_options: "",
            cpu_model: crate::bochs::DEFAULT_CPU_MODEL,
            timeout_secs: 90,
            baseline: None,
            check: debuggee32_alone,
        },
        Scenario {
            name: "gdb-session-i386",
            guest: "debuggee32",
            guest_args: "",
            mode: Mode::Vigil,
            // The guest is an ELF64 container, so `auto` would pick x86-64: say i386.
            vigil_options: "gdb=com2 gdb-wait=on gdb-arch=i386 tsc=frozen",
            cpu_model: crate::bochs::DEFAULT_CPU_MODEL,
            timeout_secs: 150,
            baseline: None,
            check: session_i386,
        },
        Scenario {
            name: STEP_BARE,
            guest: "debuggee",
            guest_args: "case=step",
            mode: Mode::Bare,
            vigil_options: "",
            cpu_model: "tigerlake",
            timeout_secs: 90,
            baseline: None,
            check: step_alone,
        },
        Scenario {
            name: STEP_SCENARIO,
            guest: "debuggee",
            guest_args: "case=step",
            mode: Mode::Vigil,
            vigil_options: OPTIONS,
            cpu_model: "tigerlake",
            timeout_secs: 150,
            baseline: Some(STEP_BARE),
            check: step_mtf,
        },
        Scenario {
            name: LOADED_SCENARIO,
            guest: "debuggee",
            guest_args: "",
            mode: Mode::Vigil,
            vigil_options: OPTIONS,
            cpu_model: crate::bochs::DEFAULT_CPU_MODEL,
            timeout_secs: 300,
            baseline: None,
            check: crate::gdb_checks::session_loaded,
        },
        panic_scenario(),
        Scenario {
            name: "gdb-attach-running",
            guest: "debuggee",
            guest_args: "case=attach,checkpoint",
            mode: Mode::Vigil,
            vigil_options: "gdb=com2 tsc=frozen",
            cpu_model: crate::bochs::DEFAULT_CPU_MODEL,
            timeout_secs: 150,
            baseline: None,
            check: attach_running,
        },
    ]
}

/// gdb attaches only once the guest is spinning in the `attach` case: Vigil must notice gdb's
/// packets on its own (the preemption timer polls COM2), stop the guest wherever it is, and let
/// gdb release it.
pub fn attach_script(debuggee: &std::path::Path) -> String {
    format!(
        "set pagination off
set confirm off
set remotetimeout 30
file {elf}
shell sleep 6
target remote localhost:{{PORT}}
set language c
echo ==stopped\\n
p/x $pc
info symbol $pc
set var {{unsigned long}}((char *)&DEBUGGEE_RELEASE) = 0x600d
detach
",
        elf = debuggee.display()
    )
}

/// The gdb hookup of a scenario that has one (registered for its run directory).
pub fn register(dir: &std::path::Path, scenario: &str, debuggee: &std::path::Path) {
    if scenario == crate::gdb_smp::SCENARIO {
        crate::gdb::register(
            dir,
            crate::gdb::GdbHookup {
                listen: 0,
                script: Some(crate::gdb_smp::script(debuggee)),
                load: None,
            },
        );
    }
    // A `ryzen` scenario runs the session of the one it mirrors.
    let scenario = crate::scenarios_amd::intel_name(scenario);
    if scenario == "gdb-vigil-panic" {
        crate::gdb::register(
            dir,
            crate::gdb::GdbHookup {
                listen: 0,
                script: Some(PANIC_SCRIPT.into()),
                load: None,
            },
        );
    }
    if scenario == "gdb-attach-running" {
        crate::gdb::register(
            dir,
            crate::gdb::GdbHookup {
                listen: 0,
                script: Some(attach_script(debuggee)),
                load: None,
            },
        );
    }
    if scenario == STEP_SCENARIO {
        crate::gdb::register(
            dir,
            crate::gdb::GdbHookup {
                listen: 0,
                script: Some(step_script(debuggee)),
                load: None,
            },
        );
    }
    if scenario == "gdb-session-i386" {
        crate::gdb::register(
            dir,
            crate::gdb::GdbHookup {
                listen: 0,
                script: Some(script_i386(debuggee)),
                load: None,
            },
        );
    } else if scenario == LOADED_SCENARIO {
        // gdb's own default remote timeout, on a saturated machine whose first answers from
        // the stub come later than that: gdb retransmits, and the session must not notice.
        crate::gdb::register(
            dir,
            crate::gdb::GdbHookup {
                listen: 0,
                script: Some(
                    script(debuggee).replace("set remotetimeout 30", "set remotetimeout 2"),
                ),
                load: Some(crate::gdb::Load {
                    busy_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
                    late_answers: 3,
                    late_by: std::time::Duration::from_millis(2500),
                }),
            },
        );
    } else if scenario.starts_with("gdb-session") {
        crate::gdb::register(
            dir,
            crate::gdb::GdbHookup {
                listen: 0,
                script: Some(script(debuggee)),
                load: None,
            },
        );
    }
}

/// The stepping session on the debuggee's `step` case: a breakpoint on each instruction, one
/// `stepi`, and where it landed (`info symbol`: each stepped instruction is followed by a label).
/// `monitor status` names the step mechanism.
pub fn step_script(debuggee: &std::path::Path) -> String {
    format!(
        "set pagination off
set confirm off
set width 0
set remotetimeout 30
file {elf}
target remote localhost:{{PORT}}
set language c
echo ==monitor\\n
monitor status
break *debuggee_step_sti
break *debuggee_step_sti2
break *debuggee_step_pushf
break *debuggee_step_popf
break *debuggee_step_cpuid
continue
echo ==sti\\n
info symbol $pc
stepi
info symbol $pc
continue
echo ==movss\\n
info symbol $pc
stepi
info symbol $pc
stepi
info symbol $pc
continue
echo ==pushf\\n
info symbol $pc
stepi
info symbol $pc
continue
echo ==popf\\n
info symbol $pc
stepi
info symbol $pc
p/x $eflags
continue
echo ==cpuid\\n
info symbol $pc
stepi
info symbol $pc
p/x $rax
detach
echo ==detached\\n
",
        elf = debuggee.display()
    )
}

/// The i386 session on `debuggee32`. The ELF is a 64-bit container, so gdb is told the
/// architecture before it connects; the stub's target description then matches it.
pub fn script_i386(debuggee32: &std::path::Path) -> String {
    format!(
        "set pagination off
set confirm off
set width 0
set remotetimeout 30
file {elf}
set architecture i386
target remote localhost:{{PORT}}
set language c
break *debuggee32_regs_here
break *debuggee32_vars_written
break *debuggee32_step_here
continue
echo ==registers\\n
info registers
p/x &debuggee32_stack_top
echo ==monitor\\n
monitor status
watch {{unsigned int}}((unsigned int)&DEBUGGEE32_VARS)
echo ==watch-stop\\n
continue
echo ==watch\\n
p/x $pc
p/x &debuggee32_after_store
delete 4
continue
echo ==vars\\n
x/2wx &DEBUGGEE32_VARS
set var {{unsigned int}}((unsigned int)&DEBUGGEE32_VARS + 4) = 0x600d600d
echo ==vars-after\\n
x/2wx &DEBUGGEE32_VARS
continue
echo ==stepi\\n
p/x $pc
stepi
p/x $pc
p/x $eax
detach
echo ==detached\\n
",
        elf = debuggee32.display()
    )
}

/// The gdb session. `echo ==name` lines mark the sections the check reads.
pub fn script(debuggee: &std::path::Path) -> String {
    format!(
        "set pagination off
set confirm off
set width 0
set remotetimeout 30
file {elf}
target remote localhost:{{PORT}}
set language c
break debuggee_checkpoint
break *debuggee_regs_here
break *debuggee_marker
break *debuggee_step_here
hbreak *debuggee_tsc_stop
continue
echo ==checkpoint\\n
info symbol $pc
continue
echo ==registers\\n
info registers
echo ==vars\\n
x/4gx &DEBUGGEE_VARS
set var {{unsigned long}}((char *)&DEBUGGEE_VARS + 8) = 0xfeedfacecafe
echo ==vars-after\\n
x/4gx &DEBUGGEE_VARS
echo ==monitor\\n
monitor cr
monitor translate 0x100000
monitor status
watch *(unsigned long *)&DEBUGGEE_WATCHED
continue
echo ==marker\\n
info symbol $pc
continue
echo ==watch\\n
p/x $pc
p/x &debuggee_after_store
delete 6
rwatch *(unsigned long *)&DEBUGGEE_READ
echo ==rwatch-stop\\n
continue
echo ==rwatch\\n
p/x $pc
p/x &debuggee_after_load
echo ==rwatch-add-stop\\n
continue
echo ==rwatch-add\\n
p/x $pc
p/x &debuggee_after_add
delete 7
awatch *(unsigned long *)&DEBUGGEE_ACCESSED
echo ==awatch-read-stop\\n
continue
echo ==awatch-read\\n
p/x $pc
p/x &debuggee_after_access_load
echo ==awatch-write-stop\\n
continue
echo ==awatch-write\\n
p/x $pc
p/x &debuggee_after_access_store
delete 8
continue
echo ==stepi\\n
p/x $pc
stepi
p/x $pc
continue
echo ==tsc\\n
info symbol $pc
shell date +%s.%N
shell sleep 2.5
shell date +%s.%N
detach
echo ==detached\\n
",
        elf = debuggee.display()
    )
}

/// `monitor vigil-panic`: Vigil's panic report (message, backtrace, guest state and VMCS) comes
/// out on COM2 and xtask symbolizes the backtrace into Vigil's own functions.
pub fn panic_scenario() -> Scenario {
    Scenario {
        name: "gdb-vigil-panic",
        guest: "debuggee",
        guest_args: "",
        mode: Mode::Vigil,
        vigil_options: "gdb=com2 gdb-wait=on",
        cpu_model: crate::bochs::DEFAULT_CPU_MODEL,
        timeout_secs: 90,
        baseline: None,
        check: vigil_panic,
    }
}

/// The remote timeout is long, as in the other sessions: on a loaded machine Vigil in Bochs may
/// take longer than gdb's default 2 s to answer the first packet.
pub const PANIC_SCRIPT: &str = "set pagination off
set remotetimeout 30
target remote localhost:{PORT}
monitor vigil-panic
";
