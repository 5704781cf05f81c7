//! Mapping violations to what the processor reports.

use super::*;

fn v(rule: &'static str) -> Violation {
    let r = rules::find(rule).unwrap();
    Violation {
        rule: r.id,
        sdm: r.sdm,
        summary: "x".into(),
        fields: Vec::new(),
    }
}

#[test]
fn each_rule_maps_to_its_failure() {
    assert_eq!(
        v("controls.vpid.nonzero").expected_failure(),
        EntryFailureKind::InstructionError(7)
    );
    assert_eq!(
        v("host.cr0.fixed").expected_failure(),
        EntryFailureKind::InstructionError(8)
    );
    assert_eq!(
        v("guest.rflags.reserved").expected_failure(),
        EntryFailureKind::ExitReason33
    );
    assert_eq!(
        v("msr_load.reserved").expected_failure(),
        EntryFailureKind::ExitReason34
    );
    for r in rules::ALL {
        let expected = match r.id.split('.').next().unwrap() {
            "controls" => EntryFailureKind::InstructionError(7),
            "host" => EntryFailureKind::InstructionError(8),
            "guest" => EntryFailureKind::ExitReason33,
            "msr_load" => EntryFailureKind::ExitReason34,
            other => panic!("rule {} has unknown area {other}", r.id),
        };
        assert_eq!(r.failure, expected, "{}", r.id);
        assert!(
            r.sdm.starts_with("27.") || r.sdm.starts_with("25."),
            "{}: {}",
            r.id,
            r.sdm
        );
    }
}

#[test]
fn rule_ids_are_unique() {
    let ids: BTreeSet<&str> = rules::ALL.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), rules::ALL.len());
}

#[test]
fn earliest_category_is_predicted() {
    let guest_and_msr = [v("guest.cr0.fixed"), v("msr_load.reserved")];
    assert_eq!(
        predicted_failures(&guest_and_msr),
        [EntryFailureKind::ExitReason33]
    );
    let mixed = [
        v("guest.cr0.fixed"),
        v("host.cr0.fixed"),
        v("controls.pin.allowed"),
        v("host.tr.null"),
    ];
    // Controls and host state may be checked in either order.
    assert_eq!(
        predicted_failures(&mixed),
        [
            EntryFailureKind::InstructionError(7),
            EntryFailureKind::InstructionError(8)
        ]
    );
    assert!(agrees(&mixed, EntryFailureKind::InstructionError(8)));
    assert!(!agrees(&mixed, EntryFailureKind::ExitReason33));
    assert!(predicted_failures(&[]).is_empty());
    assert!(!agrees(&[], EntryFailureKind::ExitReason33));
}

#[test]
fn reported_failures_decode_and_list_their_rules() {
    assert_eq!(
        EntryFailureKind::from_exit_reason(0x8000_0021),
        Some(EntryFailureKind::ExitReason33)
    );
    assert_eq!(
        EntryFailureKind::from_exit_reason(0x8000_0022),
        Some(EntryFailureKind::ExitReason34)
    );
    assert_eq!(EntryFailureKind::from_exit_reason(0x21), None);
    assert_eq!(EntryFailureKind::from_exit_reason(0x8000_0029), None);
    let host: Vec<&str> = rules_for(EntryFailureKind::InstructionError(8))
        .map(|r| r.id)
        .collect();
    assert!(host.contains(&"host.tr.null") && host.iter().all(|id| id.starts_with("host.")));
    assert_eq!(rules_for(EntryFailureKind::InstructionError(26)).count(), 0);
    assert_eq!(
        alloc::format!("{}", EntryFailureKind::InstructionError(7)),
        "VM-instruction error 7 (VM entry with invalid control field(s))"
    );
}

#[test]
fn violations_display_their_fields() {
    let mut e = b64();
    e.set(HostTrSelector, 0);
    let v = e.check();
    assert_eq!(v.len(), 1);
    assert_eq!(
        alloc::format!("{}", v[0]),
        "[host.tr.null] SDM Vol. 3C 27.2.3: host TR selector is null; host TR selector = 0x0"
    );
    assert_eq!(v[0].fields, [(HostTrSelector, 0)]);
}

#[test]
fn msr_load_entries() {
    let entries = [
        MsrEntry {
            index: 0x277,
            reserved: 0,
            value: 0x0007_0406_0007_0406,
        },
        MsrEntry {
            index: 0xc000_0100,
            reserved: 0,
            value: 0,
        },
        MsrEntry {
            index: 0x10,
            reserved: 1,
            value: 0,
        },
        MsrEntry {
            index: 0x808,
            reserved: 0,
            value: 0,
        },
    ];
    let v = check_msr_load_entries(&entries);
    let got: Vec<(&str, bool)> = v
        .iter()
        .map(|x| (x.rule, x.summary.starts_with("entry ")))
        .collect();
    assert_eq!(
        got,
        [
            ("msr_load.forbidden_msr", true),
            ("msr_load.reserved", true),
            ("msr_load.forbidden_msr", true)
        ]
    );
    assert!(v[0].summary.starts_with("entry 2 "), "{}", v[0].summary);
    assert!(check_msr_load_entries(&entries[..1]).is_empty());
    assert_eq!(core::mem::size_of::<MsrEntry>(), 16);
}

#[test]
fn report_says_whether_the_checks_explain_the_failure() {
    let mut e = b64();
    e.set(GuestRflags, 0);
    let v = e.check();
    let mut s = alloc::string::String::new();
    write_report(&v, Some(EntryFailureKind::ExitReason33), &mut s).unwrap();
    assert!(
        s.starts_with("VM-entry checks: 1 violation(s)\n  [guest.rflags.reserved]"),
        "{s}"
    );
    assert!(s.ends_with("as the checks predict\n"), "{s}");

    let mut s = alloc::string::String::new();
    write_report(&[], Some(EntryFailureKind::InstructionError(8)), &mut s).unwrap();
    assert!(s.contains("no violation found"), "{s}");
    assert!(s.contains("but the checks predict success"), "{s}");
    assert!(s.contains("rules that produce it: host.cr0.fixed, "), "{s}");
}
