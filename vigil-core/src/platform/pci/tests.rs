//! The configuration-write policy, decision by decision, and the scan.

use super::*;
use crate::testing::FakeHost;

/// The rest of the machine, as the policy asks: Vigil's memory at 64 MiB, its ports COM2 and
/// the PM1a control pair (its own trap, followed), IDE and every function but the NIC may
/// master.
struct Stub;

impl Judge for Stub {
    fn memory_is_vigils(&self, start: u64, end: u64) -> bool {
        start < 0x410_0000 && 0x400_0000 < end
    }
    fn port_is_vigils(&self, first: u16, last: u16, except: Option<Followed>) -> Option<u16> {
        (first..=last).find(|&p| {
            (0x2F8..=0x2FF).contains(&p)
                || ((0xB004..=0xB005).contains(&p) && except != Some(Followed::PmBlock))
                || ((0xC000..=0xC00F).contains(&p) && except != Some(Followed::BusMaster))
        })
    }
    fn may_master(&self, f: &Function) -> bool {
        f.chip == Chip::PiixIde
    }
}

fn functions() -> Vec<Function> {
    let mut host = FakeHost::default();
    scan(&mut host)
}

fn function(bdf: Bdf) -> Function {
    functions().into_iter().find(|f| f.bdf == bdf).unwrap()
}

const NIC: Bdf = Bdf::new(0, 2, 0);
const IDE: Bdf = Bdf::new(0, 1, 1);
const PM: Bdf = Bdf::new(0, 1, 3);

#[test]
fn the_scan_finds_the_functions_their_chips_and_bar_sizes() {
    let all = functions();
    let chips: Vec<(Bdf, Chip)> = all.iter().map(|f| (f.bdf, f.chip)).collect();
    assert_eq!(
        chips,
        [
            (Bdf::new(0, 0, 0), Chip::I440fx),
            (Bdf::new(0, 1, 0), Chip::PiixIsa),
            (IDE, Chip::PiixIde),
            (Bdf::new(0, 1, 2), Chip::PiixUhci),
            (PM, Chip::Piix4Pm),
            (NIC, Chip::Other),
        ],
        "device 1 is multi-function: its functions 1-3 are found, and nothing else"
    );
    let nic = function(NIC);
    assert_eq!(nic.bars.len(), 2);
    assert_eq!(
        (nic.bars[0].kind, nic.bars[0].size()),
        (BarKind::Mem32, 0x2_0000)
    );
    assert_eq!((nic.bars[1].kind, nic.bars[1].size()), (BarKind::Io, 64));
    let ide = function(IDE);
    assert_eq!(ide.bar(BMIBA).map(|b| b.size()), Some(16));
}

#[test]
fn the_scan_leaves_every_bar_and_the_command_register_as_it_found_them() {
    let mut host = FakeHost::default();
    let before = host.pci.functions.clone();
    scan(&mut host);
    for (k, f) in &before {
        assert_eq!(f.config[..], host.pci.functions[k].config[..], "{k:?}");
    }
}

#[test]
fn a_memory_bar_may_not_decode_over_vigil() {
    let nic = function(NIC);
    let old = FAKE_NIC;
    let v = judge_write(&nic, 0x10, 4, 0x0400_0000, old, 0, &Stub);
    assert_eq!(
        v.refused,
        Some(Refusal::MemoryOverVigil {
            start: 0x400_0000,
            end: 0x402_0000
        })
    );
    assert_eq!(v.value, old, "the BAR keeps its value");
    // Just below Vigil: fine. And the sizing write (all ones) decodes far above RAM.
    assert_eq!(
        judge_write(&nic, 0x10, 4, 0x03FE_0000, old, 0, &Stub).refused,
        None
    );
    assert_eq!(
        judge_write(&nic, 0x10, 4, 0xFFFF_FFFF, old, 0, &Stub).refused,
        None
    );
    // A byte write that completes an address over Vigil is judged on the whole BAR.
    let v = judge_write(&nic, 0x13, 1, 0x04, 0, 0, &Stub);
    assert!(matches!(v.refused, Some(Refusal::MemoryOverVigil { .. })));
}

const FAKE_NIC: u32 = crate::testing::FAKE_NIC_MEM;

#[test]
fn an_io_bar_may_not_decode_a_port_of_vigils() {
    let nic = function(NIC);
    let v = judge_write(&nic, 0x14, 4, 0x2C0 | 1, 0xC041, 0, &Stub);
    assert_eq!(v.refused, Some(Refusal::PortOverVigil { port: 0x2F8 }));
    assert_eq!(v.value, 0xC041);
    assert_eq!(
        judge_write(&nic, 0x14, 4, 0xD001, 0xC041, 0, &Stub).refused,
        None
    );
}

#[test]
fn a_followed_decoder_moves_but_not_over_vigils_ports() {
    let ide = function(IDE);
    let v = judge_write(&ide, BMIBA, 4, 0xD001, 0xC001, 0, &Stub);
    assert_eq!(v.refused, None);
    assert_eq!(
        v.moved,
        Some((Followed::BusMaster, Some(0xC000), Some(0xD000)))
    );
    // Onto its own trap: its own ports do not count.
    let v = judge_write(&ide, BMIBA, 4, 0xC001, 0xD001, 0, &Stub);
    assert_eq!(
        v.moved,
        Some((Followed::BusMaster, Some(0xD000), Some(0xC000)))
    );
    // Over COM2: refused, nothing moves.
    let v = judge_write(&ide, BMIBA, 4, 0x2F1, 0xC001, 0, &Stub);
    assert_eq!(
        (v.refused, v.moved),
        (Some(Refusal::PortOverVigil { port: 0x2F8 }), None)
    );
    // The PM block (64 ports) over the bus-master block's ports: refused.
    let pm = function(PM);
    let v = judge_write(&pm, PMBA, 4, 0xC001, 0xB001, 0, &Stub);
    assert_eq!(v.refused, Some(Refusal::PortOverVigil { port: 0xC000 }));
    let v = judge_write(&pm, PMBA + 1, 1, 0x60, 0xB001, 0, &Stub);
    assert_eq!(
        v.moved,
        Some((Followed::PmBlock, Some(0xB000), Some(0x6000)))
    );
    assert_eq!(v.value, 0x60);
    // SMBus is not followed, but may not cover Vigil's ports either.
    let v = judge_write(&pm, 0x90, 4, 0x2F1, 0xB101, 0, &Stub);
    assert_eq!(v.refused, Some(Refusal::PortOverVigil { port: 0x2F8 }));
}

#[test]
fn only_mediated_functions_may_master_the_bus() {
    let nic = function(NIC);
    let v = judge_write(&nic, 0x04, 2, 0x0007, 0x0003, 0, &Stub);
    assert_eq!(v.refused, Some(Refusal::BusMaster));
    assert_eq!(v.value, 0x0003, "I/O and memory decoding still change");
    let ide = function(IDE);
    assert_eq!(
        judge_write(&ide, 0x04, 2, 0x0005, 0x0001, 0, &Stub).refused,
        None
    );
    // A dword write of command and status is judged on the command half.
    let v = judge_write(&nic, 0x04, 4, 0xFFFF_0007, 0x0280_0003, 0, &Stub);
    assert_eq!(v.value, 0xFFFF_0003);
}

#[test]
fn smram_dram_decoding_and_bios_writes_stay() {
    let host = function(Bdf::new(0, 0, 0));
    let v = judge_write(&host, SMRAM, 1, 0x4A, 0x001A_0000, 0, &Stub);
    assert_eq!((v.value, v.refused), (0x1A, Some(Refusal::Smram)));
    // As a byte of a dword write: the other bytes go through, 0x72 keeps its value.
    let v = judge_write(&host, 0x70, 4, 0x004A_0000, 0x001A_0000, 0, &Stub);
    assert_eq!(v.value, 0x001A_0000);
    let v = judge_write(&host, 0x60, 1, 0x20, 0x10, 0, &Stub);
    assert_eq!(v.refused, Some(Refusal::Locked));
    // PAM passes.
    assert_eq!(
        judge_write(&host, 0x59, 1, 0x30, 0x10, 0, &Stub).refused,
        None
    );
    let isa = function(Bdf::new(0, 1, 0));
    let v = judge_write(&isa, 0x4E, 1, 0x07, 0x0003_0000, 0, &Stub);
    assert_eq!((v.value, v.refused), (0x03, Some(Refusal::BiosWrite)));
}

#[test]
fn a_64_bit_bar_is_judged_with_both_halves() {
    let f = Function {
        bdf: Bdf::new(0, 3, 0),
        vendor: 0x1234,
        device: 0x1111,
        class: 0x03_0000,
        header: 0,
        chip: Chip::Other,
        bars: alloc::vec![Bar {
            reg: 0x10,
            kind: BarKind::Mem64,
            mask: !0xFFFFu64
        }],
    };
    // Low half over Vigil with the high half 0: refused; with the high half 1 (above 4 GiB):
    // fine.
    assert!(judge_write(&f, 0x10, 4, 0x0400_000C, 0xE000_000C, 0, &Stub)
        .refused
        .is_some());
    assert_eq!(
        judge_write(&f, 0x10, 4, 0x0400_000C, 0xE000_000C, 1, &Stub).refused,
        None
    );
    // Writing the high half to 0 while the low half points at Vigil's address: refused.
    assert!(judge_write(&f, 0x14, 4, 0, 1, 0x0400_000C, &Stub)
        .refused
        .is_some());
}

#[test]
fn a_bridge_window_may_not_forward_vigils_memory_or_ports() {
    let f = Function {
        bdf: Bdf::new(0, 4, 0),
        vendor: 0x8086,
        device: 0x244E,
        class: 0x06_0400,
        header: 1,
        chip: Chip::Other,
        bars: Vec::new(),
    };
    // Memory window 0x0400_0000-0x04FF_FFFF.
    let v = judge_write(&f, 0x20, 4, 0x04F0_0400, 0, 0, &Stub);
    assert!(matches!(v.refused, Some(Refusal::MemoryOverVigil { .. })));
    assert_eq!(
        judge_write(&f, 0x20, 4, 0xFEF0_FE00, 0, 0, &Stub).refused,
        None
    );
    // I/O window 0x0000-0x0FFF (base and limit 0 in the high nibbles): holds COM2. Closed
    // before (base 0xF000 above limit 0x0FFF).
    let v = judge_write(&f, 0x1C, 2, 0x0000, 0x00F0, 0, &Stub);
    assert_eq!(v.refused, Some(Refusal::PortOverVigil { port: 0x2F8 }));
    assert_eq!(
        judge_write(&f, 0x1C, 2, 0x3030, 0x00F0, 0, &Stub).refused,
        None
    );
}

#[test]
fn merge_and_extract_place_an_access_in_its_dword() {
    assert_eq!(merge(0x1122_3344, 0x72, 1, 0xAB), 0x11AB_3344);
    assert_eq!(merge(0x1122_3344, 0x42, 2, 0xBEEF), 0xBEEF_3344);
    assert_eq!(extract(0x11AB_3344, 0x72, 1), 0xAB);
    assert_eq!(extract(0xBEEF_3344, 0x42, 2), 0xBEEF);
    assert_eq!(
        Bdf::from_address(Bdf::new(0, 1, 3).address(0x41)),
        Some((Bdf::new(0, 1, 3), 0x40))
    );
    assert_eq!(Bdf::from_address(0x0000_0840), None);
}
