//! `cargo xtask`: prerequisites, builds, the boot ISO, Bochs runs and the test suite for Vigil.
//! `cargo xtask help` lists the commands.

mod bench;
mod bochs;
mod bochs_build;
mod build;
mod cli;
mod elf;
mod emulator;
mod gdb;
mod gdb_checks;
mod gdb_smp;
mod gdb_tests;
mod initramfs;
mod iso;
mod layout;
mod linux;
mod linux_checks;
mod linux_material;
mod oracle;
mod oracle_drive;
mod oracle_image;
mod outcome;
mod prereqs;
mod qemu;
mod report;
mod run;
mod scenarios;
mod scenarios_amd;
mod scenarios_detect;
mod scenarios_entry;
mod scenarios_guests;
mod scenarios_hostile;
mod scenarios_smp;
mod scenarios_time;
mod scenarios_transparent;
mod scenarios_traps;
mod stream;
mod suite;
mod symbolize;
mod sys;

use std::process::ExitCode;
use std::time::Duration;

use cli::Command;
use layout::Layout;

fn main() -> ExitCode {
    sys::install_interrupt_handler();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("xtask: {e}");
            return ExitCode::from(2);
        }
    };
    let layout = Layout::discover();
    match &command {
        Command::Help => {
            print!("{}", cli::help());
            print!("\nVIGIL OPTIONS (after `--`; Vigil's own list):\n");
            for line in vigil_core::config::HELP.lines() {
                println!("    {line}");
            }
            return ExitCode::SUCCESS;
        }
        Command::Test(t) if t.list => {
            suite::list();
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    if let Err(e) = prereqs::ensure(&layout) {
        eprintln!("xtask: {e}");
        return ExitCode::FAILURE;
    }
    // The emulator: chosen (and built, the first time) before anything runs in it. `test`
    // chooses it only when it runs scenarios.
    let bochs_flag = match &command {
        Command::Run(a) | Command::Build(a) | Command::Bench(a) => Some(a.bochs.as_deref()),
        _ => None,
    };
    if let Some(flag) = bochs_flag {
        let chosen = emulator::Choice::resolve(flag)
            .and_then(|choice| emulator::select(&layout, &choice).map(|_| ()));
        if let Err(e) = chosen {
            eprintln!("xtask: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match &command {
        Command::Run(args) => run::run(&layout, args),
        Command::Build(args) => run::build(&layout, args),
        Command::Test(args) => suite::test(&layout, args),
        Command::Bench(args) => bench::bench(&layout, args),
        Command::Help => unreachable!("handled above"),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        _ if sys::interrupted() => ExitCode::from(130),
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A progress line of xtask's own (stderr, like cargo's).
pub fn step(message: &str) {
    eprintln!("xtask: {message}");
}

/// `12.3 s`.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
