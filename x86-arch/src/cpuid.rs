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

    /// Clears the bits of these features in the result `r` of CPUID `leaf`.`subleaf`, and
    /// the whole of a leaf that only describes one of them.
    pub fn hide(self, leaf: u32, subleaf: u32, r: &mut [u32; 4]) {
        for f in self.iter() {
            let at = f.location();
            if at.matches(leaf, subleaf) {
                r[at.reg as usize] &= !(1 << at.bit);
            }
            if f.own_leaf() == Some(leaf) {
                *r = [0; 4];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
