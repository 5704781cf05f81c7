//! The guests users bring, on the machines they have: memtest86+ (a non-relocatable bzImage,
//! booted without an initrd), the guest kit's own boot modules, and a RAM matrix from 32 MiB to
//! 4 GiB (1 GiB of it above 4 GiB). Every guest runs bare and under Vigil on the same machine and
//! the two are compared; under Vigil its memory must sit at the top of RAM below 4 GiB, small,
//! and be exactly what the guest no longer sees.
//!
//! Budgets (the suite has 2 cores and 90 minutes in CI): the demo and the cases take a few
//! seconds of Bochs each at any size; Linux at 4 GiB about a minute per boot; memtest runs to a
//! fixed number of emulated instructions ([`MEMTEST_TICKS`], a Bochs time breakpoint), so its
//! three runs cost the same wall time on any machine load.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::iso::{self, IsoModule};
use crate::layout::{Layout, RunDir};
use crate::outcome::{End, Mode, Outcome};
use crate::report::{self, Status};
use crate::scenarios::{Check, Scenario};
use crate::stream::Port;

const SKYLAKE: &str = crate::bochs::DEFAULT_CPU_MODEL;
const CASES_VIGIL_OPTIONS: &str = "tsc=offset:0x100000000000 hypercall=on";

/// The `guest` of the memtest scenarios.
pub const MEMTEST: &str = "memtest";
/// Where Debian's `memtest86+` package puts the 64-bit image (a bzImage, boot protocol 2.12,
/// not relocatable: it runs at 1 MiB).
pub const MEMTEST_IMAGE: &str = "/boot/memtest86+x64.bin";
/// memtest's command line: its screen on the serial port, no pause at the start.
const MEMTEST_CMDLINE: &str = "console=ttyS0,115200 nopause";
/// RAM of the memtest machine: small, so each test pass is short.
const MEMTEST_MEGS: u32 = 64;
/// Emulated instructions each memtest run gets, bare and under Vigil alike. Chosen so that both
/// are well inside the same test (see the scenarios' check for what they must agree on).
pub const MEMTEST_TICKS: u64 = 2_000_000_000;

/// The RAM of a scenario's machine: the size in the names of this module's scenarios
/// (`demo-32m-vigil`, `linux-5g-bare`), [`MEMTEST_MEGS`] for memtest, Bochs' default otherwise.
pub fn megs(name: &str) -> u32 {
    let ours = all().iter().any(|s| s.name == name);
    if !ours {
        return crate::bochs::DEFAULT_MEGS;
    }
    if name.starts_with("memtest-") {
        return MEMTEST_MEGS;
    }
    name.split('-')
        .find_map(|part| {
            let (n, unit) = part.split_at(part.len().checked_sub(1)?);
            let n: u32 = n.parse().ok()?;
            match unit {
                "m" => Some(n),
                "g" => Some(n * 1024),
                _ => None,
            }
        })
        .unwrap_or(crate::bochs::DEFAULT_MEGS)
}

/// The tick budgets of the runs under way, by run directory (`bochs::run` asks).
static BUDGETS: Mutex<Vec<(PathBuf, u64)>> = Mutex::new(Vec::new());

/// Called once a scenario has its run directory: remembers its tick budget, if it has one.
pub fn claimed(dir: &Path, name: &str) {
    if name.starts_with("memtest-") {
        BUDGETS
            .lock()
            .unwrap()
            .push((dir.to_path_buf(), MEMTEST_TICKS));
    }
}

/// The tick budget of the run in `dir`, if it has one.
pub fn tick_budget_for(dir: &Path) -> Option<u64> {
    let mut all = BUDGETS.lock().unwrap();
    let i = all.iter().position(|(d, _)| d == dir)?;
    Some(all.swap_remove(i).1)
}

#[allow(clippy::too_many_arguments)]
fn scenario(
    name: &'static str,
    guest: &'static str,
    guest_args: &'static str,
    mode: Mode,
    vigil_options: &'static str,
    timeout_secs: u64,
    baseline: Option<&'static str>,
    check: fn(&Check) -> Result<(), String>,
) -> Scenario {
    Scenario {
        name,
        guest,
        guest_args,
        mode,
        vigil_options,
        cpu_model: SKYLAKE,
        timeout_secs,
        baseline,
        check,
    }
}

pub fn all() -> Vec<Scenario> {
    use Mode::{Bare, Vigil};
    let demo = crate::cli::DEMO_VIGIL_OPTIONS;
    let linux = crate::linux::GUEST;
    vec![
        scenario("demo-32m-bare", "demo", "", Bare, "", 120, None, demo_bare),
        scenario(
            "demo-32m-vigil",
            "demo",
            "",
            Vigil,
            demo,
            120,
            Some("demo-32m-bare"),
            demo_vigil,
        ),
        scenario("demo-64m-bare", "demo", "", Bare, "", 120, None, demo_bare),
        scenario(
            "demo-64m-vigil",
            "demo",
            "",
            Vigil,
            demo,
            120,
            Some("demo-64m-bare"),
            demo_vigil,
        ),
        scenario("demo-5g-bare", "demo", "", Bare, "", 180, None, demo_bare),
        scenario(
            "demo-5g-vigil",
            "demo",
            "",
            Vigil,
            demo,
            180,
            Some("demo-5g-bare"),
            demo_vigil,
        ),
        scenario(
            "cases-32m-bare",
            "cases",
            "",
            Bare,
            "",
            240,
            None,
            cases_bare,
        ),
        scenario(
            "cases-32m-vigil",
            "cases",
            "",
            Vigil,
            CASES_VIGIL_OPTIONS,
            240,
            Some("cases-32m-bare"),
            cases_vigil,
        ),
        scenario(
            "cases-64m-bare",
            "cases",
            "",
            Bare,
            "",
            240,
            None,
            cases_bare,
        ),
        scenario(
            "cases-64m-vigil",
            "cases",
            "",
            Vigil,
            CASES_VIGIL_OPTIONS,
            240,
            Some("cases-64m-bare"),
            cases_vigil,
        ),
        scenario(
            "cases-5g-bare",
            "cases",
            "",
            Bare,
            "",
            400,
            None,
            cases_bare,
        ),
        scenario(
            "cases-5g-vigil",
            "cases",
            "",
            Vigil,
            CASES_VIGIL_OPTIONS,
            400,
            Some("cases-5g-bare"),
            cases_vigil,
        ),
        scenario(
            "linux-128m-bare",
            linux,
            "",
            Bare,
            "",
            600,
            None,
            crate::linux_checks::check_bare,
        ),
        scenario(
            "linux-128m-vigil",
            linux,
            "",
            Vigil,
            "",
            600,
            Some("linux-128m-bare"),
            linux_vigil,
        ),
        scenario(
            "linux-5g-bare",
            linux,
            "",
            Bare,
            "",
            900,
            None,
            crate::linux_checks::check_bare,
        ),
        scenario(
            "linux-5g-vigil",
            linux,
            "",
            Vigil,
            "",
            900,
            Some("linux-5g-bare"),
            linux_vigil,
        ),
        scenario(
            "memtest-bare",
            MEMTEST,
            "",
            Bare,
            "",
            600,
            None,
            memtest_bare,
        ),
        scenario(
            "memtest-vigil",
            MEMTEST,
            "",
            Vigil,
            "",
            600,
            Some("memtest-bare"),
            memtest_vigil,
        ),
        scenario(
            "memtest-hide",
            MEMTEST,
            "",
            Vigil,
            "tsc=hide",
            900,
            Some("memtest-bare"),
            memtest_vigil,
        ),
        scenario("lowload-bare", LOWLOAD, "", Bare, "", 120, None, lowload),
        scenario(
            "lowload-vigil",
            LOWLOAD,
            "",
            Vigil,
            "",
            120,
            Some("lowload-bare"),
            lowload,
        ),
        scenario(
            "modules-bare",
            "cases",
            "case=modules,multiboot-mmap",
            Bare,
            "",
            120,
            None,
            modules_bare,
        ),
        scenario(
            "modules-vigil",
            "cases",
            "case=modules,multiboot-mmap",
            Vigil,
            "",
            120,
            Some("modules-bare"),
            modules_vigil,
        ),
    ]
}

/// The `guest` of the `lowload` scenarios: a multiboot kernel that loads at 0x8000 (built by
/// [`low_kernel`]).
pub const LOWLOAD: &str = "lowload";
const LOWLOAD_OK: &str = "lowload: multiboot ok";

/// A minimal multiboot kernel whose image covers [0x8000, 0xA000) — where GRUB and Vigil put
/// boot data by default — through the header's address fields (multiboot spec 3.1.3, flag 16).
/// It checks EAX = 0x2BADB002 and that EBX (the boot information) is not inside its image,
/// prints [`LOWLOAD_OK`] or `lowload: bad boot info` on COM1, and writes `Shutdown` to port
/// 0x8900. 32-bit protected mode, flat segments, as multiboot enters it.
pub fn low_kernel() -> Vec<u8> {
    const BASE: u32 = 0x8000;
    const END: u32 = 0xA000;
    let flags: u32 = 0x0001_0003;
    let mut b: Vec<u8> = Vec::new();
    let words = [
        0x1BAD_B002u32,
        flags,
        0u32.wrapping_sub(0x1BAD_B002u32.wrapping_add(flags)),
        BASE,        // header_addr
        BASE,        // load_addr
        0,           // load_end_addr: the whole file
        END,         // bss_end_addr
        BASE + 0x20, // entry_addr
    ];
    for w in words {
        b.extend_from_slice(&w.to_le_bytes());
    }
    let ok = format!("{LOWLOAD_OK}\n");
    let bad = "lowload: bad boot info\n";
    // Strings after the code, at fixed offsets.
    let (ok_at, bad_at, down_at) = (0x100u32, 0x140u32, 0x180u32);
    let code: Vec<u8> = [
        &[0xFC][..], // cld: nothing says the loader left the direction flag clear
        &[0x3D],
        &0x2BAD_B002u32.to_le_bytes(), // cmp eax, magic
        &[0x75, 0x1C],                 // jne bad
        &[0x81, 0xFB],
        &BASE.to_le_bytes(), // cmp ebx, BASE
        &[0x72, 0x08],       // jb good
        &[0x81, 0xFB],
        &END.to_le_bytes(), // cmp ebx, END
        &[0x72, 0x0C],      // jb bad
        // good:
        &[0xBE],
        &(BASE + ok_at).to_le_bytes(), // mov esi, ok
        &[0xB9],
        &(ok.len() as u32).to_le_bytes(), // mov ecx, len
        &[0xEB, 0x0A],                    // jmp print
        // bad:
        &[0xBE],
        &(BASE + bad_at).to_le_bytes(),
        &[0xB9],
        &(bad.len() as u32).to_le_bytes(),
        // print: COM1 as 115200 8N1 (the firmware may leave it at 5-bit words): DLAB, divisor
        // 1, LCR 3.
        &[0x66, 0xBA, 0xFB, 0x03, 0xB0, 0x80, 0xEE],
        &[0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x01, 0xEE],
        &[0x66, 0xBA, 0xF9, 0x03, 0xB0, 0x00, 0xEE],
        &[0x66, 0xBA, 0xFB, 0x03, 0xB0, 0x03, 0xEE],
        // Then one byte at a time, each once the transmitter holding register is empty (LSR
        // bit 5): the emulated UART drops bytes written faster than its line speed.
        &[0x66, 0xBA, 0xFD, 0x03], // next: mov dx, 0x3FD (LSR)
        &[0xEC],                   // wait: in al, dx
        &[0xA8, 0x20],             // test al, 0x20
        &[0x74, 0xFB],             // jz wait
        &[0x66, 0xBA, 0xF8, 0x03], // mov dx, 0x3F8 (THR)
        &[0xAC],                   // lodsb
        &[0xEE],                   // out dx, al
        &[0xE2, 0xEF],             // loop next
        // Until the last byte is on the line (LSR bit 6), then the shutdown port.
        &[0x66, 0xBA, 0xFD, 0x03], // mov dx, 0x3FD
        &[0xEC, 0xA8, 0x40],       // sent: in al, dx; test al, 0x40
        &[0x74, 0xFB],             // jz sent
        &[0xBE],
        &(BASE + down_at).to_le_bytes(), // mov esi, "Shutdown"
        &[0xB9, 0x08, 0x00, 0x00, 0x00], // mov ecx, 8
        &[0x66, 0xBA, 0x00, 0x89],       // mov dx, 0x8900
        &[0xF3, 0x6E],                   // rep outsb
        &[0xF4, 0xEB, 0xFD],             // hlt; jmp hlt
    ]
    .concat();
    b.extend_from_slice(&code);
    for (at, text) in [
        (ok_at, ok.as_bytes()),
        (bad_at, bad.as_bytes()),
        (down_at, b"Shutdown"),
    ] {
        b.resize(at as usize, 0);
        b.extend_from_slice(text);
    }
    b.resize(0x200, 0);
    b
}

/// The low-loading kernel ran and found proper boot information; under Vigil, Vigil put its
/// boot data elsewhere.
fn lowload(c: &Check) -> Result<(), String> {
    if let Some(why) = c.outcome.grub_failure() {
        return Err(why);
    }
    if !c
        .outcome
        .capture
        .com1()
        .iter()
        .any(|l| l.trim() == LOWLOAD_OK)
    {
        return Err(format!(
            "the kernel did not print `{LOWLOAD_OK}` (COM1: {:?})",
            c.outcome.capture.com1()
        ));
    }
    if c.outcome.mode == Mode::Vigil {
        c.outcome.normal_end()?;
        let line = c
            .outcome
            .capture
            .com2()
            .into_iter()
            .find(|l| l.contains("guest: multiboot kernel"))
            .ok_or("Vigil printed no `guest: multiboot kernel` line")?
            .to_string();
        let at = line
            .rsplit("boot data at ")
            .next()
            .and_then(report::parse_hex)
            .ok_or_else(|| format!("no boot data address in {line:?}"))?;
        if (0x6000..0xA000).contains(&at) {
            return Err(format!("boot data at {at:#x}, on the kernel's image"));
        }
    } else if !c.outcome.exited_by_itself() {
        return Err(c.outcome.end_phrase());
    }
    Ok(())
}

/// The modules the `modules` scenarios hand the guest: one with a string of several words,
/// one with none, of odd sizes (bytes the guest checksums).
pub fn modules_for(name: &str) -> Vec<IsoModule> {
    if !name.starts_with("modules-") {
        return Vec::new();
    }
    let first: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
    vec![
        IsoModule {
            bytes: first,
            string: "env answer=42 mode=test".into(),
        },
        IsoModule {
            bytes: b"second module\n".to_vec(),
            string: String::new(),
        },
    ]
}

/// FNV-1a, as the guest kit's `modules` case computes it.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Vigil's memory as it reported it: `vigil memory: image [A-B), pool [C-D) …`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub image: (u64, u64),
    pub pool: (u64, u64),
}

impl Footprint {
    pub fn parse<'a>(com2: impl IntoIterator<Item = &'a str>) -> Option<Footprint> {
        let line = com2
            .into_iter()
            .find_map(|l| l.trim().strip_prefix("vigil memory: "))?;
        let range = |after: &str| -> Option<(u64, u64)> {
            let rest = &line[line.find(after)? + after.len()..];
            let (a, rest) = rest.split_once('-')?;
            let b = rest.split(')').next()?;
            Some((report::parse_hex(a)?, report::parse_hex(b)?))
        };
        Some(Footprint {
            image: range("image [")?,
            pool: range("pool [")?,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.image.1 - self.image.0 + self.pool.1 - self.pool.0
    }

    /// One range, image then pool, at the top of RAM below 4 GiB (the highest byte of RAM below
    /// 4 GiB is at most 1 MiB above it: Bochs' firmware keeps its ACPI tables there), and within
    /// the 8 MiB goal.
    fn check(&self, megs: u32) -> Result<(), String> {
        let low_top = (megs as u64).min(3072) << 20;
        if self.image.1 != self.pool.0 {
            return Err(format!("image and pool are not one range: {self:x?}"));
        }
        if self.pool.1 > low_top || self.pool.1 + (1 << 20) < low_top {
            return Err(format!(
                "Vigil's memory ends at {:#x}, not at the top of the RAM below 4 GiB ({low_top:#x})",
                self.pool.1
            ));
        }
        if self.bytes() > 8 << 20 {
            return Err(format!(
                "Vigil takes {} KiB, over the 8 MiB goal",
                self.bytes() / 1024
            ));
        }
        Ok(())
    }
}

fn footprint(c: &Check) -> Result<Footprint, String> {
    let f = Footprint::parse(c.outcome.capture.com2())
        .ok_or("Vigil printed no `vigil memory: image […), pool […)` line")?;
    f.check(megs(c.scenario.name))?;
    Ok(f)
}

fn demo_bare(c: &Check) -> Result<(), String> {
    crate::scenarios::demo_bare(c)
}

/// The demo passes under Vigil as on bare metal at this size, with Vigil at the top of RAM.
fn demo_vigil(c: &Check) -> Result<(), String> {
    crate::scenarios::demo_vigil(c)?;
    footprint(c)?;
    same_passes(c, true)
}

fn cases_bare(c: &Check) -> Result<(), String> {
    crate::scenarios::cases_bare(c)
}

/// The cases pass under Vigil as bare, and the guest's RAM (the `isolation` case counts every
/// available page below 4 GiB) is bare's less exactly Vigil's memory.
fn cases_vigil(c: &Check) -> Result<(), String> {
    crate::scenarios::cases_vigil(c)?;
    let f = footprint(c)?;
    let bare = c.baseline.ok_or("the bare outcome is missing")?;
    let pages = |o: &Outcome| -> Result<u64, String> {
        report::cases(o.capture.port(Port::Guest))
            .iter()
            .find(|l| l.name == "isolation" && l.status == Status::Pass)
            .and_then(|l| l.field("ram_pages"))
            .and_then(report::parse_u64)
            .ok_or_else(|| "no passing isolation case with ram_pages=".to_string())
    };
    let (mine, theirs) = (pages(c.outcome)?, pages(bare)?);
    if theirs - mine.min(theirs) != f.bytes() / 4096 {
        return Err(format!(
            "the guest sees {mine} RAM pages under Vigil, {theirs} bare: the difference should be \
             Vigil's {} pages",
            f.bytes() / 4096
        ));
    }
    Ok(())
}

/// Every case that passed bare passed under Vigil (`also_skipped`: cases that skip bare, as
/// Vigil's own do, may pass under Vigil).
fn same_passes(c: &Check, also_skipped: bool) -> Result<(), String> {
    let bare = c.baseline.ok_or("the bare outcome is missing")?;
    let passed = |o: &Outcome| -> BTreeSet<String> {
        report::cases(o.capture.port(Port::Guest))
            .into_iter()
            .filter(|l| l.status == Status::Pass)
            .map(|l| l.name)
            .collect()
    };
    let (mine, theirs) = (passed(c.outcome), passed(bare));
    let lost: Vec<&String> = theirs.difference(&mine).collect();
    if !lost.is_empty() {
        return Err(format!("passed bare but not under Vigil: {lost:?}"));
    }
    if !also_skipped && mine != theirs {
        return Err(format!("bare passed {theirs:?}, under Vigil {mine:?}"));
    }
    Ok(())
}

/// Linux boots under Vigil as bare at this size, with Vigil at the top of RAM below 4 GiB.
fn linux_vigil(c: &Check) -> Result<(), String> {
    crate::linux_checks::check_vigil(c)?;
    footprint(c).map(|_| ())
}

fn modules_bare(c: &Check) -> Result<(), String> {
    c.outcome.normal_end()?;
    modules_seen(c, c.outcome).map(|_| ())
}

/// The guest reads the same modules, strings and bytes under Vigil as bare.
fn modules_vigil(c: &Check) -> Result<(), String> {
    c.outcome.normal_end()?;
    let mine = modules_seen(c, c.outcome)?;
    let bare = c.baseline.ok_or("the bare outcome is missing")?;
    let theirs = modules_seen(c, bare)?;
    if mine != theirs {
        return Err(format!("bare: {theirs:?}; under Vigil: {mine:?}"));
    }
    Ok(())
}

/// What the `modules` case reported, checked against the files on the ISO: (length, checksum,
/// string) of each module.
fn modules_seen(c: &Check, o: &Outcome) -> Result<Vec<(u64, u64, String)>, String> {
    let line = report::cases(o.capture.port(Port::Guest))
        .into_iter()
        .find(|l| l.name == "modules")
        .ok_or("no `modules` case line")?;
    if line.status != Status::Pass {
        return Err(format!("modules: {:?} {}", line.status, line.why));
    }
    let expected = modules_for(c.scenario.name);
    let count = line.field("count").and_then(report::parse_u64);
    if count != Some(expected.len() as u64) {
        return Err(format!(
            "the guest saw {count:?} modules, the ISO has {}",
            expected.len()
        ));
    }
    let mut seen = Vec::new();
    for (i, m) in expected.iter().enumerate() {
        let len = line.field(&format!("m{i}.len")).and_then(report::parse_u64);
        let sum = line.field(&format!("m{i}.fnv")).and_then(report::parse_hex);
        let string = line
            .field(&format!("m{i}.string"))
            .unwrap_or("")
            .replace('+', " ");
        if len != Some(m.bytes.len() as u64) || sum != Some(fnv(&m.bytes)) {
            return Err(format!(
                "module {i}: the guest read len={len:?} fnv={sum:x?}, the file has len={} fnv={:#x}",
                m.bytes.len(),
                fnv(&m.bytes)
            ));
        }
        if !module_string_matches(&string, &m.string) {
            return Err(format!(
                "module {i}: the guest's string is {string:?}, the ISO gives {:?}",
                m.string
            ));
        }
        seen.push((len.unwrap_or(0), sum.unwrap_or(0), string));
    }
    Ok(seen)
}

/// GRUB's `module FILE ARGS` hands over `ARGS`, or `FILE ARGS` (versions differ): accept both.
fn module_string_matches(seen: &str, given: &str) -> bool {
    let seen = seen.trim();
    seen == given
        || seen
            .split_once(' ')
            .is_some_and(|(path, rest)| path.starts_with("/boot/module") && rest == given)
        || (given.is_empty() && seen.starts_with("/boot/module") && !seen.contains(' '))
}

/// memtest's serial screen, read as text: escape sequences dropped.
pub fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final byte (0x40-0x7E); other escapes: ESC + one char.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
            out.push(' ');
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// What memtest's screen showed: the test numbers it started (`#N [name]`), its error count
/// (`Errors: N`, the last one shown) and the memory it tests (`of N MB]`, the last one shown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemtestScreen {
    pub tests: BTreeSet<u32>,
    pub errors: Option<u64>,
    pub pass: Option<u64>,
}

impl MemtestScreen {
    pub fn parse(raw: &str) -> MemtestScreen {
        let text = strip_escapes(raw);
        let mut screen = MemtestScreen::default();
        let mut rest = text.as_str();
        while let Some(at) = rest.find('#') {
            rest = &rest[at + 1..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            let after = rest[digits.len()..].trim_start();
            if !digits.is_empty() && after.starts_with('[') {
                if let Ok(n) = digits.parse() {
                    screen.tests.insert(n);
                }
            }
        }
        let last_number = |key: &str| -> Option<u64> {
            let at = text.rfind(key)?;
            let digits: String = text[at + key.len()..]
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        };
        screen.errors = last_number("Errors:");
        screen.pass = last_number("Pass:");
        screen
    }
}

fn memtest_screen(o: &Outcome) -> Result<MemtestScreen, String> {
    let raw: Vec<&str> = o.capture.com1();
    let screen = MemtestScreen::parse(&raw.join("\n"));
    if screen.tests.is_empty() {
        return Err("memtest started no test (no `#N [name]` on its screen)".into());
    }
    match screen.errors {
        Some(0) => {}
        Some(n) => return Err(format!("memtest found {n} errors")),
        None => return Err("memtest's screen shows no `Errors:` count".into()),
    }
    // The budget ends the run: Bochs quits at its time breakpoint, by itself.
    if !matches!(o.end, End::Exited(_)) {
        return Err(format!(
            "{} before the {MEMTEST_TICKS}-tick budget ran out",
            o.end_phrase()
        ));
    }
    Ok(screen)
}

fn memtest_bare(c: &Check) -> Result<(), String> {
    if let Some(why) = c.outcome.grub_failure() {
        return Err(why);
    }
    memtest_screen(c.outcome).map(|_| ())
}

/// memtest under Vigil: the same tests reached in the same budget as bare, no errors, Vigil at
/// the top of RAM and still running (no `run ended:` line: the budget stops the machine).
fn memtest_vigil(c: &Check) -> Result<(), String> {
    if let Some(why) = c.outcome.grub_failure() {
        return Err(why);
    }
    if let Some(line) = c.outcome.capture.last_line(Port::Vigil) {
        if line.starts_with("run ended:") {
            return Err(format!("vigil: {line}"));
        }
    }
    footprint(c)?;
    let mine = memtest_screen(c.outcome)?;
    let bare = memtest_screen(c.baseline.ok_or("the memtest-bare outcome is missing")?)?;
    if mine.tests != bare.tests {
        return Err(format!(
            "memtest reached tests {:?} under Vigil, {:?} bare",
            mine.tests, bare.tests
        ));
    }
    Ok(())
}

/// A `lowload` scenario: the kernel of [`low_kernel`], written into the run directory.
pub fn run_lowload(layout: &Layout, s: &Scenario, verbose: bool) -> Result<Outcome, String> {
    let vigil = crate::linux::vigil_bin(layout, s.mode)?;
    crate::suite::boot(layout, s, verbose, |dir| {
        let kernel = dir.file("lowload.bin");
        std::fs::write(&kernel, low_kernel())
            .map_err(|e| format!("cannot write {}: {e}", kernel.display()))?;
        let spec = iso::IsoSpec {
            guest: kernel,
            guest_args: String::new(),
            vigil: vigil.map(|b| (b, s.vigil_options.to_string())),
            modules: Vec::new(),
        };
        Ok(iso::make(dir, &spec)?.0)
    })
}

/// A memtest scenario: memtest86+'s image as a Linux-protocol kernel without an initrd.
pub fn run_memtest(layout: &Layout, s: &Scenario, verbose: bool) -> Result<Outcome, String> {
    let image = Path::new(MEMTEST_IMAGE);
    if !image.is_file() {
        return Err(format!(
            "{MEMTEST_IMAGE} is missing: install Debian's memtest86+ package (apt-get install memtest86+)"
        ));
    }
    let vigil = crate::linux::vigil_bin(layout, s.mode)?;
    crate::suite::boot(layout, s, verbose, |dir| {
        make_memtest_iso(dir, image, vigil.as_deref().map(|b| (b, s.vigil_options)))
    })
}

fn make_memtest_iso(
    dir: &RunDir,
    image: &Path,
    vigil: Option<(&Path, &str)>,
) -> Result<PathBuf, String> {
    let tree = dir.file("iso");
    if tree.exists() {
        std::fs::remove_dir_all(&tree)
            .map_err(|e| format!("cannot clear {}: {e}", tree.display()))?;
    }
    let boot = tree.join("boot");
    std::fs::create_dir_all(boot.join("grub"))
        .map_err(|e| format!("cannot create {}: {e}", boot.display()))?;
    std::fs::copy(image, boot.join("memtest"))
        .map_err(|e| format!("cannot copy {}: {e}", image.display()))?;
    let cfg = match vigil {
        Some((bin, options)) => {
            iso::copy_stripped(bin, &boot.join("vigil"))?;
            iso::grub_entry(
                "vigil memtest",
                &[
                    ("multiboot2 /boot/vigil", options),
                    ("module2 /boot/memtest guest", MEMTEST_CMDLINE),
                ],
            )
        }
        None => iso::grub_entry("memtest", &[("linux /boot/memtest", MEMTEST_CMDLINE)]),
    };
    iso::write(&boot.join("grub/grub.cfg"), &cfg)?;
    iso::mkrescue(dir, &tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_its_ram_size() {
        assert_eq!(megs("demo-32m-vigil"), 32);
        assert_eq!(megs("cases-5g-bare"), 5120);
        assert_eq!(megs("linux-128m-vigil"), 128);
        assert_eq!(megs("memtest-hide"), MEMTEST_MEGS);
        assert_eq!(megs("modules-vigil"), crate::bochs::DEFAULT_MEGS);
        assert_eq!(megs("demo-vigil"), crate::bochs::DEFAULT_MEGS);
        for s in all() {
            let m = megs(s.name);
            let tag = if m >= 1024 {
                format!("-{}g-", m / 1024)
            } else {
                format!("-{m}m-")
            };
            assert!(
                s.name.contains(&tag)
                    || s.name.starts_with("memtest-")
                    || s.name.starts_with("modules-")
                    || s.name.starts_with("lowload-"),
                "{} runs with {m} MiB",
                s.name
            );
        }
    }

    #[test]
    fn memtest_screen_is_read_through_escapes() {
        let raw = "\u{1b}[2J\u{1b}[1;1H  Pass:  0        Errors: 0  \u{1b}[4;35H #4  [Moving inversions, 8 bit pattern]  \r\n\
                   \u{1b}[4;35H #5  [Block move]   Errors:\u{1b}[0m 0";
        let s = MemtestScreen::parse(raw);
        assert_eq!(s.tests, BTreeSet::from([4, 5]));
        assert_eq!(s.errors, Some(0));
        assert_eq!(s.pass, Some(0));
        let bad = MemtestScreen::parse("#2 [Address test]  Errors: 17");
        assert_eq!(bad.errors, Some(17));
        assert!(MemtestScreen::parse("nothing here").tests.is_empty());
    }

    #[test]
    fn footprint_line() {
        let com2 = [
            "Vigil 0.1.0 — Intel VT-x hypervisor",
            "vigil memory: image [0x1df3000-0x1ebd000), pool [0x1ebd000-0x1ff0000) — absent from the guest (2036 KiB in all)",
        ];
        let f = Footprint::parse(com2).unwrap();
        assert_eq!(f.image, (0x1df3000, 0x1ebd000));
        assert_eq!(f.pool, (0x1ebd000, 0x1ff0000));
        assert_eq!(f.bytes(), 2036 * 1024);
        assert!(f.check(32).is_ok());
        assert!(f.check(64).is_err(), "not at the top of a 64 MiB machine");
        let split = Footprint {
            pool: (0x1ec0000, 0x1ff0000),
            ..f
        };
        assert!(split.check(32).is_err());
    }

    #[test]
    fn the_low_kernel_is_a_multiboot_image_at_0x8000() {
        let k = low_kernel();
        let word = |o: usize| u32::from_le_bytes(k[o..o + 4].try_into().unwrap());
        assert_eq!(word(0), 0x1BAD_B002);
        assert_eq!(word(0).wrapping_add(word(4)).wrapping_add(word(8)), 0);
        assert_eq!(
            (word(12), word(16), word(24), word(28)),
            (0x8000, 0x8000, 0xA000, 0x8020)
        );
        // The jumps land where the comments say: jne → bad, jb → good, jb → bad, jmp → print,
        // and the print loop's jz and loop go back where they should.
        assert_eq!(k[0x20], 0xFC, "cld first");
        let code = &k[0x21..];
        let rel = |at: usize| (at + 2) as isize + code[at + 1] as i8 as isize;
        assert_eq!(code[5], 0x75);
        let bad = rel(5) as usize;
        assert_eq!(code[bad], 0xBE, "bad: mov esi");
        let imm = |at: usize| u32::from_le_bytes(code[at + 1..at + 5].try_into().unwrap());
        assert_eq!(imm(bad), 0x8140);
        assert_eq!(code[13], 0x72);
        let good = rel(13) as usize;
        assert_eq!(imm(good), 0x8100);
        assert_eq!(code[21], 0x72);
        assert_eq!(rel(21) as usize, bad);
        let jmp = good + 10;
        assert_eq!(code[jmp], 0xEB);
        let init = rel(jmp) as usize;
        assert_eq!(init, bad + 10, "print follows bad's two moves");
        assert_eq!(
            &code[init + 21..init + 28],
            &[0x66, 0xBA, 0xFB, 0x03, 0xB0, 0x03, 0xEE]
        );
        let print = init + 28;
        assert_eq!(&code[print..print + 4], &[0x66, 0xBA, 0xFD, 0x03]);
        let jz = print + 7;
        assert_eq!(code[jz], 0x74);
        assert_eq!(rel(jz) as usize, print + 4, "jz back to the in");
        let lp = print + 15;
        assert_eq!(code[lp], 0xE2);
        assert_eq!(rel(lp) as usize, print, "loop back to the LSR port");
        let sent = lp + 2 + 4;
        assert_eq!(code[sent + 3], 0x74);
        assert_eq!(rel(sent + 3) as usize, sent, "jz back to its in");
        assert_eq!(&k[0x100..0x100 + LOWLOAD_OK.len()], LOWLOAD_OK.as_bytes());
        assert_eq!(&k[0x180..0x188], b"Shutdown");
    }

    #[test]
    fn module_strings_with_or_without_the_path() {
        assert!(module_string_matches("env a=1", "env a=1"));
        assert!(module_string_matches("/boot/module0 env a=1", "env a=1"));
        assert!(module_string_matches("/boot/module1", ""));
        assert!(!module_string_matches("env a=2", "env a=1"));
    }
}
