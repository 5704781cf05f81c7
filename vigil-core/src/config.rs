//! Vigil's command line (from GRUB's multiboot2 command line): `key=value` words.
//! Every mistake gets a message that names the word and says what was expected.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::RangeInclusive;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// How the guest's time-stamp counter relates to the host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TscMode {
    /// The guest reads the host TSC unchanged.
    Native,
    /// The guest reads host TSC + offset (two's complement), through the VMCS TSC offset or,
    /// when RDTSC is trapped, through emulation that adds the same offset.
    Offset(u64),
    /// The guest's TSC loses the host time of every VM exit, less what the exiting instruction
    /// costs on bare metal, so a guest timing an exiting instruction measures bare metal's cost;
    /// RDTSC and RDTSCP run natively. The time hidden is a debt the guest's TSC repays by running
    /// slightly fast while the guest runs (`crate::time::debt`); [`HideLimit`] says whether the
    /// debt is bounded.
    Hide(HideLimit),
    /// The guest's TSC stands still while Vigil holds the guest (every VM exit, and debugger
    /// stops); it runs at the host rate otherwise.
    Frozen,
    /// The guest's TSC runs at P/Q times the host rate.
    Scale(u32, u32),
}

/// How much exit time `tsc=hide` may owe the guest at once: the trade-off between hiding every
/// exit and keeping the TSC true against the platform's clocks (docs/architecture.md, "Virtual
/// time").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HideLimit {
    /// `tsc=hide`: the guest's TSC never lags true time by more than
    /// `time::debt::MAX_LAG_PPM` millionths of a second (250 µs), less than the 400 µs Linux's
    /// clocksource watchdog tolerates between two of its checks, so no clock comparison of any
    /// length sees more; a burst of exits beyond that budget shows (on hardware, a CPUID exit
    /// costs a microsecond or two: some 150 of them; in Bochs, 12 µs: some 20).
    Bounded,
    /// `tsc=hide:unbounded`: every exit is hidden, however long the burst; the debt is repaid
    /// while the guest runs. Under a storm of exits the TSC falls behind the platform's clocks,
    /// which a watchdog or a detector comparing them sees.
    Unbounded,
}

impl TscMode {
    /// The offset the guest starts with.
    pub fn offset(self) -> u64 {
        match self {
            TscMode::Offset(o) => o,
            _ => 0,
        }
    }

    /// The number the hypercall interface reports for this mode.
    pub fn code(self) -> u8 {
        match self {
            TscMode::Native => 0,
            TscMode::Offset(_) => 1,
            TscMode::Hide(_) => 2,
            TscMode::Frozen => 3,
            TscMode::Scale(..) => 4,
        }
    }

    /// Whether the guest's TSC loses the host time of VM exits (`hide` and `frozen`).
    pub fn hides_exits(self) -> bool {
        matches!(self, TscMode::Hide(_) | TscMode::Frozen)
    }

    /// Whether the guest's TSC is not simply the host's: Vigil then owns IA32_TSC,
    /// IA32_TSC_ADJUST and the TSC-deadline MSR.
    pub fn virtualized(self) -> bool {
        self != TscMode::Native
    }
}

/// Which guest events cause VM exits beyond the ones the architecture makes unconditional and
/// the ones Vigil needs for itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrapPolicy {
    /// Log each CPUID the guest executes (CPUID always exits; SDM Vol. 3C 26.1.2).
    pub cpuid: bool,
    /// RDTSC and RDTSCP: one control governs both (SDM Vol. 3C 26.1.3).
    pub rdtsc: bool,
    pub hlt: bool,
    pub invlpg: bool,
    pub rdpmc: bool,
    pub cr3_load: bool,
    pub cr3_store: bool,
    pub mov_dr: bool,
    /// Extra CR0/CR4 bits in the guest/host masks: guest writes that change them exit.
    pub cr0_mask: u64,
    pub cr4_mask: u64,
    /// Exception vectors whose delivery exits (the exception bitmap).
    pub exceptions: u32,
    pub msr_read: Vec<u32>,
    pub msr_write: Vec<u32>,
    pub io: Vec<RangeInclusive<u16>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub log: LogLevel,
    pub trap: TrapPolicy,
    pub tsc: TscMode,
    /// Whether the Vigil hypercall interface answers. Off by default: every VMCALL then gets
    /// #UD as on bare metal, and no guest can detect Vigil or learn where its memory is.
    pub hypercalls: bool,
    /// Run the VM-entry checks before the first VM entry.
    pub check_entry: bool,
    /// Print each trapped event as it happens.
    pub log_exits: bool,
    /// Testing aid: VMCS writes (encoding, value) applied just before the first VM entry, to
    /// provoke a VM-entry failure on purpose.
    pub test_vmwrites: Vec<(u32, u64)>,
    /// Testing aid under SVM: VMCB writes (offset, value) applied just before the first VMRUN,
    /// to provoke a failed VMRUN on purpose.
    pub test_vmcb: Vec<(u32, u64)>,
    /// Testing aid under SVM: ignore NRIP save and decode every intercepted instruction's length,
    /// as on a processor without it.
    pub test_no_nrips: bool,
    pub cpuid: CpuidPolicy,
    /// The GDB stub on COM2 (`gdb=com2`): COM2 then carries the GDB remote protocol.
    pub gdb: bool,
    /// Hold the guest before its first instruction until gdb attaches and continues.
    pub gdb_wait: bool,
    /// The register layout shown to gdb; `None` follows the guest image's ELF class.
    pub gdb_arch: Option<crate::debugger::arch::Layout>,
}

/// One bit of a CPUID result: `leaf[.subleaf]:reg:bit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidBit {
    pub leaf: u32,
    /// None: every subleaf.
    pub subleaf: Option<u32>,
    /// 0 = EAX, 1 = EBX, 2 = ECX, 3 = EDX.
    pub reg: u8,
    pub bit: u8,
}

impl CpuidBit {
    pub fn matches(&self, leaf: u32, subleaf: u32) -> bool {
        self.leaf == leaf && self.subleaf.is_none_or(|s| s == subleaf)
    }
}

/// What the guest's CPUID shows beyond the host's values (VMX is always hidden).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuidPolicy {
    /// Set the hypervisor-present bit (CPUID.1:ECX[31]) and answer the hypervisor leaves
    /// 0x40000000-0x40000001 with Vigil's vendor string. Off by default: transparency.
    pub hypervisor: bool,
    pub clear: Vec<CpuidBit>,
    pub set: Vec<CpuidBit>,
}

impl CpuidPolicy {
    /// Whether `cpuid-clear` or `cpuid-set` change any bit.
    #[inline]
    pub fn changes_bits(&self) -> bool {
        !self.clear.is_empty() || !self.set.is_empty()
    }

    /// Applies the masks to a result `[eax, ebx, ecx, edx]`.
    pub fn apply(&self, leaf: u32, subleaf: u32, r: &mut [u32; 4]) {
        for b in self.clear.iter().filter(|b| b.matches(leaf, subleaf)) {
            r[b.reg as usize] &= !(1 << b.bit);
        }
        for b in self.set.iter().filter(|b| b.matches(leaf, subleaf)) {
            r[b.reg as usize] |= 1 << b.bit;
        }
    }
}

fn parse_cpuid_bit(s: &str) -> Option<CpuidBit> {
    let mut parts = s.split(':');
    let (leaf_part, reg, bit) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (leaf, subleaf) = match leaf_part.split_once('.') {
        Some((l, s)) => (
            l,
            Some(parse_i64(s).filter(|v| (0..=u32::MAX as i64).contains(v))? as u32),
        ),
        None => (leaf_part, None),
    };
    let leaf = parse_i64(leaf).filter(|v| (0..=u32::MAX as i64).contains(v))? as u32;
    let reg = match reg {
        "eax" => 0,
        "ebx" => 1,
        "ecx" => 2,
        "edx" => 3,
        _ => return None,
    };
    let bit = parse_i64(bit).filter(|v| (0..32).contains(v))? as u8;
    Some(CpuidBit {
        leaf,
        subleaf,
        reg,
        bit,
    })
}

impl Default for Config {
    fn default() -> Self {
        Self {
            log: LogLevel::Info,
            trap: TrapPolicy::default(),
            tsc: TscMode::Native,
            hypercalls: false,
            check_entry: cfg!(debug_assertions),
            log_exits: false,
            test_vmwrites: Vec::new(),
            test_vmcb: Vec::new(),
            test_no_nrips: false,
            cpuid: CpuidPolicy::default(),
            gdb: false,
            gdb_wait: false,
            gdb_arch: None,
        }
    }
}

/// The options and their meaning, as printed by `help` (and mirrored by `cargo xtask run --help`).
pub const HELP: &str = "\
log=error|warn|info|debug|trace   Vigil's log level (default info)
trap=ITEM[,ITEM...]               extra VM exits: cpuid (log them), rdtsc (RDTSC and RDTSCP),
                                  hlt, invlpg, rdpmc, cr3 (loads and stores), cr3-load,
                                  cr3-store, cr0:MASK, cr4:MASK (writes changing those bits),
                                  movdr, exc:VECTOR (an exception's vector: not 2, the
                                  NMI, nor a reserved one), msr:N (reads and writes),
                                  msr-r:N, msr-w:N, io:PORT or io:FIRST-LAST
tsc=native|offset:N|hide|hide:unbounded|frozen|scale:P/Q
                                  the guest's TSC: the host's; + N (two's complement, N may be
                                  negative); with each exit's host time hidden (less the
                                  instruction's bare cost) and repaid while the guest runs,
                                  never more than 250 us behind true time (unbounded: every
                                  exit hidden however long the burst); standing still while
                                  Vigil holds the guest; at P/Q the rate
                                  (P, Q from 1 to 65536, P/Q below 65536)
hypercall=on|off                  answer Vigil's VMCALL interface (default off: every VMCALL
                                  gets #UD, as on bare metal, and the guest cannot find Vigil)
check-entry=on|off                run the VM-entry checks before the first VM entry
log-exits=on|off                  print each trapped event
gdb=com2|off                      a GDB remote-protocol stub on COM2 (docs/debugging.md)
gdb-wait=on|off                   with gdb=com2 only: hold the guest before its first
                                  instruction until gdb attaches and continues
gdb-arch=auto|x86-64|i386         with gdb=com2 only: registers shown to gdb (auto: the guest
                                  ELF's class)
cpuid-hv=on|off                   show a hypervisor: CPUID.1:ECX[31] and leaves 0x40000000-1
cpuid-clear=LEAF[.SUB]:REG:BIT,.. hide CPUID feature bits, e.g. 7.0:edx:4 (REG: eax..edx)
cpuid-set=LEAF[.SUB]:REG:BIT,...  show CPUID feature bits
test-vmwrite=ENCODING:VALUE       testing aid: write a VMCS field just before the first entry
test-vmcb=OFFSET:VALUE            testing aid (SVM): write a VMCB field just before the first
                                  VMRUN
test-nrips=on|off                 testing aid (SVM): off decodes instruction lengths as on a
                                  processor without NRIP save
";

impl Config {
    pub fn parse(cmdline: &str) -> Result<Config, String> {
        let mut config = Config::default();
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("option `{word}`: expected key=value"))?;
            let bad = |what: &str| format!("option `{word}`: {what}");
            match key {
                "log" => {
                    config.log = match value {
                        "error" => LogLevel::Error,
                        "warn" => LogLevel::Warn,
                        "info" => LogLevel::Info,
                        "debug" => LogLevel::Debug,
                        "trace" => LogLevel::Trace,
                        _ => return Err(bad("expected error, warn, info, debug or trace")),
                    }
                }
                "trap" => {
                    for item in value.split(',').filter(|i| !i.is_empty()) {
                        parse_trap(&mut config.trap, item).map_err(|e| bad(&format!("`{item}`: {e}")))?;
                    }
                }
                "tsc" => {
                    config.tsc = match value.split_once(':') {
                        None if value == "native" => TscMode::Native,
                        None if value == "hide" => TscMode::Hide(HideLimit::Bounded),
                        Some(("hide", "unbounded")) => TscMode::Hide(HideLimit::Unbounded),
                        None if value == "frozen" => TscMode::Frozen,
                        Some(("offset", n)) => TscMode::Offset(
                            parse_i64(n).ok_or_else(|| bad("expected offset:N with N a number"))? as u64,
                        ),
                        Some(("scale", ratio)) => {
                            let (p, q) = ratio
                                .split_once('/')
                                .and_then(|(p, q)| Some((p.parse::<u32>().ok()?, q.parse::<u32>().ok()?)))
                                .filter(|&(p, q)| p > 0 && q > 0 && p <= 1 << 16 && q <= 1 << 16)
                                .ok_or_else(|| bad("expected scale:P/Q with P and Q from 1 to 65536"))?;
                            // The ratio becomes a 16.48 fixed-point TSC multiplier (SDM Vol. 3C
                            // 26.3): 65536 itself would not fit, and would read as 0.
                            if p as u64 >= (q as u64) << 16 {
                                return Err(bad("P/Q must be below 65536 (the TSC multiplier has 16 integer bits)"));
                            }
                            TscMode::Scale(p, q)
                        }
                        _ => return Err(bad("expected native, offset:N, hide, hide:unbounded, frozen or scale:P/Q")),
                    }
                }
                "hypercall" => config.hypercalls = parse_bool(value).ok_or_else(|| bad("expected on or off"))?,
                "check-entry" => config.check_entry = parse_bool(value).ok_or_else(|| bad("expected on or off"))?,
                "log-exits" => config.log_exits = parse_bool(value).ok_or_else(|| bad("expected on or off"))?,
                "gdb" => {
                    config.gdb = match value {
                        "com2" => true,
                        "off" => false,
                        _ => return Err(bad("expected com2 or off")),
                    }
                }
                "gdb-wait" => config.gdb_wait = parse_bool(value).ok_or_else(|| bad("expected on or off"))?,
                "gdb-arch" => {
                    use crate::debugger::arch::Layout;
                    config.gdb_arch = match value {
                        "auto" => None,
                        "x86-64" => Some(Layout::X86_64),
                        "i386" => Some(Layout::I386),
                        _ => return Err(bad("expected auto, x86-64 or i386")),
                    }
                }
                "cpuid-hv" => config.cpuid.hypervisor = parse_bool(value).ok_or_else(|| bad("expected on or off"))?,
                "cpuid-clear" | "cpuid-set" => {
                    for item in value.split(',').filter(|i| !i.is_empty()) {
                        let bit = parse_cpuid_bit(item).ok_or_else(|| {
                            bad(&format!("`{item}`: expected LEAF[.SUBLEAF]:REG:BIT, e.g. 7.0:edx:4"))
                        })?;
                        if key == "cpuid-clear" {
                            config.cpuid.clear.push(bit);
                        } else {
                            config.cpuid.set.push(bit);
                        }
                    }
                }
                "test-vmwrite" => {
                    let parsed = value.split_once(':').and_then(|(e, v)| {
                        let e = parse_i64(e).filter(|e| (0..=u32::MAX as i64).contains(e))?;
                        Some((e as u32, parse_i64(v)? as u64))
                    });
                    config.test_vmwrites.push(parsed.ok_or_else(|| bad("expected ENCODING:VALUE"))?);
                }
                "test-vmcb" => {
                    let parsed = value.split_once(':').and_then(|(o, v)| {
                        let o = parse_i64(o).filter(|o| (0..0x1000).contains(o))?;
                        Some((o as u32, parse_i64(v)? as u64))
                    });
                    config.test_vmcb.push(parsed.ok_or_else(|| bad("expected OFFSET:VALUE with OFFSET below 0x1000"))?);
                }
                "test-nrips" => config.test_no_nrips = !parse_bool(value).ok_or_else(|| bad("expected on or off"))?,
                _ => return Err(format!("unknown option `{key}` (known: log, trap, tsc, hypercall, check-entry, log-exits, cpuid-hv, cpuid-clear, cpuid-set, gdb, gdb-wait, gdb-arch, test-vmwrite, test-vmcb, test-nrips)")),
            }
        }
        // Options that only mean something with the stub.
        if !config.gdb && (config.gdb_wait || config.gdb_arch.is_some()) {
            return Err("gdb-wait and gdb-arch need gdb=com2".into());
        }
        Ok(config)
    }
}

fn parse_trap(trap: &mut TrapPolicy, item: &str) -> Result<(), String> {
    let (name, arg) = match item.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (item, None),
    };
    let number = |max: u64| -> Result<u64, String> {
        let a = arg.ok_or_else(|| format!("`{name}` needs a number: {name}:N"))?;
        match parse_i64(a) {
            Some(n) if n >= 0 && n as u64 <= max => Ok(n as u64),
            _ => Err(format!("`{a}` is not a number from 0 to {max:#x}")),
        }
    };
    match (name, arg) {
        ("cpuid", None) => trap.cpuid = true,
        ("rdtsc" | "rdtscp", None) => trap.rdtsc = true,
        ("hlt", None) => trap.hlt = true,
        ("invlpg", None) => trap.invlpg = true,
        ("rdpmc", None) => trap.rdpmc = true,
        ("cr3", None) => (trap.cr3_load, trap.cr3_store) = (true, true),
        ("cr3-load", None) => trap.cr3_load = true,
        ("cr3-store", None) => trap.cr3_store = true,
        ("movdr", None) => trap.mov_dr = true,
        ("cr0", Some(_)) => trap.cr0_mask |= number(u32::MAX as u64)?,
        ("cr4", Some(_)) => trap.cr4_mask |= number(u32::MAX as u64)?,
        ("exc", Some(_)) => {
            let vector = number(31)?;
            // VMX's exception bitmap has no say over NMIs (their exits are a separate pin-based
            // control, SDM Vol. 3C 26.2): `exc:2` would do nothing. NMIs belong to the guest.
            if vector == 2 {
                return Err(
                    "vector 2 is the NMI, which is not an exception: NMIs go to the guest and cannot be trapped".into(),
                );
            }
            // Vectors no exception uses (SDM Vol. 3A, "Exception and Interrupt Vectors"; 28-30
            // are AMD's #HV, #VC and #SX): an exit for them would never come.
            if matches!(vector, 9 | 15 | 22..=27 | 31) {
                return Err(format!("vector {vector} is reserved: no exception uses it"));
            }
            trap.exceptions |= 1 << vector
        }
        ("msr", Some(_)) => {
            let msr = number(u32::MAX as u64)? as u32;
            trap.msr_read.push(msr);
            trap.msr_write.push(msr);
        }
        ("msr-r", Some(_)) => trap.msr_read.push(number(u32::MAX as u64)? as u32),
        ("msr-w", Some(_)) => trap.msr_write.push(number(u32::MAX as u64)? as u32),
        ("io", Some(a)) => {
            let (first, last) = a.split_once('-').unwrap_or((a, a));
            let port = |p: &str| match parse_i64(p) {
                Some(n) if (0..=0xFFFF).contains(&n) => Ok(n as u16),
                _ => Err(format!("`{p}` is not a port number from 0 to 0xffff")),
            };
            let (first, last) = (port(first)?, port(last)?);
            if first > last {
                return Err(format!("port range {first:#x}-{last:#x} is empty"));
            }
            trap.io.push(first..=last);
        }
        ("exc" | "msr" | "msr-r" | "msr-w" | "io" | "cr0" | "cr4", None) => {
            return Err(format!("`{name}` needs a value: {name}:N"))
        }
        _ => return Err("unknown trap (see `trap=` in the option list)".into()),
    }
    Ok(())
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "on" | "yes" | "1" | "true" => Some(true),
        "off" | "no" | "0" | "false" => Some(false),
        _ => None,
    }
}

/// Decimal or 0x-prefixed hexadecimal, optionally negative.
pub fn parse_i64(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<u64>().ok()?,
    };
    if neg {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        // Values above i64::MAX are accepted as their two's-complement bit pattern (offsets).
        Some(magnitude as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_command_line() {
        let c =
            Config::parse("log=debug trap=rdtsc,hlt,io:0x80,msr:0x10 tsc=offset:0x100000000000")
                .unwrap();
        assert_eq!(c.log, LogLevel::Debug);
        assert!(c.trap.rdtsc && c.trap.hlt && !c.trap.invlpg);
        assert_eq!(c.trap.io, [0x80..=0x80]);
        assert_eq!(c.trap.msr_read, [0x10]);
        assert_eq!(c.trap.msr_write, [0x10]);
        assert_eq!(c.tsc, TscMode::Offset(0x1000_0000_0000));
        let c = Config::parse("trap=cr0:0x10000,cr4:0x80,cr4:0x20").unwrap();
        assert_eq!((c.trap.cr0_mask, c.trap.cr4_mask), (0x10000, 0xA0));
    }

    #[test]
    fn cpuid_policy_masks_bits() {
        let c =
            Config::parse("cpuid-hv=on cpuid-clear=7.0:edx:4,1:ecx:3 cpuid-set=0x80000001:ecx:0")
                .unwrap();
        assert!(c.cpuid.hypervisor);
        let mut r = [0, 0, 0, 0xFFFF_FFFF];
        c.cpuid.apply(7, 0, &mut r);
        assert_eq!(r[3], !(1 << 4));
        let mut r = [0, 0, 0, 0xFFFF_FFFF];
        c.cpuid.apply(7, 1, &mut r);
        assert_eq!(r[3], 0xFFFF_FFFF, "subleaf 1 untouched");
        let mut r = [0, 0, 0xFF, 0];
        c.cpuid.apply(1, 5, &mut r);
        assert_eq!(r[2], 0xF7, "no subleaf given: every subleaf");
        let mut r = [0; 4];
        c.cpuid.apply(0x8000_0001, 0, &mut r);
        assert_eq!(r[2], 1);
        for bad in [
            "cpuid-clear=7:edx",
            "cpuid-clear=7:exx:4",
            "cpuid-clear=7:edx:32",
            "cpuid-set=x:eax:1",
        ] {
            assert!(Config::parse(bad).unwrap_err().contains("LEAF"), "{bad}");
        }
    }

    #[test]
    fn test_vmwrite_takes_encoding_and_value() {
        let c = Config::parse("test-vmwrite=0x4822:0x10000").unwrap();
        assert_eq!(c.test_vmwrites, [(0x4822, 0x10000)]);
        assert!(Config::parse("test-vmwrite=0x4822")
            .unwrap_err()
            .contains("ENCODING:VALUE"));
    }

    #[test]
    fn negative_offset_is_twos_complement() {
        let c = Config::parse("tsc=offset:-1000").unwrap();
        assert_eq!(c.tsc.offset(), (-1000i64) as u64);
    }

    #[test]
    fn time_modes() {
        assert_eq!(
            Config::parse("tsc=hide").unwrap().tsc,
            TscMode::Hide(HideLimit::Bounded)
        );
        assert_eq!(
            Config::parse("tsc=hide:unbounded").unwrap().tsc,
            TscMode::Hide(HideLimit::Unbounded)
        );
        assert!(Config::parse("tsc=hide:loose").is_err());
        assert_eq!(Config::parse("tsc=frozen").unwrap().tsc, TscMode::Frozen);
        assert_eq!(
            Config::parse("tsc=scale:3/2").unwrap().tsc,
            TscMode::Scale(3, 2)
        );
        for bad in [
            "tsc=scale:0/1",
            "tsc=scale:3",
            "tsc=scale:1/70000",
            "tsc=slow",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_word() {
        for (line, needle) in [
            ("bogus", "`bogus`: expected key=value"),
            ("color=red", "unknown option `color`"),
            ("trap=io:0x10000", "not a port number"),
            ("trap=io:0x90-0x80", "is empty"),
            ("trap=exc:32", "not a number from 0 to 0x1f"),
            ("trap=msr", "needs a value"),
            ("trap=teleport", "unknown trap"),
            ("tsc=offset:zz", "offset:N"),
            ("hypercall=maybe", "expected on or off"),
        ] {
            let err = Config::parse(line).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn options_that_would_do_nothing_are_refused() {
        for (line, needle) in [
            ("tsc=scale:65536/1", "below 65536"),
            ("trap=exc:2", "NMI"),
            ("trap=exc:15", "reserved"),
            ("trap=exc:31", "reserved"),
            ("gdb-wait=on", "need gdb=com2"),
            ("gdb-arch=i386", "need gdb=com2"),
        ] {
            let err = Config::parse(line).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
        assert_eq!(
            Config::parse("tsc=scale:65535/1").unwrap().tsc,
            TscMode::Scale(65535, 1)
        );
        assert_eq!(
            Config::parse("tsc=scale:65536/2").unwrap().tsc,
            TscMode::Scale(65536, 2)
        );
        let c = Config::parse("trap=exc:0,exc:8,exc:14,exc:21,exc:29").unwrap();
        assert_eq!(c.trap.exceptions, 1 | 1 << 8 | 1 << 14 | 1 << 21 | 1 << 29);
    }

    #[test]
    fn gdb_options() {
        use crate::debugger::arch::Layout;
        let c = Config::parse("gdb=com2 gdb-wait=on gdb-arch=i386").unwrap();
        assert!(c.gdb && c.gdb_wait);
        assert_eq!(c.gdb_arch, Some(Layout::I386));
        assert_eq!(Config::parse("gdb-arch=auto").unwrap().gdb_arch, None);
        assert!(Config::parse("gdb=com1")
            .unwrap_err()
            .contains("com2 or off"));
        assert!(Config::parse("gdb-arch=arm").is_err());
    }

    #[test]
    fn empty_command_line_is_the_default() {
        assert_eq!(Config::parse("  ").unwrap(), Config::default());
    }
}
