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
    /// The ACPI PM1a control register at `base` (16 bits): a write with SLP_EN (bit 13, ACPI 6.5
    /// 4.8.3.2.1) ends the run; anything else goes to the device.
    SleepControl { base: u16 },
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

#[derive(Clone, PartialEq, Eq)]
pub struct PortTable {
    /// First match wins: Vigil's entries come before the user's.
    rules: Vec<PortRule>,
    /// For each port, 1 + the index of its rule (0: none), so the I/O exit finds a port's rule
    /// in one load (128 KiB, built once).
    index: Vec<u16>,
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
        let mut index = alloc::vec![0u16; 1 << 16];
        for (i, r) in rules.iter().enumerate().rev() {
            for port in r.ports.clone() {
                index[port as usize] = i as u16 + 1;
            }
        }
        PortTable { rules, index }
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
        self.index.get(port as usize).copied().unwrap_or(0)
    }

    /// Every port that must exit, for the backend's I/O bitmap. (An access exits when any byte
    /// it touches exits; the handler then serves each byte by its own rule.)
    pub fn trapped(&self) -> impl Iterator<Item = u16> + '_ {
        self.rules.iter().flat_map(|r| r.ports.clone())
    }
}

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
pub const IA32_MPERF: u32 = 0xE7;
pub const IA32_APERF: u32 = 0xE8;
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
    /// The table for this run: Vigil's own entries, the backend's virtualization MSRs
    /// (`virtualization`, which the guest must not see), then what `config` traps.
    pub fn build(config: &Config, pm1a_control: Option<u16>, virtualization: &[MsrRule]) -> Owners {
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
        if let Some(base) = pm1a_control {
            ports.push(PortRule {
                ports: base..=base.saturating_add(1),
                owner: Owner::Vigil,
                handler: PortHandler::SleepControl { base },
                why: "ACPI PM1a control (from the FADT): the guest's sleep or power-off request ends the run",
            });
        }
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
        if config.tsc.hides_exits() {
            rules.push(MsrRule {
                msrs: IA32_MPERF..=IA32_APERF,
                owner: Owner::Vigil,
                read: Some(MsrHandler::Time),
                write: Some(MsrHandler::Time),
                why: "hidden time: MPERF and APERF lose what the TSC loses",
            });
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
        Owners {
            ports: PortTable::new(ports),
            msrs: MsrTable {
                rules,
                pass_through: Vec::new(),
                default: MsrDefault::PassThrough,
            },
        }
    }
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

    #[test]
    fn vigil_wins_over_the_users_trap() {
        let c = Config::parse("trap=io:0x2f0-0x2ff,msr:0x3a,msr:0xc0000080").unwrap();
        let o = Owners::build(&c, Some(0xB004), &vmx_rules());
        assert_eq!(o.ports.rule(0x2F8).unwrap().owner, Owner::Vigil);
        assert_eq!(o.ports.rule(0x2F7).unwrap().handler, PortHandler::Forward);
        assert_eq!(
            o.ports.rule(0xB005).unwrap().handler,
            PortHandler::SleepControl { base: 0xB004 }
        );
        assert!(o.ports.rule(0x3F8).is_none());
        assert_eq!(o.msrs.handler(0x3A, true), MsrHandler::FeatureControl);
        assert_eq!(o.msrs.handler(0xC000_0080, true), MsrHandler::Vcpu);
        assert!(o.msrs.exits(0xC000_0080, false) && o.msrs.exits(0x485, true));
        assert!(!o.msrs.exits(0x277, false), "PAT passes through");
    }

    #[test]
    fn time_msrs_are_vigils_only_when_time_is_virtual() {
        let native = Owners::build(&Config::parse("trap=msr:0x10").unwrap(), None, &[]);
        assert_eq!(native.msrs.handler(IA32_TSC, true), MsrHandler::Forward);
        assert!(!native.msrs.exits(IA32_TSC_ADJUST, true));
        let virt = Owners::build(&Config::parse("tsc=offset:5").unwrap(), None, &[]);
        assert_eq!(virt.msrs.handler(IA32_TSC, true), MsrHandler::Time);
        assert!(virt.msrs.exits(IA32_TSC_DEADLINE, false));
    }

    #[test]
    fn deny_by_default_is_a_change_of_data() {
        let mut o = Owners::build(&Config::default(), None, &vmx_rules());
        o.msrs.default = MsrDefault::Exit(MsrHandler::Absent);
        o.msrs.pass_through.push(PassThrough {
            msrs: 0x277..=0x277,
            why: "PAT is switched by the processor",
        });
        assert!(o.msrs.exits(0x1234, false));
        assert_eq!(o.msrs.handler(0x1234, false), MsrHandler::Absent);
        assert!(!o.msrs.exits(0x277, true));
        assert_eq!(o.msrs.handler(0x3A, false), MsrHandler::FeatureControl);
    }

    #[test]
    fn every_trapped_port_has_a_rule() {
        let c = Config::parse("trap=io:0x80,io:0x3f8-0x3ff").unwrap();
        let o = Owners::build(&c, Some(0x604), &[]);
        let trapped: Vec<u16> = o.ports.trapped().collect();
        assert!(trapped.contains(&0x2F8) && trapped.contains(&0x8900) && trapped.contains(&0x605));
        assert!(trapped.iter().all(|&p| o.ports.rule(p).is_some()));
        assert_eq!(trapped.len(), 8 + 1 + 2 + 1 + 8);
    }
}
