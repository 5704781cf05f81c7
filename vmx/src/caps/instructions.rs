//! Instructions that VMX non-root operation refuses unless a secondary control enables them:
//! with the control 0 they raise #UD in the guest whatever CPUID says (SDM Vol. 3C 26.3,
//! "Changes to Instruction Behavior in VMX Non-Root Operation"). A hypervisor must enable the
//! control for every such feature its guest's CPUID shows, or hide the feature.

use super::{Allowed, SecondaryProcBased};
use x86_arch::cpuid::{Feature, Features};

/// Each gated feature and the control that lets the guest use it. RDPID reads IA32_TSC_AUX
/// like RDTSCP and shares its control.
pub const INSTRUCTION_CONTROLS: [(SecondaryProcBased, Feature); 6] = [
    (SecondaryProcBased::ENABLE_RDTSCP, Feature::Rdtscp),
    (SecondaryProcBased::ENABLE_RDTSCP, Feature::Rdpid),
    (SecondaryProcBased::ENABLE_INVPCID, Feature::Invpcid),
    (SecondaryProcBased::ENABLE_XSAVES_XRSTORS, Feature::Xsaves),
    (
        SecondaryProcBased::ENABLE_USER_WAIT_AND_PAUSE,
        Feature::Waitpkg,
    ),
    (SecondaryProcBased::ENABLE_PCONFIG, Feature::Pconfig),
];

/// For the features the host's CPUID `shows`: the secondary controls to request, and the
/// features to hide from the guest because the processor does not allow their control
/// (`procbased2`) or because the hypervisor will not enable it (`refused`).
pub fn instruction_controls(
    procbased2: Allowed,
    shows: Features,
    refused: Features,
) -> (SecondaryProcBased, Features) {
    let mut enable = SecondaryProcBased::empty();
    let mut hide = Features::NONE;
    for (control, feature) in INSTRUCTION_CONTROLS {
        if !shows.contains(feature) {
            continue;
        }
        if refused.contains(feature) || procbased2.allowed1 & control.bits() == 0 {
            hide.insert(feature);
        } else {
            enable |= control;
        }
    }
    (enable, hide)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_features_get_their_control_or_are_hidden() {
        let everything = Features::of(&Feature::ALL);
        // A processor allowing RDTSCP and XSAVES only.
        let allowed = Allowed {
            allowed0: 0,
            allowed1: (SecondaryProcBased::ENABLE_RDTSCP
                | SecondaryProcBased::ENABLE_XSAVES_XRSTORS
                | SecondaryProcBased::ENABLE_USER_WAIT_AND_PAUSE)
                .bits(),
        };
        let (enable, hide) =
            instruction_controls(allowed, everything, Features::of(&[Feature::Waitpkg]));
        assert_eq!(
            enable,
            SecondaryProcBased::ENABLE_RDTSCP | SecondaryProcBased::ENABLE_XSAVES_XRSTORS
        );
        assert_eq!(
            hide,
            Features::of(&[Feature::Invpcid, Feature::Waitpkg, Feature::Pconfig])
        );
        // Nothing is asked for a feature the host does not have.
        let (enable, hide) =
            instruction_controls(allowed, Features::of(&[Feature::Rdpid]), Features::NONE);
        assert_eq!(enable, SecondaryProcBased::ENABLE_RDTSCP);
        assert_eq!(hide, Features::NONE);
    }
}
