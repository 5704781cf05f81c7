use super::*;
use crate::mtrr::{MemTypeOrMixed, Mtrrs, VariableMtrr};
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;

const G: u64 = 1 << 30;
const M2: u64 = 1 << 21;
const K4: u64 = 1 << 12;

fn builder(largest: PageSize) -> EptBuilder<ArenaFrames> {
    EptBuilder::new(ArenaFrames::new(0x1_0000_0000, 100_000), largest).unwrap()
}

fn sizes(b: &mut EptBuilder<ArenaFrames>) -> Vec<(u64, u8)> {
    b.mappings()
        .into_iter()
        .map(|(g, t)| (g, t.level))
        .collect()
}

#[test]
fn identity_map_uses_1g_pages() {
    let mut b = builder(PageSize::Size1G);
    b.map(0, 0, 4 * G, EptPerms::RWX, MemType::WriteBack)
        .unwrap();
    assert_eq!(sizes(&mut b), [(0, 3), (G, 3), (2 * G, 3), (3 * G, 3)]);
    assert_eq!(b.allocator().in_use(), 2, "PML4 and one PDPT");
    let t = b.translate(0x1234_5678).unwrap();
    assert_eq!(
        t,
        Translation {
            hpa: 0x1234_5678,
            perms: EptPerms::RWX,
            memtype: MemType::WriteBack,
            ignore_pat: false,
            level: 3
        }
    );
    assert_eq!(b.translate(4 * G), None);
}

#[test]
fn largest_page_that_fits_alignment_and_length() {
    let mut b = builder(PageSize::Size1G);
    b.map(K4, K4, 2 * M2, EptPerms::RW, MemType::WriteBack)
        .unwrap();
    let s = sizes(&mut b);
    assert_eq!(s.len(), 511 + 1 + 1);
    assert_eq!(s[510], (M2 - K4, 1));
    assert_eq!(s[511], (M2, 2));
    assert_eq!(s[512], (2 * M2, 1));

    // Congruent addresses are needed for a large page: here hpa is off by 4 KiB.
    let mut b = builder(PageSize::Size1G);
    b.map(0, K4, M2, EptPerms::RW, MemType::WriteBack).unwrap();
    assert!(sizes(&mut b).iter().all(|&(_, l)| l == 1));

    // A processor without large EPT pages gets only 4 KiB pages.
    let mut b = builder(PageSize::Size4K);
    b.map(0, 0, M2, EptPerms::RW, MemType::WriteBack).unwrap();
    assert_eq!(sizes(&mut b).len(), 512);
}

#[test]
fn protect_splits_only_what_it_must() {
    let mut b = builder(PageSize::Size1G);
    b.map(0, 0, G, EptPerms::RWX, MemType::WriteBack).unwrap();
    b.protect(0x20_3000, K4, EptPerms::R).unwrap();
    let s = sizes(&mut b);
    // One 2 MiB page became 512 4 KiB pages; the other 511 2 MiB pages stay large.
    assert_eq!(s.iter().filter(|&&(_, l)| l == 2).count(), 511);
    assert_eq!(s.iter().filter(|&&(_, l)| l == 1).count(), 512);
    assert_eq!(b.translate(0x20_3abc).unwrap().perms, EptPerms::R);
    assert_eq!(b.translate(0x20_4000).unwrap().perms, EptPerms::RWX);
    assert_eq!(b.translate(0x20_2fff).unwrap().perms, EptPerms::RWX);
    assert_eq!(b.translate(0x20_3000).unwrap().hpa, 0x20_3000);

    // Taking every permission away hides the page; giving them back restores it as it was.
    b.protect(0x20_3000, K4, EptPerms::NONE).unwrap();
    assert_eq!(
        b.try_translate(0x20_3000),
        Err(WalkError::NotPresent {
            level: 1,
            entry: 0x20_3000 | (6 << 3) | entry::SOFTWARE_MAPPED
        })
    );
    b.protect(0x20_3000, K4, EptPerms::RW).unwrap();
    assert_eq!(b.translate(0x20_3000).unwrap().hpa, 0x20_3000);
    assert_eq!(b.translate(0x20_3000).unwrap().memtype, MemType::WriteBack);
}

#[test]
fn attached_builder_sets_one_page_in_place() {
    let mut b = builder(PageSize::Size1G);
    b.map(0, 0, 4 * G, EptPerms::RWX, MemType::WriteBack)
        .unwrap();
    b.unmap(0x4000_0000, 16 * M2).unwrap();
    let pml4 = b.pml4();
    // Later, on the same tables (as the debugger changes a running guest's EPT).
    let mut b = EptBuilder::attach(b.into_allocator(), pml4, PageSize::Size1G);
    assert_eq!(
        b.set_page_perms(0x1234_5678, EptPerms::from_bits(4)),
        Ok(true)
    );
    let t = b.try_translate(0x1234_5000).unwrap();
    assert_eq!(
        (t.perms, t.level, t.hpa),
        (EptPerms::from_bits(4), 1, 0x1234_5000)
    );
    assert_eq!(b.translate(0x1234_4000).unwrap().perms, EptPerms::RWX);
    assert_eq!(
        b.translate(0x1240_0000).unwrap().level,
        2,
        "the next 2 MiB stays large"
    );
    // No permission at all: the page stops translating but can be given back.
    assert_eq!(b.set_page_perms(0x1234_5000, EptPerms::NONE), Ok(true));
    assert!(b.translate(0x1234_5000).is_none());
    assert_eq!(b.set_page_perms(0x1234_5000, EptPerms::RWX), Ok(true));
    assert_eq!(
        b.translate(0x1234_5000).unwrap().memtype,
        MemType::WriteBack
    );
    // A hole stays a hole.
    assert_eq!(b.set_page_perms(0x4000_1000, EptPerms::RWX), Ok(false));
    assert!(b.translate(0x4000_1000).is_none());
    assert_eq!(
        b.set_page_perms(0, EptPerms::from_bits(2)),
        Err(EptError::WriteWithoutRead)
    );
}

#[test]
fn unmap_leaves_neighbours_and_remap_frees_tables() {
    let mut b = builder(PageSize::Size1G);
    b.map(0, 0x4000_0000, 4 * M2, EptPerms::RWX, MemType::WriteBack)
        .unwrap();
    b.unmap(M2 + K4, K4).unwrap();
    assert_eq!(b.translate(M2 + K4), None);
    assert_eq!(b.translate(M2).unwrap().hpa, 0x4000_0000 + M2);
    assert_eq!(
        b.translate(M2 + 2 * K4).unwrap().hpa,
        0x4000_0000 + M2 + 2 * K4
    );
    let before = b.allocator().in_use();
    assert_eq!(before, 4, "PML4, PDPT, PD, one PT");
    // Mapping a whole 1 GiB page over the PD frees the PD and the PT under it.
    b.map(0, 0, G, EptPerms::RWX, MemType::WriteBack).unwrap();
    assert_eq!(b.allocator().in_use(), 2);
    // Unmapping what was never mapped is fine.
    b.unmap(64 * G, G).unwrap();
}

#[test]
fn errors_are_reported() {
    let mut b = builder(PageSize::Size1G);
    assert_eq!(
        b.map(0x800, 0, K4, EptPerms::RW, MemType::WriteBack),
        Err(EptError::Unaligned)
    );
    assert_eq!(
        b.map(0, 0x800, K4, EptPerms::RW, MemType::WriteBack),
        Err(EptError::Unaligned)
    );
    let wo = EptPerms {
        read: false,
        write: true,
        exec: false,
    };
    assert_eq!(
        b.map(0, 0, K4, wo, MemType::WriteBack),
        Err(EptError::WriteWithoutRead)
    );
    assert_eq!(b.protect(0, K4, wo), Err(EptError::WriteWithoutRead));
    assert_eq!(
        b.map((1 << 48) - K4, 0, 2 * K4, EptPerms::R, MemType::WriteBack),
        Err(EptError::OutOfRange)
    );
    let mut small = EptBuilder::new(ArenaFrames::new(0, 3), PageSize::Size4K).unwrap();
    assert_eq!(
        small.map(0, 0, K4, EptPerms::R, MemType::WriteBack),
        Err(EptError::OutOfFrames)
    );
}

#[test]
fn mtrr_types_split_large_pages() {
    let wb8 = 0x0606_0606_0606_0606;
    let mut fixed = [wb8; 11];
    fixed[2] = 0; // VGA hole UC
    let mtrrs = Mtrrs {
        cap: (1 << 8) | 8,
        def_type: (1 << 11) | (1 << 10) | 6,
        fixed,
        variable: vec![
            VariableMtrr {
                base: 0xc000_0000,
                mask: 0xf_c000_0000 | (1 << 11),
            },
            VariableMtrr {
                base: 0xbfe0_0000 | 4,
                mask: 0xf_ffe0_0000 | (1 << 11),
            },
        ],
        phys_addr_width: 36,
    };
    let mut b = builder(PageSize::Size1G);
    b.map_with_mtrrs(0, 0, 4 * G, EptPerms::RWX, &mtrrs)
        .unwrap();
    let t = |b: &mut EptBuilder<ArenaFrames>, a| b.translate(a).unwrap();
    assert_eq!(
        (t(&mut b, 0xa_0000).memtype, t(&mut b, 0xa_0000).level),
        (MemType::Uncacheable, 1)
    );
    assert_eq!(
        (t(&mut b, 0x9_f000).memtype, t(&mut b, 0x9_f000).level),
        (MemType::WriteBack, 1)
    );
    assert_eq!(
        (t(&mut b, 0x20_0000).memtype, t(&mut b, 0x20_0000).level),
        (MemType::WriteBack, 2)
    );
    assert_eq!(
        (t(&mut b, G).memtype, t(&mut b, G).level),
        (MemType::WriteBack, 3)
    );
    assert_eq!(
        (t(&mut b, 0xbfe0_0000).memtype, t(&mut b, 0xbfe0_0000).level),
        (MemType::WriteThrough, 2)
    );
    assert_eq!(
        (t(&mut b, 0xbfc0_0000).memtype, t(&mut b, 0xbfc0_0000).level),
        (MemType::WriteBack, 2)
    );
    assert_eq!(
        (t(&mut b, 3 * G).memtype, t(&mut b, 3 * G).level),
        (MemType::Uncacheable, 3)
    );
    // Every leaf has one MTRR type throughout.
    for (gpa, tr) in b.mappings() {
        let size = tr.page_size().bytes();
        assert_eq!(
            mtrrs.type_of_range(gpa, size),
            MemTypeOrMixed::Uniform(tr.memtype),
            "{gpa:#x}"
        );
    }
}

#[test]
fn walker_reports_misconfigurations() {
    // PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000.
    let mut mem: BTreeMap<u64, u64> = BTreeMap::new();
    mem.insert(0x1000, 0x2000 | 7);
    mem.insert(0x2000, 0x3000 | 7);
    let read = |m: &BTreeMap<u64, u64>| {
        let m = m.clone();
        move |p: u64| Some(m.get(&p).copied().unwrap_or(0))
    };
    // 2 MiB page at gpa 0 -> 0x4000_0000, WB, read-only.
    mem.insert(0x3000, 0x4000_0000 | entry::LARGE | (6 << 3) | 1);
    let t = walk(
        &read(&mem),
        Eptp::new(0x1000, MemType::WriteBack, 4, false).0,
        0x1_2345,
    )
    .unwrap();
    assert_eq!((t.hpa, t.perms, t.level), (0x4001_2345, EptPerms::R, 2));
    // Write-only.
    mem.insert(0x3000, 0x4000_0000 | entry::LARGE | (6 << 3) | 2);
    assert!(matches!(
        walk(&read(&mem), 0x1000, 0),
        Err(WalkError::Misconfigured { level: 2, .. })
    ));
    // Reserved memory type 2.
    mem.insert(0x3000, 0x4000_0000 | entry::LARGE | (2 << 3) | 1);
    assert!(matches!(
        walk(&read(&mem), 0x1000, 0),
        Err(WalkError::Misconfigured { level: 2, .. })
    ));
    // Address bits below the large page's size.
    mem.insert(0x3000, 0x4000_1000 | entry::LARGE | (6 << 3) | 1);
    assert!(matches!(
        walk(&read(&mem), 0x1000, 0),
        Err(WalkError::Misconfigured { level: 2, .. })
    ));
    // Large bit in a PML4E.
    mem.insert(0x1000, 0x2000 | 7 | entry::LARGE);
    assert!(matches!(
        walk(&read(&mem), 0x1000, 0),
        Err(WalkError::Misconfigured { level: 4, .. })
    ));
    // Not present at the PDPT.
    mem.insert(0x1000, 0x2000 | 7);
    assert_eq!(
        walk(&read(&mem), 0x1000, G),
        Err(WalkError::NotPresent { level: 3, entry: 0 })
    );
    // Unreadable memory.
    assert_eq!(
        walk(&|_p: u64| None, 0x1000, 0),
        Err(WalkError::Unreadable { phys: 0x1000 })
    );
}

#[test]
fn permissions_are_anded_along_the_walk() {
    let mut b = builder(PageSize::Size1G);
    b.map(0, 0, K4, EptPerms::RWX, MemType::WriteBack).unwrap();
    // Drop execute on the PML4 entry by hand.
    let pml4 = b.pml4();
    b.allocator().table(pml4)[0] &= !entry::EXECUTE;
    assert_eq!(b.translate(0).unwrap().perms, EptPerms::RW);
}

#[test]
fn eptp_and_helpers() {
    let e = Eptp::new(0x1234_5000, MemType::WriteBack, 4, true);
    assert_eq!(e.0, 0x1234_5000 | 6 | (3 << 3) | (1 << 6));
    assert_eq!(
        (e.pml4(), e.memtype(), e.page_walk_len(), e.ad_bits()),
        (0x1234_5000, Some(MemType::WriteBack), 4, true)
    );
    assert_eq!(alloc::format!("{}", EptPerms::RX), "r-x");
    let r = |p: u64| Some(if p == 0x10 { 0x1111_2222_3333_4444 } else { 0 });
    assert_eq!(r.read_u32(0x14), Some(0x1111_2222));
    assert_eq!(r.read_u32(0x10), Some(0x3333_4444));
    let caps = crate::testing::rich_caps();
    assert_eq!(PageSize::largest_supported(&caps), PageSize::Size1G);
    let mut c = caps;
    c.ept_vpid &= !(1 << 17);
    assert_eq!(PageSize::largest_supported(&c), PageSize::Size2M);
}

// Property tests: random sequences of map/protect/unmap against a model.

#[derive(Clone, Debug)]
enum Op {
    Map {
        gpa: u64,
        hpa: u64,
        pages: u64,
        perms: EptPerms,
        memtype: MemType,
    },
    Protect {
        gpa: u64,
        pages: u64,
        perms: EptPerms,
    },
    Unmap {
        gpa: u64,
        pages: u64,
    },
}

fn perms() -> impl Strategy<Value = EptPerms> {
    prop_oneof![
        Just(EptPerms::NONE),
        Just(EptPerms::R),
        Just(EptPerms::RW),
        Just(EptPerms::RX),
        Just(EptPerms::RWX),
        Just(EptPerms {
            read: false,
            write: false,
            exec: true
        }),
    ]
}

fn memtype() -> impl Strategy<Value = MemType> {
    prop_oneof![
        Just(MemType::WriteBack),
        Just(MemType::Uncacheable),
        Just(MemType::WriteThrough)
    ]
}

/// Operations on a space of `space` pages, with starts and lengths biased towards multiples
/// of `unit` pages so that large pages appear and get split.
fn ops(space: u64, unit: u64) -> impl Strategy<Value = Vec<Op>> {
    let start = prop_oneof![0..space, (0..space / unit).prop_map(move |u| u * unit)];
    let len = prop_oneof![1..=unit * 2, (1..=4u64).prop_map(move |n| n * unit)];
    let shift = prop_oneof![Just(0u64), (0..8u64).prop_map(move |n| n * unit), 0..space];
    let op = (0..3u8, start, len, shift, perms(), memtype()).prop_map(
        move |(kind, gpa, pages, shift, perms, memtype)| {
            let pages = pages.min(space - gpa).max(1);
            match kind {
                0 => Op::Map {
                    gpa,
                    hpa: gpa + shift,
                    pages,
                    perms,
                    memtype,
                },
                1 => Op::Protect { gpa, pages, perms },
                _ => Op::Unmap { gpa, pages },
            }
        },
    );
    proptest::collection::vec(op, 1..12)
}

type Model = BTreeMap<u64, (u64, EptPerms, MemType)>;

fn apply_builder(b: &mut EptBuilder<ArenaFrames>, op: &Op) {
    match *op {
        Op::Map {
            gpa,
            hpa,
            pages,
            perms,
            memtype,
        } => b
            .map(gpa * K4, hpa * K4, pages * K4, perms, memtype)
            .unwrap(),
        Op::Protect { gpa, pages, perms } => b.protect(gpa * K4, pages * K4, perms).unwrap(),
        Op::Unmap { gpa, pages } => b.unmap(gpa * K4, pages * K4).unwrap(),
    }
}

fn apply(b: &mut EptBuilder<ArenaFrames>, model: &mut Model, op: &Op) {
    apply_builder(b, op);
    match *op {
        Op::Map {
            gpa,
            hpa,
            pages,
            perms,
            memtype,
        } => {
            for i in 0..pages {
                model.insert(gpa + i, (hpa + i, perms, memtype));
            }
        }
        Op::Protect { gpa, pages, perms } => {
            for i in 0..pages {
                if let Some(e) = model.get_mut(&(gpa + i)) {
                    e.1 = perms;
                }
            }
        }
        Op::Unmap { gpa, pages } => {
            for i in 0..pages {
                model.remove(&(gpa + i));
            }
        }
    }
}

/// The operations with every page count and address multiplied by `unit`.
fn scale(ops: &[Op], unit: u64) -> Vec<Op> {
    ops.iter()
        .map(|op| match *op {
            Op::Map {
                gpa,
                hpa,
                pages,
                perms,
                memtype,
            } => Op::Map {
                gpa: gpa * unit,
                hpa: hpa * unit,
                pages: pages * unit,
                perms,
                memtype,
            },
            Op::Protect { gpa, pages, perms } => Op::Protect {
                gpa: gpa * unit,
                pages: pages * unit,
                perms,
            },
            Op::Unmap { gpa, pages } => Op::Unmap {
                gpa: gpa * unit,
                pages: pages * unit,
            },
        })
        .collect()
}

fn range(op: &Op) -> core::ops::Range<u64> {
    match *op {
        Op::Map { gpa, pages, .. } | Op::Protect { gpa, pages, .. } | Op::Unmap { gpa, pages } => {
            gpa..gpa + pages
        }
    }
}

/// What a page maps to after `ops`, found by replaying them: a model that costs nothing per
/// page mapped, for address spaces too large to enumerate.
fn replay(ops: &[Op], page: u64) -> Option<(u64, EptPerms, MemType)> {
    let mut state: Option<(u64, EptPerms, MemType)> = None;
    for op in ops.iter().filter(|op| range(op).contains(&page)) {
        match *op {
            Op::Map {
                gpa,
                hpa,
                perms,
                memtype,
                ..
            } => state = Some((hpa + page - gpa, perms, memtype)),
            Op::Protect { perms, .. } => {
                if let Some(s) = state.as_mut() {
                    s.1 = perms;
                }
            }
            Op::Unmap { .. } => state = None,
        }
    }
    state.filter(|s| s.1 != EptPerms::NONE)
}

/// The pages at and around each operation's edges, where splitting mistakes show.
fn boundaries(ops: &[Op]) -> Vec<u64> {
    ops.iter()
        .flat_map(|op| {
            let r = range(op);
            [
                r.start.saturating_sub(1),
                r.start,
                (r.start + r.end) / 2,
                r.end - 1,
                r.end,
            ]
        })
        .collect()
}

fn expected(model: &Model, page: u64) -> Option<(u64, EptPerms, MemType)> {
    model.get(&page).copied().filter(|e| e.1 != EptPerms::NONE)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// 16 MiB with 2 MiB pages: every page is compared with the model after every operation,
    /// both through the builder and through the generic walker reading the raw tables.
    #[test]
    fn small_space_agrees_with_model(ops in ops(4096, 512)) {
        let mut b = builder(PageSize::Size2M);
        let mut model = Model::new();
        for op in &ops {
            apply(&mut b, &mut model, op);
            let pml4 = b.pml4();
            for page in 0..4096 + 512 {
                let gpa = page * K4 + 0x123;
                let got = b.translate(gpa).map(|t| (t.hpa, t.perms, t.memtype));
                let want = expected(&model, page).map(|(h, p, m)| (h * K4 + 0x123, p, m));
                prop_assert_eq!(got, want, "page {:#x} after {:?}", page, op);
                let raw = walk(b.allocator(), pml4, gpa).ok().map(|t| (t.hpa, t.perms, t.memtype));
                prop_assert_eq!(raw, want);
            }
        }
    }

    /// 8 GiB with 1 GiB pages, in 2 MiB steps: compared at every operation boundary and at
    /// random points, against a replay of the operations.
    #[test]
    fn large_space_agrees_with_replay(
        ops in ops(8 * 512, 512),
        probes in proptest::collection::vec(0..8 * 512 * 512u64, 32),
    ) {
        let ops = scale(&ops, 512);
        let mut b = builder(PageSize::Size1G);
        for op in &ops {
            apply_builder(&mut b, op);
        }
        for page in probes.into_iter().chain(boundaries(&ops)) {
            let got = b.translate(page * K4).map(|t| (t.hpa, t.perms, t.memtype));
            let want = replay(&ops, page).map(|(h, p, m)| (h * K4, p, m));
            prop_assert_eq!(got, want, "page {:#x}", page);
        }
    }
}
