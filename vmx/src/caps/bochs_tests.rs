//! Control adjustment against capability MSRs read from Bochs' CPU models: the controls Vigil
//! asks for, fitted to each model, keep or drop exactly the features that model has.

use super::bochs_models::MODELS;
use super::*;
use alloc::string::ToString;

fn caps_of(model: &str) -> VmxCaps {
    let (_, msrs) = MODELS
        .iter()
        .find(|(m, _)| *m == model)
        .expect("model in the data");
    VmxCaps::from_msrs(&mut |msr| {
        msrs.iter()
            .find(|(n, _)| *n == msr)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| {
                panic!("{model}: read of MSR {msr:#x}, which this model does not have")
            })
    })
}

/// What the hypervisor requests (vigil/src/intel/setup.rs), with the optional debugging and
/// time features on.
fn wanted() -> (PrimaryProcBased, SecondaryProcBased) {
    (
        PrimaryProcBased::USE_MSR_BITMAPS
            | PrimaryProcBased::USE_IO_BITMAPS
            | PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS
            | PrimaryProcBased::USE_TSC_OFFSETTING
            | PrimaryProcBased::RDTSC_EXITING
            | PrimaryProcBased::MONITOR_TRAP_FLAG,
        SecondaryProcBased::ENABLE_EPT
            | SecondaryProcBased::ENABLE_VPID
            | SecondaryProcBased::UNRESTRICTED_GUEST
            | SecondaryProcBased::ENABLE_RDTSCP
            | SecondaryProcBased::USE_TSC_SCALING,
    )
}

fn dropped(model: &str) -> (PrimaryProcBased, SecondaryProcBased) {
    let caps = caps_of(model);
    let (p, s) = wanted();
    let p = adjust(caps.procbased, p);
    let s = adjust(caps.procbased2, s);
    // Whatever is written must satisfy the MSR it was fitted to.
    assert!(caps.procbased.permits(p.value.bits()), "{model}: primary");
    assert!(
        caps.procbased2.permits(s.value.bits()),
        "{model}: secondary"
    );
    (p.dropped, s.dropped)
}

#[test]
fn every_model_uses_the_true_controls_and_reads_only_present_msrs() {
    for (model, _) in MODELS {
        let caps = caps_of(model);
        assert!(caps.has_true_controls(), "{model}");
        assert_ne!(caps.revision_id(), 0, "{model}");
        // CR0.PE, NE and PG must be 1 outside unrestricted guests on every model.
        assert_eq!(caps.cr0_fixed0 & 0x8000_0021, 0x8000_0021, "{model}");
    }
}

#[test]
fn skylake_x_has_everything_but_the_monitor_trap_flag() {
    let (p, s) = dropped("corei7_skylake_x");
    assert_eq!(p, PrimaryProcBased::MONITOR_TRAP_FLAG);
    assert!(s.is_empty(), "{s:?}");
    let caps = caps_of("corei7_skylake_x");
    assert!(caps.has_tsc_scaling() && caps.ept_1g_pages() && caps.has_preemption_timer());
}

#[test]
fn tigerlake_and_icelake_have_the_monitor_trap_flag() {
    for model in ["tigerlake", "corei7_icelake_u"] {
        let (p, s) = dropped(model);
        assert!(p.is_empty() && s.is_empty(), "{model}: {p:?} {s:?}");
        assert!(caps_of(model).has_mtf());
    }
}

#[test]
fn haswell_and_sandy_bridge_lack_tsc_scaling() {
    for model in ["corei7_haswell_4770", "corei7_sandy_bridge_2600k"] {
        let (_, s) = dropped(model);
        assert!(
            s.contains(SecondaryProcBased::USE_TSC_SCALING),
            "{model}: {s:?}"
        );
        assert!(!s.contains(SecondaryProcBased::ENABLE_EPT), "{model}");
        assert!(
            !s.contains(SecondaryProcBased::UNRESTRICTED_GUEST),
            "{model}"
        );
    }
}

#[test]
fn lynnfield_lacks_unrestricted_guest_and_says_so() {
    let (_, s) = dropped("corei5_lynnfield_750");
    assert!(s.contains(SecondaryProcBased::UNRESTRICTED_GUEST));
    assert!(!s.contains(SecondaryProcBased::ENABLE_EPT));
    let lines = describe_missing(s);
    assert!(
        lines.iter().any(|m| m
            .to_string()
            .starts_with("unrestricted guest not supported")),
        "{lines:?}"
    );
}

#[test]
fn penryn_has_neither_ept_nor_vpid() {
    let (_, s) = dropped("core2_penryn_t9600");
    assert!(s.contains(
        SecondaryProcBased::ENABLE_EPT
            | SecondaryProcBased::ENABLE_VPID
            | SecondaryProcBased::UNRESTRICTED_GUEST
    ));
    let caps = caps_of("core2_penryn_t9600");
    assert!(!caps.has_ept() && !caps.has_vpid());
    assert_eq!(
        caps.ept_vpid, 0,
        "EPT_VPID_CAP is not read when neither feature exists"
    );
}
