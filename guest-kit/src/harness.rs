//! Test harness: a static table of cases, selection by `case=`, the output lines of
//! docs/architecture.md ("Ports") and the end of the run.
//!
//! Output, one line per case, then the summary:
//! ```text
//! PASS <case> [key=value ...]
//! FAIL <case> <why> [key=value ...]
//! SKIP <case> <why>
//! guest-kit: N passed, N failed, N skipped
//! ```
//! `<why>` is one hyphenated word so that the line splits on spaces.

use crate::cpu::{halt_forever, outb};
use crate::multiboot::BootInfo;
use crate::println;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

/// The Bochs shutdown port (docs/architecture.md, "Ports").
pub const SHUTDOWN_PORT: u16 = 0x8900;

/// One test case.
#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub run: fn() -> Outcome,
    /// Whether it runs when `case=` is absent. Cases that end the machine only run when named.
    pub by_default: bool,
}

impl Case {
    /// A case that runs by default.
    pub const fn new(name: &'static str, run: fn() -> Outcome) -> Case {
        Case {
            name,
            run,
            by_default: true,
        }
    }

    /// A case that runs only when `case=` names it.
    pub const fn explicit(name: &'static str, run: fn() -> Outcome) -> Case {
        Case {
            name,
            run,
            by_default: false,
        }
    }
}

/// A case's result. The text is what follows the case name on its output line.
pub enum Outcome {
    /// `key=value ...` (may be empty).
    Pass(Text),
    /// `<why> [key=value ...]`.
    Fail(Text),
    /// `<why>`.
    Skip(Text),
}

/// A small fixed-capacity string: the kit has no heap. Longer text is cut off.
#[derive(Clone)]
pub struct Text {
    len: usize,
    buf: [u8; 256],
}

impl Text {
    pub const fn new() -> Text {
        Text {
            len: 0,
            buf: [0; 256],
        }
    }

    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 characters are ever appended.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Default for Text {
    fn default() -> Text {
        Text::new()
    }
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut utf8 = [0u8; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            if self.len + bytes.len() > self.buf.len() {
                return Ok(());
            }
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        }
        Ok(())
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Format into a [`Text`].
pub fn text(args: fmt::Arguments) -> Text {
    let mut t = Text::new();
    let _ = t.write_fmt(args);
    t
}

/// `pass!()` or `pass!("key={} ...", value, ...)`.
#[macro_export]
macro_rules! pass {
    () => { $crate::harness::Outcome::Pass($crate::harness::Text::new()) };
    ($($arg:tt)*) => { $crate::harness::Outcome::Pass($crate::harness::text(format_args!($($arg)*))) };
}

/// `fail!("why key={} ...", value, ...)`.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => { $crate::harness::Outcome::Fail($crate::harness::text(format_args!($($arg)*))) };
}

/// `skip!("why")`.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => { $crate::harness::Outcome::Skip($crate::harness::text(format_args!($($arg)*))) };
}

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);
static SKIPPED: AtomicU32 = AtomicU32::new(0);

// The running case's name, for the exception and panic reports.
static CURRENT_PTR: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);

fn set_current(name: &'static str) {
    CURRENT_LEN.store(0, Ordering::SeqCst);
    CURRENT_PTR.store(name.as_ptr() as *mut u8, Ordering::SeqCst);
    CURRENT_LEN.store(name.len(), Ordering::SeqCst);
}

/// The name of the case that is running, or `guest-kit` outside any case.
pub fn current() -> &'static str {
    let ptr = CURRENT_PTR.load(Ordering::SeqCst);
    let len = CURRENT_LEN.load(Ordering::SeqCst);
    if ptr.is_null() || len == 0 {
        return "guest-kit";
    }
    // Set only from a `&'static str` in `set_current`.
    unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(ptr, len)) }
}

/// Print a case's line and count it.
pub fn report(name: &str, outcome: &Outcome) {
    let (word, counter, text) = match outcome {
        Outcome::Pass(t) => ("PASS", &PASSED, t),
        Outcome::Fail(t) => ("FAIL", &FAILED, t),
        Outcome::Skip(t) => ("SKIP", &SKIPPED, t),
    };
    counter.fetch_add(1, Ordering::SeqCst);
    if text.as_str().is_empty() {
        println!("{} {}", word, name);
    } else {
        println!("{} {} {}", word, name, text);
    }
}

/// Count an outcome, printing its line only when it is not a pass. For guests such as the demo
/// whose own lines describe what passed.
pub fn tally(name: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Pass(_) => {
            PASSED.fetch_add(1, Ordering::SeqCst);
        }
        _ => report(name, outcome),
    }
}

/// Run one case and report it.
pub fn run_case(case: &Case) {
    set_current(case.name);
    let outcome = (case.run)();
    report(case.name, &outcome);
    set_current("");
}

/// Run the cases `case=NAME[,NAME...]` selects (all default cases when it is absent or `all`),
/// in the order given, then end the run. Unknown names are failures.
pub fn run(cases: &[Case], boot: &BootInfo) -> ! {
    match boot.arg("case") {
        None | Some("all") => cases.iter().filter(|c| c.by_default).for_each(run_case),
        Some(list) => {
            for name in list.split(',').filter(|n| !n.is_empty()) {
                match cases.iter().find(|c| c.name == name) {
                    Some(case) => run_case(case),
                    None => report(name, &fail!("unknown-case")),
                }
            }
        }
    }
    finish()
}

/// Counts so far: (passed, failed, skipped).
pub fn counts() -> (u32, u32, u32) {
    (
        PASSED.load(Ordering::SeqCst),
        FAILED.load(Ordering::SeqCst),
        SKIPPED.load(Ordering::SeqCst),
    )
}

/// Print the summary line and end the machine.
pub fn finish() -> ! {
    let (p, f, s) = counts();
    println!("guest-kit: {} passed, {} failed, {} skipped", p, f, s);
    shutdown()
}

/// Report the running case as failed with `why`, print the summary and end the machine. Used for
/// unexpected exceptions and panics: the machine state is no longer trustworthy.
pub fn fatal(why: fmt::Arguments) -> ! {
    let name = current();
    FAILED.fetch_add(1, Ordering::SeqCst);
    println!("FAIL {} {}", name, why);
    finish()
}

/// Write `Shutdown` to port 0x8900, one `out dx, al` per byte. Bare, Bochs ends; under Vigil
/// the write is trapped and Vigil ends the run. If neither happens, halt.
pub fn shutdown() -> ! {
    crate::serial::flush();
    for b in b"Shutdown" {
        unsafe { outb(SHUTDOWN_PORT, *b) };
    }
    halt_forever()
}
