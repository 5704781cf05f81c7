//! CPUID feature bits that a hypervisor must decide about: features whose instructions a
//! virtualization backend must enable for its guest (or they raise #UD there), and features a
//! guest must never be shown. Each [`Feature`] knows where CPUID reports it (SDM Vol. 2A, CPUID,
//! "Feature Information" and the structured extended feature leaves).

/// One feature, at the CPUID bit that reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Feature {
    /// VMX: VMXON and the VMX instructions (CPUID.1:ECX[5]).
    Vmx,
    /// SMX: GETSEC (CPUID.1:ECX[6]).
    Smx,
    /// SVM (CPUID.80000001H:ECX[2]).
    Svm,
    /// RDTSCP (CPUID.80000001H:EDX[27]).
    Rdtscp,
    /// RDPID (CPUID.(EAX=7,ECX=0):ECX[22]).
    Rdpid,
    /// INVPCID (CPUID.(EAX=7,ECX=0):EBX[10]).
    Invpcid,
    /// XSAVES/XRSTORS and IA32_XSS (CPUID.(EAX=0DH,ECX=1):EAX[3]).
    Xsaves,
    /// UMONITOR, UMWAIT and TPAUSE (CPUID.(EAX=7,ECX=0):ECX[5]).
    Waitpkg,
    /// PCONFIG (CPUID.(EAX=7,ECX=0):EDX[18]).
    Pconfig,
    /// RDMSRLIST and WRMSRLIST (CPUID.(EAX=7,ECX=1):EAX[27]).
    Msrlist,
    /// Software Guard Extensions: ENCLS, ENCLU (CPUID.(EAX=7,ECX=0):EBX[2]).
    Sgx,
    /// SGX launch configuration (CPUID.(EAX=7,ECX=0):ECX[30]).
    SgxLc,
    /// Intel Processor Trace (CPUID.(EAX=7,ECX=0):EBX[25]).
    ProcessorTrace,
}

/// Which register of a CPUID result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Eax = 0,
    Ebx = 1,
    Ecx = 2,
    Edx = 3,
}

/// Where CPUID reports a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub leaf: u32,
    /// `None`: the leaf has no subleaves.
    pub subleaf: Option<u32>,
    pub reg: Reg,
    pub bit: u8,
}

impl Location {
    const fn at(leaf: u32, subleaf: Option<u32>, reg: Reg, bit: u8) -> Location {
        Location {
            leaf,
            subleaf,
            reg,
            bit,
        }
    }

    pub fn matches(&self, leaf: u32, subleaf: u32) -> bool {
        self.leaf == leaf && self.subleaf.is_none_or(|s| s == subleaf)
    }

    /// Whether `r` (EAX, EBX, ECX, EDX of this location's leaf) reports the feature.
    pub fn is_set(&self, r: &[u32; 4]) -> bool {
        r[self.reg as usize] & (1 << self.bit) != 0
    }
}

impl Feature {
    pub const ALL: [Feature; 13] = [
        Feature::Vmx,
        Feature::Smx,
        Feature::Svm,
        Feature::Rdtscp,
        Feature::Rdpid,
        Feature::Invpcid,
        Feature::Xsaves,
        Feature::Waitpkg,
        Feature::Pconfig,
        Feature::Msrlist,
        Feature::Sgx,
        Feature::SgxLc,
        Feature::ProcessorTrace,
    ];

    pub const fn location(self) -> Location {
        use Reg::*;
        match self {
            Feature::Vmx => Location::at(1, None, Ecx, 5),
            Feature::Smx => Location::at(1, None, Ecx, 6),
            Feature::Svm => Location::at(0x8000_0001, None, Ecx, 2),
            Feature::Rdtscp => Location::at(0x8000_0001, None, Edx, 27),
            Feature::Rdpid => Location::at(7, Some(0), Ecx, 22),
            Feature::Invpcid => Location::at(7, Some(0), Ebx, 10),
            Feature::Xsaves => Location::at(0xD, Some(1), Eax, 3),
            Feature::Waitpkg => Location::at(7, Some(0), Ecx, 5),
            Feature::Pconfig => Location::at(7, Some(0), Edx, 18),
            Feature::Msrlist => Location::at(7, Some(1), Eax, 27),
            Feature::Sgx => Location::at(7, Some(0), Ebx, 2),
            Feature::SgxLc => Location::at(7, Some(0), Ecx, 30),
            Feature::ProcessorTrace => Location::at(7, Some(0), Ebx, 25),
        }
    }

    /// A CPUID leaf that only describes this feature: all zero when the feature is hidden (SGX
    /// leaf 12H, Processor Trace leaf 14H, PCONFIG leaf 1BH).
    pub const fn own_leaf(self) -> Option<u32> {
        match self {
            Feature::Sgx => Some(0x12),
            Feature::ProcessorTrace => Some(0x14),
            Feature::Pconfig => Some(0x1B),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Feature::Vmx => "VMX",
            Feature::Smx => "SMX",
            Feature::Svm => "SVM",
            Feature::Rdtscp => "RDTSCP",
            Feature::Rdpid => "RDPID",
            Feature::Invpcid => "INVPCID",
            Feature::Xsaves => "XSAVES",
            Feature::Waitpkg => "WAITPKG",
            Feature::Pconfig => "PCONFIG",
            Feature::Msrlist => "MSRLIST",
            Feature::Sgx => "SGX",
            Feature::SgxLc => "SGX_LC",
            Feature::ProcessorTrace => "Intel PT",
        }
    }
}

/// A set of features.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features(u32);

impl Features {
    pub const NONE: Features = Features(0);

    pub const fn of(list: &[Feature]) -> Features {
        let mut bits = 0;
        let mut i = 0;
        while i < list.len() {
            bits |= 1 << list[i] as u32;
            i += 1;
        }
        Features(bits)
    }

    pub const fn contains(self, f: Feature) -> bool {
        self.0 & (1 << f as u32) != 0
    }

    pub fn insert(&mut self, f: Feature) {
        self.0 |= 1 << f as u32;
    }

    pub const fn union(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| self.contains(*f))
    }

    /// The features whose bit CPUID `leaf`.`subleaf` reports (`subleaf` ignored where the
    /// leaf has none).
    const fn reported_by(leaf: u32, subleaf: u32) -> u32 {
        let mut bits = 0;
        let mut i = 0;
        while i < Feature::ALL.len() {
            let at = Feature::ALL[i].location();
            let sub_ok = match at.subleaf {
                None => true,
                Some(s) => s == subleaf,
            };
            if at.leaf == leaf && sub_ok {
                bits |= 1 << i;
            }
            i += 1;
        }
        bits
    }

    /// The features whose own leaf `leaf` is.
    const fn owning(leaf: u32) -> u32 {
        let mut bits = 0;
        let mut i = 0;
        while i < Feature::ALL.len() {
            if let Some(own) = Feature::ALL[i].own_leaf() {
                if own == leaf {
                    bits |= 1 << i;
                }
            }
            i += 1;
        }
        bits
    }

    /// The features CPUID `leaf`.`subleaf` reports, and those it describes alone: worked out at
    /// compile time for the few leaves that have any (a hypervisor runs this at every CPUID
    /// exit). The test below holds it to `reported_by` and `owning` for every leaf.
    #[inline]
    fn at_leaf(leaf: u32, subleaf: u32) -> (u32, u32) {
        const L1: u32 = Features::reported_by(1, 0);
        const L7_0: u32 = Features::reported_by(7, 0);
        const L7_1: u32 = Features::reported_by(7, 1);
        const LD_1: u32 = Features::reported_by(0xD, 1);
        const LX1: u32 = Features::reported_by(0x8000_0001, 0);
        const O12: u32 = Features::owning(0x12);
        const O14: u32 = Features::owning(0x14);
        const O1B: u32 = Features::owning(0x1B);
        match (leaf, subleaf) {
            (1, _) => (L1, 0),
            (7, 0) => (L7_0, 0),
            (7, 1) => (L7_1, 0),
            (0xD, 1) => (LD_1, 0),
            (0x8000_0001, _) => (LX1, 0),
            (0x12, _) => (0, O12),
            (0x14, _) => (0, O14),
            (0x1B, _) => (0, O1B),
            _ => (0, 0),
        }
    }

    /// Whether CPUID `leaf` reports any feature of the list, or describes one alone: the only
    /// leaves [`Features::hide`] can change.
    pub const fn in_leaf(leaf: u32) -> bool {
        matches!(leaf, 1 | 7 | 0xD | 0x12 | 0x14 | 0x1B | 0x8000_0001)
    }

    /// Clears the bits of these features in the result `r` of CPUID `leaf`.`subleaf`, and
    /// the whole of a leaf that only describes one of them.
    pub fn hide(self, leaf: u32, subleaf: u32, r: &mut [u32; 4]) {
        let (reported, owned) = Self::at_leaf(leaf, subleaf);
        let mut bits = self.0 & reported;
        while bits != 0 {
            let at = Feature::ALL[bits.trailing_zeros() as usize].location();
            bits &= bits - 1;
            r[at.reg as usize] &= !(1 << at.bit);
        }
        if self.0 & owned != 0 {
            *r = [0; 4];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hiding_by_leaf_agrees_with_each_features_location() {
        // ALL is in discriminant order: bits index it.
        for f in Feature::ALL {
            assert_eq!(Feature::ALL[f as usize], f);
        }
        let leaves = (0..0x40)
            .chain(0x4000_0000..0x4000_0002)
            .chain(0x8000_0000..0x8000_0010);
        for leaf in leaves {
            for subleaf in 0..4 {
                // Each feature alone against its location and own leaf.
                for f in Feature::ALL {
                    let mut r = [u32::MAX; 4];
                    Features::of(&[f]).hide(leaf, subleaf, &mut r);
                    let mut want = [u32::MAX; 4];
                    let at = f.location();
                    if at.matches(leaf, subleaf) {
                        want[at.reg as usize] &= !(1 << at.bit);
                    }
                    if f.own_leaf() == Some(leaf) {
                        want = [0; 4];
                    }
                    assert_eq!(r, want, "{} at {leaf:#x}.{subleaf}", f.name());
                    assert!(r == [u32::MAX; 4] || Features::in_leaf(leaf), "{leaf:#x}");
                }
            }
        }
    }

    #[test]
    fn hiding_clears_the_bit_and_the_features_own_leaf() {
        let hidden = Features::of(&[Feature::Waitpkg, Feature::Sgx, Feature::Rdtscp]);
        let mut r = [u32::MAX; 4];
        hidden.hide(7, 0, &mut r);
        assert_eq!(r[2], !(1 << 5), "WAITPKG in ECX");
        assert_eq!(r[1], !(1 << 2), "SGX in EBX");
        let mut r = [u32::MAX; 4];
        hidden.hide(7, 1, &mut r);
        assert_eq!(r, [u32::MAX; 4], "another subleaf");
        let mut r = [1; 4];
        hidden.hide(0x12, 0, &mut r);
        assert_eq!(r, [0; 4], "SGX's own leaf");
        let mut r = [u32::MAX; 4];
        hidden.hide(0x8000_0001, 0, &mut r);
        assert_eq!(r[3], !(1 << 27));
        assert!(hidden.contains(Feature::Sgx) && !hidden.contains(Feature::Vmx));
        assert_eq!(hidden.iter().count(), 3);
    }
}
