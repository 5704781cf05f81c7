//! What a processor's SVM offers: CPUID Fn8000_0001 ECX[2] says SVM exists, Fn8000_000A gives
//! its revision, the number of ASIDs and the optional features (APM Vol. 2 15.4; the CPUID
//! Specification). Vigil needs nested paging; every other feature has a fallback, and
//! [`SvmCaps::missing`] says in a sentence what happens without each.

use bitflags::bitflags;
use core::fmt;

bitflags! {
    /// CPUID Fn8000_000A EDX.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Features: u32 {
        /// Nested paging (15.25).
        const NP = 1 << 0;
        /// LBR virtualization (15.23).
        const LBR_VIRT = 1 << 1;
        /// The SVM lock (VM_CR.LOCK with a key, 15.31).
        const SVM_LOCK = 1 << 2;
        /// NRIP save: nRIP holds the next instruction's address after an instruction
        /// intercept (15.7.1).
        const NRIPS = 1 << 3;
        /// The TSC_RATIO MSR (15.30.5).
        const TSC_RATE_MSR = 1 << 4;
        /// VMCB clean bits (15.15.3).
        const VMCB_CLEAN = 1 << 5;
        /// TLB_CONTROL values 3 and 7 (15.16.2).
        const FLUSH_BY_ASID = 1 << 6;
        /// Decode assists: operands and instruction bytes in EXITINFO1 and the VMCB (15.33).
        const DECODE_ASSISTS = 1 << 7;
        /// The PAUSE filter count (15.14.4).
        const PAUSE_FILTER = 1 << 10;
        const PAUSE_FILTER_THRESHOLD = 1 << 12;
        /// The advanced virtual interrupt controller (15.29).
        const AVIC = 1 << 13;
        const VMSAVE_VIRT = 1 << 15;
        const VGIF = 1 << 16;
        const GMET = 1 << 17;
        const X2AVIC = 1 << 18;
        const SSS_CHECK = 1 << 19;
        const SPEC_CTRL = 1 << 20;
        const ROGPT = 1 << 21;
        const HOST_MCE_OVERRIDE = 1 << 23;
        const TLBI_CTL = 1 << 24;
        const VNMI = 1 << 25;
        const IBS_VIRT = 1 << 26;
    }
}

/// The vendor strings of processors that implement AMD's SVM.
pub const SVM_VENDORS: [&[u8; 12]; 2] = [b"AuthenticAMD", b"HygonGenuine"];

/// SVM's identification and features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvmCaps {
    /// Fn8000_000A EAX[7:0].
    pub revision: u8,
    /// Fn8000_000A EBX: how many ASIDs (ASID 0 is the host's, so guests get 1..n-1).
    pub asids: u32,
    pub features: Features,
}

/// Why a processor cannot run Vigil's SVM backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoSvm {
    /// Not an AMD (or Hygon) processor: SVM is looked for only there.
    Vendor,
    /// CPUID Fn8000_0001 ECX[2] is clear.
    NotReported,
    /// VM_CR.SVMDIS is set: the firmware disabled SVM (15.30.1).
    DisabledByFirmware,
    /// SVM without nested paging: Vigil isolates its memory only with nested page tables.
    NoNestedPaging,
}

impl fmt::Display for NoSvm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoSvm::Vendor => "not an AMD processor",
            NoSvm::NotReported => "this processor has no SVM (CPUID Fn8000_0001 ECX.SVM = 0)",
            NoSvm::DisabledByFirmware => {
                "SVM is disabled by the firmware (VM_CR.SVMDIS = 1, APM Vol. 2 15.30.1)"
            }
            NoSvm::NoNestedPaging => {
                "this processor's SVM has no nested paging (CPUID Fn8000_000A EDX.NP = 0), which \
                 Vigil requires to keep its memory from the guest"
            }
        })
    }
}

impl SvmCaps {
    /// Reads the SVM leaves through `cpuid(leaf, subleaf) -> [eax, ebx, ecx, edx]`. `Err` says
    /// why this processor has no usable SVM (the firmware's VM_CR is the caller's to check).
    pub fn from_cpuid(cpuid: &mut dyn FnMut(u32, u32) -> [u32; 4]) -> Result<SvmCaps, NoSvm> {
        let v = cpuid(0, 0);
        let mut vendor = [0u8; 12];
        for (i, reg) in [v[1], v[3], v[2]].iter().enumerate() {
            vendor[i * 4..i * 4 + 4].copy_from_slice(&reg.to_le_bytes());
        }
        if !SVM_VENDORS.contains(&&vendor) {
            return Err(NoSvm::Vendor);
        }
        let max_ext = cpuid(0x8000_0000, 0)[0];
        if max_ext < 0x8000_000A || cpuid(0x8000_0001, 0)[2] & (1 << 2) == 0 {
            return Err(NoSvm::NotReported);
        }
        let a = cpuid(0x8000_000A, 0);
        Ok(SvmCaps {
            revision: a[0] as u8,
            asids: a[1],
            features: Features::from_bits_retain(a[3]),
        })
    }

    pub fn has(&self, f: Features) -> bool {
        self.features.contains(f)
    }

    /// Refuses a processor Vigil cannot use.
    pub fn usable(&self) -> Result<(), NoSvm> {
        if self.has(Features::NP) {
            Ok(())
        } else {
            Err(NoSvm::NoNestedPaging)
        }
    }

    /// For each optional feature this processor lacks, what Vigil does instead.
    pub fn missing(&self) -> impl Iterator<Item = &'static str> + '_ {
        FALLBACKS
            .iter()
            .filter(|(f, _)| !self.has(*f))
            .map(|(_, why)| *why)
    }
}

/// The features a hypervisor may do without, and the fallback.
const FALLBACKS: [(Features, &str); 5] = [
    (
        Features::NRIPS,
        "no NRIP save: the length of each intercepted instruction is decoded from its bytes",
    ),
    (
        Features::DECODE_ASSISTS,
        "no decode assists: operands of intercepted MOV CR, MOV DR, INVLPG and string I/O are \
         decoded from the instruction's bytes",
    ),
    (
        Features::FLUSH_BY_ASID,
        "no flush by ASID: a guest TLB flush flushes every ASID",
    ),
    (
        Features::TSC_RATE_MSR,
        "no TSC ratio MSR: tsc=scale is emulated by intercepting RDTSC and RDTSCP",
    ),
    (
        Features::VMCB_CLEAN,
        "no VMCB clean bits: the processor reloads the whole VMCB at every VMRUN (as Vigil \
         asks anyway)",
    ),
];

impl fmt::Display for SvmCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SVM revision {}, {} ASIDs, features {:#x}",
            self.revision,
            self.asids,
            self.features.bits()
        )?;
        for (flag, name) in [
            (Features::NP, "NPT"),
            (Features::NRIPS, "NRIPS"),
            (Features::FLUSH_BY_ASID, "flush-by-ASID"),
            (Features::DECODE_ASSISTS, "decode-assists"),
            (Features::TSC_RATE_MSR, "TSC-ratio"),
            (Features::VMCB_CLEAN, "clean-bits"),
            (Features::PAUSE_FILTER, "pause-filter"),
            (Features::AVIC, "AVIC"),
        ] {
            if self.has(flag) {
                write!(f, " {name}")?;
            }
        }
        Ok(())
    }
}

/// CPUID values of the emulated processors Vigil is tested on, as their models define them.
#[cfg(test)]
pub(crate) mod models {
    /// Bochs 3.0, `ryzen` (cpu/cpudb/amd/ryzen.cc): SVM revision 1, 32768 ASIDs, NP, LBR
    /// virtualization, SVM lock, NRIPS, flush by ASID, pause filter.
    pub const BOCHS_RYZEN_8000_000A: [u32; 4] = [0x1, 0x8000, 0, 0x44F];
    /// QEMU 7.2 TCG with `+svm`: nested paging, virtual GIF and the SVME address check; no
    /// NRIPS.
    pub const QEMU_TCG_8000_000A: [u32; 4] = [0x1, 0x10, 0, 0x1_0001 | (1 << 28)];
}

#[cfg(test)]
mod tests {
    use super::models::*;
    use super::*;

    fn cpu(
        vendor: &[u8; 12],
        svm_leaf: [u32; 4],
        svm_bit: bool,
    ) -> impl FnMut(u32, u32) -> [u32; 4] {
        let word = |i: usize| u32::from_le_bytes(vendor[i..i + 4].try_into().unwrap());
        let (b, d, c) = (word(0), word(4), word(8));
        move |leaf, _| match leaf {
            0 => [0xD, b, c, d],
            0x8000_0000 => [0x8000_001F, 0, 0, 0],
            0x8000_0001 => [0, 0, if svm_bit { 1 << 2 } else { 0 }, 0],
            0x8000_000A => svm_leaf,
            _ => [0; 4],
        }
    }

    #[test]
    fn bochs_ryzen_has_what_its_model_lists() {
        let caps =
            SvmCaps::from_cpuid(&mut cpu(b"AuthenticAMD", BOCHS_RYZEN_8000_000A, true)).unwrap();
        assert_eq!(caps.revision, 1);
        assert_eq!(caps.asids, 0x8000);
        for f in [
            Features::NP,
            Features::NRIPS,
            Features::FLUSH_BY_ASID,
            Features::PAUSE_FILTER,
        ] {
            assert!(caps.has(f), "{f:?}");
        }
        for f in [
            Features::TSC_RATE_MSR,
            Features::VMCB_CLEAN,
            Features::DECODE_ASSISTS,
            Features::AVIC,
        ] {
            assert!(!caps.has(f), "{f:?}");
        }
        assert!(caps.usable().is_ok());
        let missing: alloc::vec::Vec<&str> = caps.missing().collect();
        assert_eq!(missing.len(), 3, "{missing:?}");
        assert!(missing.iter().any(|m| m.contains("tsc=scale is emulated")));
        assert!(!missing.iter().any(|m| m.contains("NRIP")));
    }

    #[test]
    fn qemu_tcg_lacks_nrips_and_says_what_happens_instead() {
        let caps =
            SvmCaps::from_cpuid(&mut cpu(b"AuthenticAMD", QEMU_TCG_8000_000A, true)).unwrap();
        assert!(caps.has(Features::NP) && !caps.has(Features::NRIPS));
        assert!(caps.missing().any(|m| m.starts_with("no NRIP save")));
    }

    #[test]
    fn refusals_name_the_reason() {
        assert_eq!(
            SvmCaps::from_cpuid(&mut cpu(b"GenuineIntel", BOCHS_RYZEN_8000_000A, true)),
            Err(NoSvm::Vendor)
        );
        assert_eq!(
            SvmCaps::from_cpuid(&mut cpu(b"AuthenticAMD", BOCHS_RYZEN_8000_000A, false)),
            Err(NoSvm::NotReported)
        );
        let no_np = SvmCaps::from_cpuid(&mut cpu(b"HygonGenuine", [1, 8, 0, 0x8], true)).unwrap();
        assert_eq!(no_np.usable(), Err(NoSvm::NoNestedPaging));
        assert!(alloc::format!("{}", NoSvm::NoNestedPaging).contains("nested paging"));
    }
}
