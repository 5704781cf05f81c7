use super::*;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use proptest::prelude::*;
use x86_arch::paging::FaultReason;

const MIB2: u64 = 1 << 21;
const GIB: u64 = 1 << 30;
/// Frames live at 16 GiB in the tests, far from the addresses being mapped.
const ARENA: u64 = 16 * GIB;

fn builder(largest: PageSize) -> NptBuilder<ArenaFrames> {
    NptBuilder::new(ArenaFrames::new(ARENA, 4096), largest, true).unwrap()
}

/// Translates through the tables as the processor walks them (the x86 page-table walker, user
/// access), straight from the arena's memory.
fn walk_raw(b: &mut NptBuilder<ArenaFrames>, gpa: u64) -> Result<Translation, FaultReason> {
    let root = b.root();
    walk(b.allocator(), root, gpa, 48).map_err(|f| f.reason)
}

#[test]
fn identity_map_uses_the_largest_pages_and_every_entry_is_user() {
    let mut b = builder(PageSize::Size1G);
    b.map(0, 0, 4 * GIB, NptPerms::RWX).unwrap();
    let m = b.mappings();
    assert_eq!(m.len(), 4);
    assert!(m
        .iter()
        .all(|(_, t)| t.level == 3 && t.perms == NptPerms::RWX));
    // PML4 and one PDPT.
    assert_eq!(b.allocator().in_use(), 2);
    let t = walk_raw(&mut b, 0x1234_5678).unwrap();
    assert_eq!(t.hpa, 0x1234_5678);
    // Without 1-GiB pages the same range takes 2-MiB leaves.
    let mut b = builder(PageSize::Size2M);
    b.map(0, 0, GIB, NptPerms::RWX).unwrap();
    assert!(b.mappings().iter().all(|(_, t)| t.level == 2));
    assert_eq!(b.mappings().len(), 512);
}

/// Every entry under `table` (at `level`): accessed preset, and dirty too in leaves.
fn assert_preset(b: &mut NptBuilder<ArenaFrames>, table: u64, level: u8) -> usize {
    let entries = *b.allocator().table(table);
    let mut seen = 0;
    for e in entries.into_iter().filter(|&e| e & entry::PRESENT != 0) {
        seen += 1;
        assert_ne!(e & entry::ACCESSED, 0, "{e:#x} at level {level}");
        if level == 1 || e & entry::LARGE != 0 {
            assert_eq!(
                e & builder::PRESET,
                builder::PRESET,
                "{e:#x} at level {level}"
            );
        } else {
            seen += assert_preset(b, e & entry::ADDRESS, level - 1);
        }
    }
    seen
}

#[test]
fn accessed_and_dirty_are_preset_so_the_processor_never_writes_the_tables() {
    let mut b = builder(PageSize::Size1G);
    b.map(0, 0, 4 * GIB, NptPerms::RWX).unwrap();
    // Splits down to 4 KiB, and permission changes on split leaves.
    b.unmap(0x10_0000, 0x1000).unwrap();
    b.protect(0x20_0000, 0x1000, NptPerms::R).unwrap();
    b.set_page_perms(0x30_0000, NptPerms::NONE).unwrap();
    b.set_page_perms(0x30_0000, NptPerms::RWX).unwrap();
    let root = b.root();
    assert!(assert_preset(&mut b, root, 4) > 512 * 3);
}

#[test]
fn holes_are_not_present_and_split_only_what_they_must() {
    let mut b = builder(PageSize::Size1G);
    b.map(0, 0, 4 * GIB, NptPerms::RWX).unwrap();
    // Vigil's memory: an unaligned 2 MiB + 12 KiB range below 4 GiB.
    let (start, len) = (0xFDF0_0000u64, MIB2 + 0x3000);
    b.unmap(start, len).unwrap();
    assert_eq!(walk_raw(&mut b, start), Err(FaultReason::NotPresent));
    assert_eq!(
        walk_raw(&mut b, start + len - 1),
        Err(FaultReason::NotPresent)
    );
    assert_eq!(walk_raw(&mut b, start - 1).unwrap().hpa, start - 1);
    assert_eq!(walk_raw(&mut b, start + len).unwrap().hpa, start + len);
    // The 1-GiB page holding the hole became 2-MiB pages and 4-KiB pages only at the edge.
    let sizes: BTreeMap<u8, usize> = b.mappings().iter().fold(BTreeMap::new(), |mut m, (_, t)| {
        *m.entry(t.level).or_default() += 1;
        m
    });
    assert_eq!(sizes.get(&3), Some(&3), "the other three 1-GiB pages stay");
    assert_eq!(
        sizes.get(&1),
        Some(&(512 - 3)),
        "one 2-MiB page split at the end"
    );
}

#[test]
fn a_page_without_permissions_remembers_its_address() {
    let mut b = builder(PageSize::Size2M);
    b.map(0, 0, 8 * MIB2, NptPerms::RWX).unwrap();
    let page = 3 * MIB2 + 0x5000;
    assert!(b.set_page_perms(page, NptPerms::NONE).unwrap());
    assert_eq!(walk_raw(&mut b, page), Err(FaultReason::NotPresent));
    assert!(b.set_page_perms(page, NptPerms::RX).unwrap());
    let t = walk_raw(&mut b, page + 8).unwrap();
    assert_eq!(t.hpa, page + 8);
    assert_eq!(t.perms, NptPerms::RX);
    assert_eq!(t.level, 1);
    // Its neighbours keep everything.
    assert_eq!(
        walk_raw(&mut b, page + 0x1000).unwrap().perms,
        NptPerms::RWX
    );
    // Nothing is mapped in a hole.
    b.unmap(0, MIB2).unwrap();
    assert!(!b.set_page_perms(0x1000, NptPerms::R).unwrap());
}

#[test]
fn a_not_present_large_page_splits_into_not_present_pages() {
    let mut b = builder(PageSize::Size2M);
    b.map(0, 0, 2 * MIB2, NptPerms::RWX).unwrap();
    b.protect(0, MIB2, NptPerms::NONE).unwrap();
    assert!(b.set_page_perms(0x7000, NptPerms::RWX).unwrap());
    assert_eq!(walk_raw(&mut b, 0x7123).unwrap().hpa, 0x7123);
    assert_eq!(walk_raw(&mut b, 0x8000), Err(FaultReason::NotPresent));
}

#[test]
fn the_format_refuses_what_it_cannot_express() {
    let mut b = builder(PageSize::Size2M);
    let x_only = NptPerms {
        read: false,
        write: false,
        exec: true,
    };
    assert_eq!(b.map(0, 0, 4096, x_only), Err(NptError::Inexpressible));
    let w_only = NptPerms {
        read: false,
        write: true,
        exec: false,
    };
    assert_eq!(b.map(0, 0, 4096, w_only), Err(NptError::Inexpressible));
    assert_eq!(b.map(1, 0, 4096, NptPerms::RWX), Err(NptError::Unaligned));
    assert_eq!(
        b.map(0, 0, 1 << 49, NptPerms::RWX),
        Err(NptError::OutOfRange)
    );
    let mut no_nx = NptBuilder::new(ArenaFrames::new(ARENA, 16), PageSize::Size2M, false).unwrap();
    assert_eq!(
        no_nx.map(0, 0, 4096, NptPerms::RW),
        Err(NptError::Inexpressible)
    );
    assert!(no_nx.map(0, 0, 4096, NptPerms::RWX).is_ok());
    let mut tiny = NptBuilder::new(ArenaFrames::new(ARENA, 2), PageSize::Size4K, true).unwrap();
    assert_eq!(
        tiny.map(0, 0, 4096, NptPerms::RWX),
        Err(NptError::OutOfFrames)
    );
}

#[test]
fn entries_carry_user_and_no_execute() {
    assert_eq!(
        NptPerms::RWX.entry_bits(true),
        Some(entry::PRESENT | entry::WRITABLE | entry::USER)
    );
    assert_eq!(
        NptPerms::R.entry_bits(true),
        Some(entry::PRESENT | entry::USER | entry::NO_EXECUTE)
    );
    assert_eq!(NptPerms::NONE.entry_bits(false), Some(0));
    let mut b = builder(PageSize::Size4K);
    b.map(0x10_0000, 0x20_0000, 0x1000, NptPerms::R).unwrap();
    let t = walk_raw(&mut b, 0x10_0004).unwrap();
    assert_eq!((t.hpa, t.perms), (0x20_0004, NptPerms::R));
}

#[test]
fn attached_builder_changes_the_same_tables() {
    let mut b = builder(PageSize::Size1G);
    b.map(0, 0, GIB, NptPerms::RWX).unwrap();
    let root = b.root();
    let alloc = b.into_allocator();
    let mut again = NptBuilder::attach(alloc, root, PageSize::Size1G, true);
    assert!(again.set_page_perms(0x4000, NptPerms::RX).unwrap());
    assert_eq!(walk_raw(&mut again, 0x4000).unwrap().perms, NptPerms::RX);
    assert_eq!(walk_raw(&mut again, 0x5000).unwrap().perms, NptPerms::RWX);
}

// ---- Model test: any sequence of map/unmap/protect agrees page by page with a plain map. ----

#[derive(Clone, Debug)]
enum Op {
    Map {
        gpa: u64,
        hpa: u64,
        len: u64,
        perms: NptPerms,
    },
    Unmap {
        gpa: u64,
        len: u64,
    },
    Protect {
        gpa: u64,
        len: u64,
        perms: NptPerms,
    },
}

fn perms() -> impl Strategy<Value = NptPerms> {
    prop_oneof![
        Just(NptPerms::NONE),
        Just(NptPerms::R),
        Just(NptPerms::RW),
        Just(NptPerms::RX),
        Just(NptPerms::RWX),
    ]
}

/// Operations over `space` pages with 2-MiB (512-page) alignment likely.
fn ops(space: u64) -> impl Strategy<Value = Vec<Op>> {
    let page = prop_oneof![0..space, (0..space / 512).prop_map(|u| u * 512)];
    let len = prop_oneof![1..=1024u64, (1..=4u64).prop_map(|n| n * 512)];
    let shift = prop_oneof![Just(0u64), (0..4u64).prop_map(|n| n * 512), 0..space];
    let op = (0..3u8, page, len, shift, perms()).prop_map(move |(k, p, l, s, perms)| {
        let (gpa, len) = (p * 4096, l.min(space - p).max(1) * 4096);
        match k {
            0 => Op::Map {
                gpa,
                hpa: (p + s) * 4096,
                len,
                perms,
            },
            1 => Op::Unmap { gpa, len },
            _ => Op::Protect { gpa, len, perms },
        }
    });
    proptest::collection::vec(op, 1..10)
}

type Model = BTreeMap<u64, (u64, NptPerms)>;

fn apply(b: &mut NptBuilder<ArenaFrames>, model: &mut Model, op: &Op) {
    match *op {
        Op::Map {
            gpa,
            hpa,
            len,
            perms,
        } => {
            b.map(gpa, hpa, len, perms).unwrap();
            for i in 0..len / 4096 {
                model.insert(gpa + i * 4096, (hpa + i * 4096, perms));
            }
        }
        Op::Unmap { gpa, len } => {
            b.unmap(gpa, len).unwrap();
            for i in 0..len / 4096 {
                model.remove(&(gpa + i * 4096));
            }
        }
        Op::Protect { gpa, len, perms } => {
            b.protect(gpa, len, perms).unwrap();
            for i in 0..len / 4096 {
                if let Some(e) = model.get_mut(&(gpa + i * 4096)) {
                    e.1 = perms;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn builder_agrees_with_a_page_map(ops in ops(4096)) {
        let mut b = builder(PageSize::Size2M);
        let mut model = Model::new();
        for op in &ops {
            apply(&mut b, &mut model, op);
        }
        for page in 0..4096u64 {
            let gpa = page * 4096;
            let want = model.get(&gpa).copied().filter(|(_, p)| p.read);
            let got = walk_raw(&mut b, gpa + 0x18).ok().map(|t| (t.hpa - 0x18, t.perms));
            prop_assert_eq!(got, want, "page {:#x} after {:?}", gpa, ops);
        }
    }
}
