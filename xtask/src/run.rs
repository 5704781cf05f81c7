//! `cargo xtask run` and `cargo xtask build`: one guest, bare or under Vigil, in one Bochs.

use std::time::Instant;

use crate::bochs::{self, Machine, RunSpec};
use crate::build::{self, GUEST_KIT, VIGIL};
use crate::cli::{Guest, RunArgs};
use crate::iso::{self, IsoSpec};
use crate::layout::{Layout, RunDir};
use crate::outcome::{End, Mode};
use crate::stream::Echo;

/// Build what the run needs and make its ISO.
fn prepare(layout: &Layout, args: &RunArgs) -> Result<(RunDir, std::path::PathBuf), String> {
    if args.cpu_model != bochs::DEFAULT_CPU_MODEL {
        bochs::check_cpu_model(&args.cpu_model)?;
    }
    let mode = if args.bare { Mode::Bare } else { Mode::Vigil };
    if args.guest == Guest::Linux {
        if !args.no_build && mode == Mode::Vigil {
            build::build(layout, VIGIL)?;
        }
        return crate::linux::prepare(layout, args);
    }
    if !args.no_build {
        if mode == Mode::Vigil {
            build::build(layout, VIGIL)?;
        }
        if let Guest::Kit(_) = args.guest {
            build::build(layout, GUEST_KIT)?;
        }
    }
    let guest = match &args.guest {
        Guest::Kit(name) => layout.bare_bin(name),
        Guest::Path(path) => path.clone(),
        Guest::Linux => unreachable!("prepared above"),
    };
    if !guest.is_file() {
        return Err(format!("no guest binary at {}", guest.display()));
    }
    let vigil = match args.effective_vigil_options() {
        Some(options) => {
            let bin = layout.bare_bin(VIGIL);
            if !bin.is_file() {
                return Err(format!("no Vigil binary at {}", bin.display()));
            }
            Some((bin, options))
        }
        None => None,
    };
    let dir = RunDir::claim(
        layout,
        &format!("run-{}-{}", args.guest.name(), mode.name()),
    )
    .map_err(|e| format!("cannot make the run directory: {e}"))?;
    let spec = IsoSpec {
        guest,
        guest_args: args.guest_args.clone(),
        vigil,
        modules: Vec::new(),
    };
    let (iso, took) = iso::make(&dir, &spec)?;
    crate::step(&format!(
        "ISO {} ({})",
        layout.show(&iso),
        crate::secs(took)
    ));
    Ok((dir, iso))
}

pub fn build(layout: &Layout, args: &RunArgs) -> Result<bool, String> {
    let (dir, _iso) = prepare(layout, args)?;
    // The bochsrc too, so that `bochs -q -f target/xtask/<run>/bochsrc` works by hand.
    let machine = Machine {
        megs: args.megs,
        cpu_model: args.cpu_model.clone(),
        cpus: args.cpus,
    };
    let iso = dir.file("vigil.iso");
    iso::write(
        &dir.file("bochsrc"),
        &bochs::bochsrc(crate::emulator::current(), &machine, &iso, &dir.path),
    )?;
    iso::write(&dir.file("bochs.cmds"), &bochs::debugger_commands(None))?;
    crate::step(&format!(
        "bochsrc {} (run it with `{} -q -f {}`)",
        dir.file("bochsrc").display(),
        crate::emulator::current().program.display(),
        dir.file("bochsrc").display()
    ));
    Ok(true)
}

/// Returns whether the run ended normally.
pub fn run(layout: &Layout, args: &RunArgs) -> Result<bool, String> {
    let total = Instant::now();
    let (dir, iso) = prepare(layout, args)?;
    let mode = if args.bare { Mode::Bare } else { Mode::Vigil };
    if args.debug.debug_vigil {
        return crate::gdb::debug_vigil(layout, args, &dir);
    }
    let mut timeout = args.timeout;
    if mode == Mode::Vigil && (args.debug.gdb_port.is_some() || args.debug.gdb_wait) {
        let listen = args.debug.gdb_port.unwrap_or(0);
        crate::gdb::register(
            &dir.path,
            crate::gdb::GdbHookup {
                listen,
                script: None,
                load: None,
            },
        );
        // A person at gdb needs more than the default two minutes.
        if timeout == crate::cli::DEFAULT_TIMEOUT {
            timeout = std::time::Duration::from_secs(3600);
        }
    }
    let spec = RunSpec {
        dir: &dir,
        iso,
        machine: Machine {
            megs: args.megs,
            cpu_model: args.cpu_model.clone(),
            cpus: args.cpus,
        },
        mode,
        timeout,
        echo: Echo::Live,
    };
    let outcome = bochs::run(&spec)?;
    let first = match outcome.first_byte {
        Some(t) => format!("first serial byte after {}", crate::secs(t)),
        None => "no serial output".to_string(),
    };
    crate::step(&format!(
        "Bochs ran {}: {}; {first}; {} in all",
        crate::secs(outcome.elapsed),
        outcome.end_phrase(),
        crate::secs(total.elapsed())
    ));
    if mode == Mode::Vigil {
        show_backtrace(&outcome.capture.com2(), &layout.bare_bin(VIGIL));
    }
    if let End::Interrupted = outcome.end {
        println!("xtask: interrupted");
        return Ok(false);
    }
    let verdict = match args.guest {
        Guest::Linux => crate::linux_checks::verdict(&outcome, args.linux.our_initrd()),
        _ => outcome.normal_end(),
    };
    match verdict {
        Ok(line) => {
            println!("xtask: ok: {line}");
            Ok(true)
        }
        Err(why) => {
            println!("xtask: FAILED: {}", outcome.explain(&why));
            println!("xtask: run files in {}", dir.path.display());
            Ok(false)
        }
    }
}

/// Vigil's backtrace, if it printed one, with function names and source lines.
pub fn show_backtrace(com2: &[&str], vigil: &std::path::Path) {
    match crate::symbolize::vigil_backtrace(com2, vigil) {
        Some(Ok(lines)) => {
            println!("xtask: Vigil's backtrace, symbolized:");
            for line in lines {
                println!("  {line}");
            }
        }
        Some(Err(e)) => println!("xtask: cannot symbolize Vigil's backtrace: {e}"),
        None => {}
    }
}
