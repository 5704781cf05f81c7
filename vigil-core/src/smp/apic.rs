//! Interprocessor interrupts as the local APIC sends them: the interrupt command register (ICR)
//! decoded, and which processors a command reaches (SDM Vol. 3A 11.6.1, "Interrupt Command
//! Register"; 11.6.2, "Determining IPI Destination"; 11.12.9 for the x2APIC ICR and logical
//! destinations).
//!
//! A backend whose processor delivers INIT and start-up IPIs itself (VMX: INIT and SIPI VM
//! exits) never needs this. A backend that must catch the guest's INIT and SIPI before the
//! hardware sees them (SVM cannot intercept a start-up IPI: APM Vol. 2 15.13.3) traps writes to
//! the ICR — the xAPIC page's 0x300/0x310 or the x2APIC MSR 0x830 — and uses this to decide
//! which vCPUs an INIT or SIPI is for; the start-up state machine (`super::startup`) then
//! decides what it does to each.

/// The delivery mode, ICR bits 10:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    StartUp,
    /// 011b and 111b: reserved.
    Reserved(u8),
}

/// The destination shorthand, ICR bits 19:18.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// The destination field says.
    None,
    SelfOnly,
    AllIncludingSelf,
    AllExcludingSelf,
}

/// One interrupt command, as written to the ICR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icr {
    pub vector: u8,
    pub mode: DeliveryMode,
    /// Destination mode, bit 11: logical (else physical).
    pub logical: bool,
    /// Level, bit 14: assert (1) or de-assert (0).
    pub assert: bool,
    /// Trigger mode, bit 15: level (else edge).
    pub level_triggered: bool,
    pub shorthand: Shorthand,
    /// The destination: the xAPIC's 8 bits (ICR bits 63:56), or the x2APIC's 32 (63:32).
    pub destination: u32,
    /// Written through the x2APIC interface (32-bit destinations and IDs).
    pub x2apic: bool,
}

impl Icr {
    fn decode(low: u32, destination: u32, x2apic: bool) -> Icr {
        let mode = match (low >> 8) & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            r => DeliveryMode::Reserved(r as u8),
        };
        let shorthand = match (low >> 18) & 3 {
            0 => Shorthand::None,
            1 => Shorthand::SelfOnly,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        };
        Icr {
            vector: low as u8,
            mode,
            logical: low & (1 << 11) != 0,
            assert: low & (1 << 14) != 0,
            level_triggered: low & (1 << 15) != 0,
            shorthand,
            destination,
            x2apic,
        }
    }

    /// The xAPIC ICR: the write of its low half at offset 0x300 sends the command, with the
    /// destination from the high half at 0x310 (bits 31:24).
    pub fn from_xapic(low: u32, high: u32) -> Icr {
        Icr::decode(low, high >> 24, false)
    }

    /// The x2APIC ICR, MSR 0x830, written whole: destination in bits 63:32.
    pub fn from_x2apic(value: u64) -> Icr {
        Icr::decode(value as u32, (value >> 32) as u32, true)
    }

    /// INIT level de-assert (INIT, level 0, level-triggered): on Pentium 4 and later processors
    /// it only resynchronizes arbitration IDs and reaches no processor's INIT line (SDM Vol. 3A
    /// 11.6.1, "INIT Level De-assert"). Linux still sends it after every INIT.
    pub fn is_init_deassert(&self) -> bool {
        self.mode == DeliveryMode::Init && !self.assert && self.level_triggered
    }

    /// The broadcast destination of this interface (all ones).
    fn broadcast(&self) -> u32 {
        if self.x2apic {
            u32::MAX
        } else {
            0xFF
        }
    }
}

/// How the guest addressed one local APIC: what destination matching compares with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApicAddress {
    /// The APIC ID (xAPIC: bits 31:24 of the ID register; x2APIC: the 32-bit x2APIC ID).
    pub id: u32,
    /// The logical destination register (xAPIC: bits 31:24 hold the logical ID; x2APIC: the
    /// whole register, cluster in 31:16 and a bit in 15:0).
    pub ldr: u32,
    /// The xAPIC destination format register's model, bits 31:28: 1111b flat, 0000b cluster.
    pub flat: bool,
}

/// The processors (by index into `apics`) an ICR write by processor `sender` reaches, as a bit
/// set (bit i = `apics[i]`). `apics` holds every processor of the machine, enabled or not; the
/// caller filters. Lowest-priority delivery picks one of the matches in hardware; this returns
/// every match, which is what INIT and SIPI (never lowest-priority) need.
pub fn destinations(icr: &Icr, sender: usize, apics: &[ApicAddress]) -> u64 {
    let n = apics.len().min(64);
    let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    let me = if sender < n { 1u64 << sender } else { 0 };
    if icr.is_init_deassert() {
        return 0;
    }
    match icr.shorthand {
        Shorthand::SelfOnly => return me,
        Shorthand::AllIncludingSelf => return all,
        Shorthand::AllExcludingSelf => return all & !me,
        Shorthand::None => {}
    }
    let dest = icr.destination;
    if dest == icr.broadcast() {
        return all;
    }
    let mut set = 0u64;
    for (i, a) in apics.iter().take(n).enumerate() {
        let hit = if !icr.logical {
            a.id == dest
        } else if icr.x2apic {
            // Logical x2APIC: cluster ID in bits 31:16, one bit per processor in 15:0 (SDM Vol.
            // 3A 11.12.10.2).
            dest >> 16 == a.ldr >> 16 && dest & a.ldr & 0xFFFF != 0
        } else {
            let logical_id = a.ldr >> 24;
            let dest = dest & 0xFF;
            if a.flat {
                dest & logical_id != 0
            } else {
                // Cluster model: cluster in bits 7:4, a bit per processor in 3:0.
                dest >> 4 == logical_id >> 4 && dest & logical_id & 0xF != 0
            }
        };
        if hit {
            set |= 1 << i;
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four processors with APIC IDs 0-3, flat logical IDs 1, 2, 4, 8 (as Linux programs them).
    fn four_flat() -> [ApicAddress; 4] {
        core::array::from_fn(|i| ApicAddress {
            id: i as u32,
            ldr: 1 << (24 + i),
            flat: true,
        })
    }

    #[test]
    fn linux_init_sipi_sequence_decodes() {
        // wakeup_secondary_cpu_via_init: INIT assert (level), INIT de-assert, SIPI vector 0x9a.
        let init = Icr::from_xapic(0x0000_C500, 2 << 24);
        assert_eq!(init.mode, DeliveryMode::Init);
        assert!(init.assert && init.level_triggered && !init.is_init_deassert());
        assert_eq!(destinations(&init, 0, &four_flat()), 0b0100);
        let deassert = Icr::from_xapic(0x0000_8500, 2 << 24);
        assert!(deassert.is_init_deassert());
        assert_eq!(
            destinations(&deassert, 0, &four_flat()),
            0,
            "reaches no one"
        );
        let sipi = Icr::from_xapic(0x0000_069A, 2 << 24);
        assert_eq!(sipi.mode, DeliveryMode::StartUp);
        assert_eq!(sipi.vector, 0x9A);
        assert_eq!(destinations(&sipi, 0, &four_flat()), 0b0100);
    }

    #[test]
    fn shorthands() {
        let apics = four_flat();
        let icr = |sh: u32| Icr::from_xapic(0x0000_4500 | sh << 18, 0);
        assert_eq!(destinations(&icr(1), 2, &apics), 0b0100, "self");
        assert_eq!(
            destinations(&icr(2), 2, &apics),
            0b1111,
            "all including self"
        );
        assert_eq!(
            destinations(&icr(3), 0, &apics),
            0b1110,
            "all excluding self"
        );
        // The shorthand wins over the destination field.
        let sipi = Icr::from_xapic(0x000C_0610, 1 << 24);
        assert_eq!(sipi.shorthand, Shorthand::AllExcludingSelf);
        assert_eq!(destinations(&sipi, 1, &apics), 0b1101);
    }

    #[test]
    fn physical_destinations_and_broadcast() {
        let apics = four_flat();
        let to = |id: u32| destinations(&Icr::from_xapic(0x4500, id << 24), 0, &apics);
        assert_eq!(to(3), 0b1000);
        assert_eq!(to(7), 0, "no such APIC");
        assert_eq!(to(0xFF), 0b1111, "broadcast");
        let x2 = Icr::from_x2apic((3u64 << 32) | 0x4500);
        assert!(x2.x2apic && !x2.logical);
        assert_eq!(destinations(&x2, 0, &apics), 0b1000);
        let x2_all = Icr::from_x2apic((0xFFFF_FFFFu64 << 32) | 0x4500);
        assert_eq!(destinations(&x2_all, 0, &apics), 0b1111);
        // 0xFF is an ordinary x2APIC ID, not a broadcast.
        let x2_ff = Icr::from_x2apic((0xFFu64 << 32) | 0x4500);
        assert_eq!(destinations(&x2_ff, 0, &apics), 0);
    }

    #[test]
    fn logical_flat_and_cluster() {
        let apics = four_flat();
        let logical = |dest: u32| destinations(&Icr::from_xapic(0x0CFA, dest << 24), 0, &apics);
        assert_eq!(logical(0b0110), 0b0110, "flat: a bit per processor");
        assert_eq!(logical(0), 0);
        // Cluster model: clusters 1 and 2, two processors each.
        let cluster = [
            ApicAddress {
                id: 0,
                ldr: 0x11 << 24,
                flat: false,
            },
            ApicAddress {
                id: 1,
                ldr: 0x12 << 24,
                flat: false,
            },
            ApicAddress {
                id: 2,
                ldr: 0x21 << 24,
                flat: false,
            },
            ApicAddress {
                id: 3,
                ldr: 0x22 << 24,
                flat: false,
            },
        ];
        let to =
            |dest: u32| destinations(&Icr::from_xapic(0x0800 | 0x500, dest << 24), 0, &cluster);
        assert_eq!(to(0x13), 0b0011, "cluster 1, both");
        assert_eq!(to(0x22), 0b1000, "cluster 2, second");
        assert_eq!(to(0x32), 0, "no cluster 3");
        // x2APIC logical: cluster in 31:16.
        let x2 = [
            ApicAddress {
                id: 0,
                ldr: 0x0000_0001,
                flat: false,
            },
            ApicAddress {
                id: 1,
                ldr: 0x0000_0002,
                flat: false,
            },
            ApicAddress {
                id: 16,
                ldr: 0x0001_0001,
                flat: false,
            },
        ];
        let x2to = |dest: u64| destinations(&Icr::from_x2apic(dest << 32 | 0x0800 | 0x500), 0, &x2);
        assert_eq!(x2to(0x0000_0003), 0b011);
        assert_eq!(x2to(0x0001_0001), 0b100);
    }

    #[test]
    fn other_delivery_modes_decode() {
        assert_eq!(Icr::from_xapic(0x0400, 0).mode, DeliveryMode::Nmi);
        assert_eq!(Icr::from_xapic(0x0030, 0).mode, DeliveryMode::Fixed);
        assert_eq!(
            Icr::from_xapic(0x0130, 0).mode,
            DeliveryMode::LowestPriority
        );
        assert_eq!(Icr::from_xapic(0x0700, 0).mode, DeliveryMode::Reserved(7));
    }
}
