//! The one table of what Vigil owns among the guest's I/O ports and MSRs: for every entry, who
//! owns it, which handler serves an access that exits, and why.
//!
//! Both the hardware's filters and the dispatch come from it: the backend fills its I/O and MSR
//! bitmaps from [`PortTable::trapped`] and [`MsrTable::exits`] (VMX: SDM Vol. 3C 25.6.4, 25.6.9;
//! SVM: APM Vol. 2 15.10, 15.11), and the handlers route each access by [`PortTable::rule`] and
//! [`MsrTable::handler`]. So what exits and what handles it can never disagree.
//!
//! Ports belong to the guest unless a rule says otherwise. MSRs follow [`MsrDefault`]: today an
//! MSR no rule names passes through; denying by default, with an explicit [`PassThrough`] list of
//! harmless MSRs, is a change of data here, not of the handlers.

use crate::config::Config;
use crate::vcpu::msr as m;
use alloc::vec::Vec;
use core::ops::RangeInclusive;
use core::sync::atomic::{AtomicU16, AtomicU32, Ordering};

/// Who an entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Vigil's: the guest must never reach the real thing.
    Vigil,
    /// Still the guest's, trapped because the user asked (`trap=`): executed on its behalf.
    User,
}

/// How an access to a port that exits is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortHandler {
    /// No device answers: reads float high (all ones), writes are lost — an empty ISA decode.
    Absent,
    /// The emulator's shutdown port: the bytes of "Shutdown" end the run; other writes and all
    /// reads go to the port.
    Shutdown,
    /// A platform device Vigil owns (`crate::platform`): PCI configuration, resets, A20, ACPI
    /// sleep, the SMI command port, the IDE bus master.
    Platform(crate::platform::Device),
    /// Executed on the guest's behalf.
    Forward,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRule {
    pub ports: RangeInclusive<u16>,
    pub owner: Owner,
    pub handler: PortHandler,
    pub why: &'static str,
}

/// How an MSR access that exits is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrHandler {
    /// IA32_FEATURE_CONTROL: reads show the register locked with VMX disabled (the guest sees a
    /// processor without VMX); writes raise #GP, as they do once the register is locked.
    FeatureControl,
    /// An MSR the processor the guest is shown does not have: #GP.
    Absent,
    /// The guest's TSC, TSC_ADJUST and TSC deadline, kept in guest units (`crate::time`).
    Time,
    /// State the processor switches between guest and host (`crate::vcpu::msr`): the vCPU's
    /// copy, or the host register where the backend does not switch it; values the processor
    /// would reject get #GP first.
    Vcpu,
    /// Executed on the host, which the guest shares; a value the processor rejects gets #GP.
    Forward,
    /// IA32_APIC_BASE: the APIC page may move only onto guest RAM or back to its default
    /// (`crate::platform::apic`).
    ApicBase,
    /// The x2APIC interrupt command register: an SMI IPI is dropped, every other IPI sent.
    X2apicIcr,
    /// The MTRRs: the guest's own copy, checked, never the host's (the guest's memory types
    /// come from the EPT).
    Mtrr,
    /// IA32_MISC_ENABLE: read from the host; a write that would change what Vigil relies on
    /// (XD disable) is #GP, the rest goes to the host.
    MiscEnable,
    /// An MSR that holds an address the processor will write to: checked against Vigil's
    /// memory (and guest RAM where it is physical), then executed on the host.
    Address,
    /// Everything no entry names: reads are executed on the host (the guest sees what bare
    /// metal shows), writes are #GP.
    Default,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsrRule {
    pub msrs: RangeInclusive<u32>,
    pub owner: Owner,
    /// The handler of a read that exits; `None`: reads pass through.
    pub read: Option<MsrHandler>,
    /// The handler of a write that exits; `None`: writes pass through.
    pub write: Option<MsrHandler>,
    pub why: &'static str,
}

/// An MSR range the guest reads and writes directly, with the reason that is harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassThrough {
    pub msrs: RangeInclusive<u32>,
    pub why: &'static str,
}

/// What an MSR that no rule and no pass-through entry names gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrDefault {
    /// The guest reads and writes it directly. (MSRs outside the ranges a bitmap covers exit
    /// regardless, and are forwarded.)
    PassThrough,
    /// It exits, and this handler serves it.
    Exit(MsrHandler),
}

/// A port range packed into one word for an atomic update: first << 16 | last; `NOWHERE`
/// for a decoder that decodes no ports now.
const NOWHERE: u32 = u32::MAX;

fn pack(r: &RangeInclusive<u16>) -> u32 {
    (u32::from(*r.start()) << 16) | u32::from(*r.end())
}

fn unpack(v: u32) -> Option<RangeInclusive<u16>> {
    (v != NOWHERE).then_some((v >> 16) as u16..=v as u16)
}

pub struct PortTable {
    /// First match wins: Vigil's entries come before the user's.
    rules: Vec<PortRule>,
    /// Where each rule is now: its `ports` at first; a decoder Vigil follows moves its rule
    /// ([`Self::relocate`]).
    current: Vec<AtomicU32>,
    /// For each port, 1 + the index of its rule (0: none), so the I/O exit finds a port's rule
    /// in one load (128 KiB, built once, updated when a followed decoder moves).
    index: Vec<AtomicU16>,
}

impl core::fmt::Debug for PortTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PortTable")
            .field("rules", &self.rules)
            .finish()
    }
}

impl PortTable {
    /// The table of `rules`, first match winning.
    pub fn new(rules: Vec<PortRule>) -> PortTable {
        let mut rules = rules;
        // Beyond 65535 rules every port has one already: the rest could never match.
        rules.truncate(u16::MAX as usize);
        let current = rules
            .iter()
            .map(|r| AtomicU32::new(pack(&r.ports)))
            .collect();
        let index = (0..=u16::MAX).map(|_| AtomicU16::new(0)).collect();
        let t = PortTable {
            rules,
            current,
            index,
        };
        for (i, r) in t.rules.iter().enumerate().rev() {
            for port in r.ports.clone() {
                t.index[port as usize].store(i as u16 + 1, Ordering::Relaxed);
            }
        }
        t
    }

    /// 1 + the index of the first rule whose current range holds `port`, or 0.
    fn first_rule(&self, port: u16) -> u16 {
        self.current
            .iter()
            .position(|c| unpack(c.load(Ordering::Relaxed)).is_some_and(|r| r.contains(&port)))
            .map_or(0, |i| i as u16 + 1)
    }

    pub fn rules(&self) -> &[PortRule] {
        &self.rules
    }

    /// The rule for one port, if the port exits.
    #[inline]
    pub fn rule(&self, port: u16) -> Option<&PortRule> {
        match self.rule_number(port) {
            0 => None,
            n => self.rules.get(n as usize - 1),
        }
    }

    /// 1 + the index of the port's rule, or 0: equal numbers mean the same rule.
    #[inline]
    pub fn rule_number(&self, port: u16) -> u16 {
        self.index
            .get(port as usize)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Whether an access to `port` exits.
    pub fn exits(&self, port: u16) -> bool {
        self.rule_number(port) != 0
    }

    /// Every port that must exit, for the backend's I/O bitmap. (An access exits when any byte
    /// it touches exits; the handler then serves each byte by its own rule.)
    pub fn trapped(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|&p| self.exits(p))
    }

    /// The index of the rule with `handler`.
    pub fn find(&self, handler: PortHandler) -> Option<usize> {
        self.rules.iter().position(|r| r.handler == handler)
    }

    /// Where rule `rule` is now.
    pub fn current(&self, rule: usize) -> Option<RangeInclusive<u16>> {
        unpack(self.current.get(rule)?.load(Ordering::Relaxed))
    }

    /// Moves rule `rule` (a decoder Vigil follows) to `to`, or nowhere; returns the port ranges
    /// whose rule changed (where it was, where it is), for the backend's bitmaps.
    pub fn relocate(
        &self,
        rule: usize,
        to: Option<RangeInclusive<u16>>,
    ) -> [Option<RangeInclusive<u16>>; 2] {
        let Some(slot) = self.current.get(rule) else {
            return [None, None];
        };
        let from = unpack(slot.swap(to.as_ref().map_or(NOWHERE, pack), Ordering::Relaxed));
        for range in [&from, &to].into_iter().flatten() {
            for port in range.clone() {
                self.index[port as usize].store(self.first_rule(port), Ordering::Relaxed);
            }
        }
        [from, to]
    }
}

impl Clone for PortTable {
    fn clone(&self) -> PortTable {
        let t = PortTable::new(self.rules.clone());
        for (i, c) in self.current.iter().enumerate() {
            t.relocate(i, unpack(c.load(Ordering::Relaxed)));
        }
        t
    }
}

impl PartialEq for PortTable {
    fn eq(&self, other: &PortTable) -> bool {
        self.rules == other.rules
            && (0..=u16::MAX).all(|p| self.rule_number(p) == other.rule_number(p))
    }
}

impl Eq for PortTable {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsrTable {
    /// First match wins: Vigil's entries come before the user's.
    pub rules: Vec<MsrRule>,
    pub pass_through: Vec<PassThrough>,
    pub default: MsrDefault,
}

impl MsrTable {
    fn rule(&self, msr: u32, write: bool) -> Option<MsrHandler> {
        self.rules
            .iter()
            .filter(|r| r.msrs.contains(&msr))
            .map(|r| if write { r.write } else { r.read })
            .find(Option::is_some)
            .flatten()
    }

    /// Whether the guest's RDMSR (`write` false) or WRMSR of `msr` must exit, for the backend's
    /// MSR bitmap.
    pub fn exits(&self, msr: u32, write: bool) -> bool {
        if self.rule(msr, write).is_some() {
            return true;
        }
        if self.pass_through.iter().any(|p| p.msrs.contains(&msr)) {
            return false;
        }
        matches!(self.default, MsrDefault::Exit(_))
    }

    /// The handler of an access that exited.
    pub fn handler(&self, msr: u32, write: bool) -> MsrHandler {
        if let Some(h) = self.rule(msr, write) {
            return h;
        }
        match self.default {
            MsrDefault::Exit(h) if !self.pass_through.iter().any(|p| p.msrs.contains(&msr)) => h,
            _ => natural_handler(msr),
        }
    }
}

/// How an MSR is served when nothing but its nature decides: state the processor switches is
/// the vCPU's, anything else the host's.
pub fn natural_handler(msr: u32) -> MsrHandler {
    if m::is_switched(msr) {
        MsrHandler::Vcpu
    } else {
        MsrHandler::Forward
    }
}

pub const IA32_TSC: u32 = 0x10;
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
pub const IA32_TSC_ADJUST: u32 = 0x3B;
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
/// The emulator's shutdown port (Bochs and QEMU's debug exit).
pub const SHUTDOWN_PORT: u16 = 0x8900;
/// Vigil's console.
pub const COM2_PORTS: RangeInclusive<u16> = 0x2F8..=0x2FF;

/// Vigil's ports and MSRs, and the ones the user traps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owners {
    pub ports: PortTable,
    pub msrs: MsrTable,
}

impl Owners {
    /// The table for this run: Vigil's own entries (`platform`: the ports of the platform
    /// devices it owns, `crate::platform::Platform::port_rules`), the backend's virtualization
    /// MSRs (`virtualization`, which the guest must not see), then what `config` traps.
    pub fn build(config: &Config, platform: &[PortRule], virtualization: &[MsrRule]) -> Owners {
        let mut ports = alloc::vec![
            PortRule {
                ports: COM2_PORTS,
                owner: Owner::Vigil,
                handler: PortHandler::Absent,
                why: "Vigil's console (COM2): to the guest no device is there",
            },
            PortRule {
                ports: SHUTDOWN_PORT..=SHUTDOWN_PORT,
                owner: Owner::Vigil,
                handler: PortHandler::Shutdown,
                why: "the emulator's shutdown port: the guest's power-off ends the run with Vigil's statistics",
            },
        ];
        ports.extend(platform.iter().cloned());
        for range in &config.trap.io {
            ports.push(PortRule {
                ports: range.clone(),
                owner: Owner::User,
                handler: PortHandler::Forward,
                why: "trap=io: executed for the guest (and logged with log-exits)",
            });
        }

        let mut rules: Vec<MsrRule> = virtualization.to_vec();
        if config.tsc.virtualized() {
            rules.push(MsrRule {
                msrs: IA32_TSC..=IA32_TSC,
                owner: Owner::Vigil,
                read: Some(MsrHandler::Time),
                write: Some(MsrHandler::Time),
                why: "virtual time: the guest's TSC, never the host's",
            });
            for msr in [IA32_TSC_ADJUST, IA32_TSC_DEADLINE] {
                rules.push(MsrRule {
                    msrs: msr..=msr,
                    owner: Owner::Vigil,
                    read: Some(MsrHandler::Time),
                    write: Some(MsrHandler::Time),
                    why: "virtual time: TSC_ADJUST and the deadline follow the guest's TSC",
                });
            }
        }
        for &msr in &config.trap.msr_read {
            rules.push(MsrRule {
                msrs: msr..=msr,
                owner: Owner::User,
                read: Some(natural_handler(msr)),
                write: None,
                why: "trap=msr: read for the guest (and logged with log-exits)",
            });
        }
        for &msr in &config.trap.msr_write {
            rules.push(MsrRule {
                msrs: msr..=msr,
                owner: Owner::User,
                read: None,
                write: Some(natural_handler(msr)),
                why: "trap=msr: written for the guest, values checked (and logged with log-exits)",
            });
        }
        // Vigil's platform MSRs come after time (whose rules are Vigil's too) and before the
        // user's.
        let user = rules.len() - config.trap.msr_read.len() - config.trap.msr_write.len();
        for (i, r) in platform_msr_rules().into_iter().enumerate() {
            rules.insert(user + i, r);
        }
        Owners {
            ports: PortTable::new(ports),
            msrs: MsrTable {
                rules,
                pass_through: pass_through(config),
                default: MsrDefault::Exit(MsrHandler::Default),
            },
        }
    }
}

/// IA32_APIC_BASE.
pub const IA32_APIC_BASE: u32 = 0x1B;
/// The x2APIC registers (SDM Vol. 3A 12.12.1.2) and the interrupt command register among them.
pub const X2APIC: RangeInclusive<u32> = 0x800..=0x8FF;
pub const X2APIC_ICR: u32 = 0x830;
pub const IA32_MISC_ENABLE: u32 = 0x1A0;
pub const IA32_MTRRCAP: u32 = 0xFE;
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2FF;
pub const IA32_DS_AREA: u32 = 0x600;
pub const IA32_RTIT_OUTPUT_BASE: u32 = 0x560;
pub const IA32_RTIT_OUTPUT_MASK_PTRS: u32 = 0x561;
pub const IA32_RTIT_CTL: u32 = 0x570;

/// Whether `msr` is one of the MTRRs (SDM Vol. 3A 12.11.2): the capability, default type,
/// fixed-range and variable-range registers (up to 32 pairs; the capability says how many).
pub fn is_mtrr(msr: u32) -> bool {
    matches!(msr, IA32_MTRRCAP | IA32_MTRR_DEF_TYPE | 0x250 | 0x258 | 0x259 | 0x268..=0x26F | 0x200..=0x23F)
}

/// The MSRs Vigil owns beyond VMX and time: what reaches physical memory, the APIC's place and
/// IPIs, host state Vigil relies on, SMM and microcode.
fn platform_msr_rules() -> Vec<MsrRule> {
    let rule = |msrs: RangeInclusive<u32>, read, write, why| MsrRule {
        msrs,
        owner: Owner::Vigil,
        read,
        write,
        why,
    };
    use MsrHandler::*;
    let mut rules = alloc::vec![
        rule(
            IA32_APIC_BASE..=IA32_APIC_BASE,
            Some(ApicBase),
            Some(ApicBase),
            "the APIC page hides whatever it covers: only over guest RAM or at its default"
        ),
        rule(
            X2APIC_ICR..=X2APIC_ICR,
            None,
            Some(X2apicIcr),
            "x2APIC IPIs: an SMI IPI would take the processor out of VMX"
        ),
        rule(
            IA32_MISC_ENABLE..=IA32_MISC_ENABLE,
            None,
            Some(MiscEnable),
            "XD disable would break Vigil's page tables (NX)"
        ),
    ];
    for mtrrs in [
        IA32_MTRRCAP..=IA32_MTRRCAP,
        0x200..=0x23F,
        0x250..=0x250,
        0x258..=0x259,
        0x268..=0x26F,
        IA32_MTRR_DEF_TYPE..=IA32_MTRR_DEF_TYPE,
    ] {
        rules.push(rule(
            mtrrs,
            Some(Mtrr),
            Some(Mtrr),
            "the MTRRs are the host's: the guest keeps its own copy",
        ));
    }
    rules.extend([
        rule(
            0x1F2..=0x1F3,
            Some(Absent),
            Some(Absent),
            "SMRR: SMM's, accessible only in SMM",
        ),
        rule(
            0x79..=0x79,
            None,
            Some(Absent),
            "BIOS_UPDT_TRIG: loading microcode is the firmware's",
        ),
        rule(
            0x9B..=0x9B,
            Some(Absent),
            Some(Absent),
            "SMM_MONITOR_CTL: the SMM transfer monitor is the firmware's",
        ),
        rule(
            0x3F1..=0x3F1,
            Some(Absent),
            Some(Absent),
            "PEBS would write records through DS_AREA while Vigil runs",
        ),
        rule(
            IA32_DS_AREA..=IA32_DS_AREA,
            None,
            Some(Address),
            "DS_AREA: where BTS and PEBS records go, never Vigil's memory",
        ),
        rule(
            IA32_RTIT_OUTPUT_BASE..=IA32_RTIT_OUTPUT_MASK_PTRS,
            None,
            Some(Address),
            "Intel PT output: physical, only guest RAM",
        ),
        rule(
            IA32_RTIT_CTL..=IA32_RTIT_CTL,
            None,
            Some(Address),
            "Intel PT control: no table of output regions (ToPA), which Vigil could not check",
        ),
    ]);
    rules
}

/// The MSRs the guest reads and writes without an exit, each with the reason that is harmless
/// (the discipline of KVM's `vmx_possible_passthrough_msrs`). A rule above wins over an entry
/// here (time in a virtual mode, the user's traps).
fn pass_through(config: &Config) -> Vec<PassThrough> {
    let p = |msrs: RangeInclusive<u32>, why| PassThrough { msrs, why };
    let mut list = alloc::vec![
        p(
            0x48..=0x49,
            "speculation control and the prediction barrier: they affect only speculation"
        ),
        p(0x10B..=0x10B, "L1D flush command: flushes a cache"),
        p(
            0x8B..=0x8B,
            "the microcode revision, written with 0 to be read back"
        ),
        p(0xE7..=0xE8, "MPERF and APERF: counters"),
        p(
            0x4E..=0x4E,
            "PPIN control: whether the inventory number reads"
        ),
        p(
            0x140..=0x140,
            "CPUID faulting: CPUID exits to Vigil anyway, which runs at CPL 0"
        ),
        p(
            0x19B..=0x19B,
            "thermal interrupt control: interrupts through the guest's APIC"
        ),
        p(0x1B0..=0x1B0, "energy/performance bias: a power hint"),
        p(
            0x1B2..=0x1B2,
            "package thermal interrupt control: as the core's"
        ),
        p(
            0x174..=0x176,
            "SYSENTER: switched by the processor at every entry and exit"
        ),
        p(
            0x1D9..=0x1D9,
            "DEBUGCTL: switched by the processor, cleared on every exit"
        ),
        p(0x277..=0x277, "PAT: switched by the processor"),
        p(
            0xC1..=0xC8,
            "performance counters: they count, and interrupt through the guest's APIC"
        ),
        p(
            0x186..=0x18D,
            "performance event selectors: as the counters"
        ),
        p(0x309..=0x30B, "fixed-function performance counters"),
        p(0x38D..=0x390, "performance counter control and status"),
        p(0x4C1..=0x4C8, "full-width performance counters"),
        p(
            0x179..=0x17B,
            "machine-check capability, status and control: the guest handles machine checks"
        ),
        p(0x400..=0x47F, "machine-check banks"),
        p(
            0x6A0..=0x6A8,
            "CET: Vigil runs with CR4.CET clear, where these do nothing"
        ),
        p(0x6E1..=0x6E1, "PKRS: Vigil runs with CR4.PKS clear"),
        p(
            0xDA0..=0xDA0,
            "XSS: Vigil uses no supervisor state components"
        ),
        p(
            X2APIC,
            "the x2APIC registers: the guest owns its local APIC (ICR writes excepted)"
        ),
        p(0xC000_0080..=0xC000_0080, "EFER: switched by the processor"),
        p(
            0xC000_0081..=0xC000_0084,
            "the SYSCALL MSRs: Vigil never executes SYSCALL"
        ),
        p(
            0xC000_0100..=0xC000_0101,
            "FS and GS base: switched by the processor"
        ),
        p(
            0xC000_0102..=0xC000_0102,
            "KERNEL_GS_BASE: Vigil never executes SWAPGS"
        ),
        p(
            0xC000_0103..=0xC000_0103,
            "TSC_AUX: Vigil never executes RDTSCP or RDPID"
        ),
    ];
    if !config.tsc.virtualized() {
        list.push(p(
            IA32_TSC..=IA32_TSC,
            "native time: the guest's TSC is the host's",
        ));
        list.push(p(
            IA32_TSC_ADJUST..=IA32_TSC_ADJUST,
            "native time: as the TSC",
        ));
        list.push(p(
            IA32_TSC_DEADLINE..=IA32_TSC_DEADLINE,
            "native time: the guest owns its APIC timer",
        ));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmx_rules() -> [MsrRule; 2] {
        [
            MsrRule {
                msrs: IA32_FEATURE_CONTROL..=IA32_FEATURE_CONTROL,
                owner: Owner::Vigil,
                read: Some(MsrHandler::FeatureControl),
                write: Some(MsrHandler::FeatureControl),
                why: "VMX",
            },
            MsrRule {
                msrs: 0x480..=0x493,
                owner: Owner::Vigil,
                read: Some(MsrHandler::Absent),
                write: Some(MsrHandler::Absent),
                why: "VMX",
            },
        ]
    }

    /// A platform rule as `crate::platform` makes them.
    fn pm1a(base: u16) -> PortRule {
        PortRule {
            ports: base..=base + 1,
            owner: Owner::Vigil,
            handler: PortHandler::Platform(crate::platform::Device::Pm1Control(false)),
            why: "PM1a",
        }
    }

    #[test]
    fn vigil_wins_over_the_users_trap() {
        let c = Config::parse("trap=io:0x2f0-0x2ff,msr:0x3a,msr:0xc0000080,msr:0x1b").unwrap();
        let o = Owners::build(&c, &[pm1a(0xB004)], &vmx_rules());
        assert_eq!(o.ports.rule(0x2F8).unwrap().owner, Owner::Vigil);
        assert_eq!(o.ports.rule(0x2F7).unwrap().handler, PortHandler::Forward);
        assert_eq!(
            o.ports.rule(0xB005).unwrap().handler,
            PortHandler::Platform(crate::platform::Device::Pm1Control(false))
        );
        assert!(o.ports.rule(0x3F8).is_none());
        assert_eq!(o.msrs.handler(0x3A, true), MsrHandler::FeatureControl);
        assert_eq!(o.msrs.handler(IA32_APIC_BASE, true), MsrHandler::ApicBase);
        // The user's trap of a pass-through MSR makes it exit, served by its nature.
        assert_eq!(o.msrs.handler(0xC000_0080, true), MsrHandler::Vcpu);
        assert!(o.msrs.exits(0xC000_0080, false) && o.msrs.exits(0x485, true));
        assert!(!o.msrs.exits(0x277, false), "PAT passes through");
    }

    #[test]
    fn time_msrs_are_vigils_only_when_time_is_virtual() {
        let native = Owners::build(&Config::parse("trap=msr:0x10").unwrap(), &[], &[]);
        assert_eq!(native.msrs.handler(IA32_TSC, true), MsrHandler::Forward);
        assert!(!native.msrs.exits(IA32_TSC_ADJUST, true));
        assert!(
            !native.msrs.exits(IA32_TSC_DEADLINE, true),
            "the guest's APIC timer"
        );
        let virt = Owners::build(&Config::parse("tsc=offset:5").unwrap(), &[], &[]);
        assert_eq!(virt.msrs.handler(IA32_TSC, true), MsrHandler::Time);
        assert!(virt.msrs.exits(IA32_TSC_DEADLINE, false));
    }

    #[test]
    fn msrs_are_denied_by_default_with_a_reasoned_pass_through_list() {
        let o = Owners::build(&Config::default(), &[], &vmx_rules());
        // An MSR no entry names exits: read on the host, written nowhere.
        assert!(o.msrs.exits(0x1234, false) && o.msrs.exits(0x1234, true));
        assert_eq!(o.msrs.handler(0x1234, true), MsrHandler::Default);
        assert_eq!(o.msrs.handler(0x4000_0000, false), MsrHandler::Default);
        // The pass-through list: no exit, and every entry says why.
        for msr in [0x277, 0xC000_0100, 0xC000_0102, 0x80B, 0x6E0, 0x174] {
            assert!(
                !o.msrs.exits(msr, true) && !o.msrs.exits(msr, false),
                "{msr:#x}"
            );
        }
        assert!(o.msrs.pass_through.iter().all(|p| p.why.len() > 10));
        // The platform's MSRs.
        assert!(o.msrs.exits(X2APIC_ICR, true) && !o.msrs.exits(X2APIC_ICR, false));
        assert_eq!(o.msrs.handler(X2APIC_ICR, true), MsrHandler::X2apicIcr);
        assert_eq!(o.msrs.handler(0x201, true), MsrHandler::Mtrr);
        assert_eq!(o.msrs.handler(0x2FF, false), MsrHandler::Mtrr);
        assert_eq!(o.msrs.handler(0x1F2, true), MsrHandler::Absent);
        assert_eq!(o.msrs.handler(IA32_DS_AREA, true), MsrHandler::Address);
        assert_eq!(o.msrs.handler(IA32_DS_AREA, false), MsrHandler::Default);
        assert_eq!(
            o.msrs.handler(IA32_MISC_ENABLE, true),
            MsrHandler::MiscEnable
        );
        assert_eq!(o.msrs.handler(0x3A, false), MsrHandler::FeatureControl);
    }

    #[test]
    fn every_trapped_port_has_a_rule() {
        let c = Config::parse("trap=io:0x80,io:0x3f8-0x3ff").unwrap();
        let o = Owners::build(&c, &[pm1a(0x604)], &[]);
        let trapped: Vec<u16> = o.ports.trapped().collect();
        assert!(trapped.contains(&0x2F8) && trapped.contains(&0x8900) && trapped.contains(&0x605));
        assert!(trapped.iter().all(|&p| o.ports.rule(p).is_some()));
        assert_eq!(trapped.len(), 8 + 1 + 2 + 1 + 8);
    }

    #[test]
    fn a_followed_decoder_moves_its_rule_and_uncovers_what_was_below() {
        // The user traps 0x600-0x607; Vigil's PM1a rule sits over 0x604 first.
        let c = Config::parse("trap=io:0x600-0x607").unwrap();
        let o = Owners::build(&c, &[pm1a(0x604)], &[]);
        let rule = o
            .ports
            .find(PortHandler::Platform(crate::platform::Device::Pm1Control(
                false,
            )))
            .unwrap();
        assert_eq!(o.ports.rule(0x604).unwrap().owner, Owner::Vigil);
        let changed = o.ports.relocate(rule, Some(0x6004..=0x6005));
        assert_eq!(changed, [Some(0x604..=0x605), Some(0x6004..=0x6005)]);
        assert_eq!(
            o.ports.rule(0x604).unwrap().owner,
            Owner::User,
            "the user's trap again"
        );
        assert_eq!(o.ports.rule(0x6005).unwrap().owner, Owner::Vigil);
        assert_eq!(o.ports.current(rule), Some(0x6004..=0x6005));
        o.ports.relocate(rule, None);
        assert!(!o.ports.exits(0x6004));
        assert_eq!(o.ports.current(rule), None);
    }
}
