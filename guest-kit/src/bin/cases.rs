//! The transparency suite: every case passes bare and under Vigil; Vigil-specific cases skip
//! when bare. Select cases with `case=NAME[,NAME...]` on the command line (default: all).
//!
//! To add a case, write a `fn() -> Outcome` and add a line to [`CASES`].

#![no_std]
#![no_main]

use guest_kit::cpu::{self, IA32_TSC, IA32_TSC_AUX};
use guest_kit::fault::{self, Caught};
use guest_kit::hypercall::{self, Regs};
use guest_kit::serial::{COM1, SCRATCH};
use guest_kit::{fail, harness, multiboot, pass, skip, timer, BootInfo, Case, Outcome};

guest_kit::entry!(main);

static CASES: &[Case] = &[
    Case::new("cpuid-basic", cpuid_basic),
    Case::new("tsc-monotonic", tsc_monotonic),
    Case::new("rdtscp-aux", rdtscp_aux),
    Case::new("msr-tsc", msr_tsc),
    Case::new("hlt-wakes", hlt_wakes),
    Case::new("io-scratch", io_scratch),
    Case::new("multiboot-mmap", multiboot_mmap),
    Case::new("vmcall-ud", vmcall_ud),
    Case::new("tsc-offset", tsc_offset),
];

fn main(boot: &'static BootInfo) -> ! {
    harness::run(CASES, boot)
}

/// CPUID leaf 0 names a vendor and a maximum leaf >= 1, and leaf 1 reads the same twice.
fn cpuid_basic() -> Outcome {
    let leaf0 = cpu::cpuid(0, 0);
    let vendor = cpu::vendor(&leaf0);
    let Ok(vendor) = core::str::from_utf8(&vendor) else {
        return fail!(
            "vendor-not-ascii ebx={:#x} edx={:#x} ecx={:#x}",
            leaf0.ebx,
            leaf0.edx,
            leaf0.ecx
        );
    };
    if vendor.trim_matches('\0').trim().is_empty()
        || !vendor.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return fail!(
            "vendor-invalid ebx={:#x} edx={:#x} ecx={:#x}",
            leaf0.ebx,
            leaf0.edx,
            leaf0.ecx
        );
    }
    if leaf0.eax < 1 {
        return fail!("no-leaf-1 max_leaf={:#x}", leaf0.eax);
    }
    let first = cpu::cpuid(1, 0);
    let second = cpu::cpuid(1, 0);
    if first != second {
        return fail!(
            "leaf1-differs first={:#x}/{:#x}/{:#x}/{:#x} second={:#x}/{:#x}/{:#x}/{:#x}",
            first.eax,
            first.ebx,
            first.ecx,
            first.edx,
            second.eax,
            second.ebx,
            second.ecx,
            second.edx
        );
    }
    pass!(
        "vendor={} max_leaf={:#x} leaf1_eax={:#x}",
        vendor,
        leaf0.eax,
        first.eax
    )
}

/// 1000 consecutive RDTSCs never go backwards (SDM Vol. 3B, "Time-Stamp Counter": the TSC
/// only increments, and a hypervisor's offset or emulation must keep it so).
fn tsc_monotonic() -> Outcome {
    const READS: u32 = 1000;
    let first = cpu::rdtsc();
    let mut previous = first;
    for i in 1..READS {
        let now = cpu::rdtsc();
        if now < previous {
            return fail!(
                "went-backwards read={} previous={:#x} now={:#x}",
                i,
                previous,
                now
            );
        }
        previous = now;
    }
    pass!("reads={} span={}", READS, previous - first)
}

/// RDTSCP returns IA32_TSC_AUX in ECX (SDM Vol. 2B, RDTSCP), both as found and after writing a
/// new value.
fn rdtscp_aux() -> Outcome {
    if !cpu::has_rdtscp() {
        return skip!("no-rdtscp");
    }
    let original = match fault::try_rdmsr(IA32_TSC_AUX) {
        Ok(v) => v,
        Err(c) => return fail!("rdmsr-tsc-aux-faulted vector={}", c.vector),
    };
    let (_, aux) = cpu::rdtscp();
    if u64::from(aux) != original {
        return fail!("aux-mismatch rdtscp_ecx={:#x} msr={:#x}", aux, original);
    }
    // IA32_TSC_AUX bits 63:32 are reserved (SDM Vol. 4, table 2-2): write a 32-bit pattern.
    const PATTERN: u64 = 0x00C0_FFEE;
    if let Err(c) = unsafe { fault::try_wrmsr(IA32_TSC_AUX, PATTERN) } {
        return fail!("wrmsr-tsc-aux-faulted vector={}", c.vector);
    }
    let (_, written_aux) = cpu::rdtscp();
    let written_msr = fault::try_rdmsr(IA32_TSC_AUX);
    let restored = unsafe { fault::try_wrmsr(IA32_TSC_AUX, original) };
    if u64::from(written_aux) != PATTERN || written_msr != Ok(PATTERN) {
        return fail!(
            "aux-write-not-seen wrote={:#x} rdtscp_ecx={:#x} msr={:?}",
            PATTERN,
            written_aux,
            written_msr.ok()
        );
    }
    if restored.is_err() {
        return fail!("aux-restore-faulted");
    }
    pass!("aux={:#x} written={:#x}", original, PATTERN)
}

/// RDMSR(IA32_TSC) lies between two RDTSCs: the MSR and the instruction read one counter (SDM
/// Vol. 3B, "Time-Stamp Counter"; with TSC offsetting both are offset, SDM Vol. 3C, "Time-Stamp
/// Counter Offset and Multiplier").
fn msr_tsc() -> Outcome {
    let before = cpu::rdtsc();
    let msr = match fault::try_rdmsr(IA32_TSC) {
        Ok(v) => v,
        Err(c) => return fail!("rdmsr-faulted vector={}", c.vector),
    };
    let after = cpu::rdtsc();
    if !(before <= msr && msr <= after) {
        return fail!(
            "out-of-order before={:#x} msr={:#x} after={:#x}",
            before,
            msr,
            after
        );
    }
    pass!("before={:#x} msr={:#x} after={:#x}", before, msr, after)
}

/// A one-shot PIT interrupt wakes `sti; hlt`. Bare, one HLT is enough; `hlts` shows a
/// hypervisor whose HLT returns before the interrupt (the bound only keeps such a one from
/// looping forever; one whose HLT never returns shows up as a run timeout).
fn hlt_wakes() -> Outcome {
    let wake = timer::hlt_until_tick(1000, 100_000);
    if !wake.woke {
        return fail!(
            "no-timer-interrupt hlts={} tsc_delta={}",
            wake.hlts,
            wake.tsc_delta
        );
    }
    pass!("hlts={} tsc_delta={}", wake.hlts, wake.tsc_delta)
}

/// Port 0x80 accepts a write, and COM1's scratch register keeps what was written to it.
fn io_scratch() -> Outcome {
    let port = COM1 + SCRATCH;
    unsafe {
        cpu::outb(0x80, 0x42);
        let original = cpu::inb(port);
        for pattern in [0x5A_u8, 0xA5, 0x00, 0xFF] {
            cpu::outb(port, pattern);
            let read = cpu::inb(port);
            if read != pattern {
                cpu::outb(port, original);
                return fail!(
                    "scratch-mismatch port={:#x} wrote={:#x} read={:#x}",
                    port,
                    pattern,
                    read
                );
            }
        }
        cpu::outb(port, original);
    }
    pass!("port={:#x} patterns=4", port)
}

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// The loader's memory map exists and says the memory holding this image is available RAM.
fn multiboot_mmap() -> Outcome {
    let Some(boot) = guest_kit::boot_info() else {
        return fail!("no-boot-info");
    };
    let Some(map) = boot.memory_map() else {
        return fail!("no-memory-map flags={:#x}", boot.flags);
    };
    let start = core::ptr::addr_of!(__image_start) as u64;
    let end = core::ptr::addr_of!(__image_end) as u64;
    let (mut regions, mut available_kib, mut covered) = (0u32, 0u64, false);
    for region in map {
        regions += 1;
        if region.kind == multiboot::MEMORY_AVAILABLE {
            available_kib += region.length / 1024;
            covered |= region.base <= start && end <= region.end();
        }
    }
    if regions == 0 {
        return fail!("empty-memory-map");
    }
    if !covered {
        return fail!(
            "image-not-in-available-ram image={:#x}-{:#x} regions={}",
            start,
            end,
            regions
        );
    }
    pass!(
        "regions={} available_kib={} image={:#x}-{:#x}",
        regions,
        available_kib,
        start,
        end
    )
}

/// A VMCALL that is not a Vigil hypercall raises #UD, exactly as without a hypervisor (docs/
/// architecture.md, "Hypercall ABI"; SDM Vol. 3C, VMCALL: outside VMX operation it is #UD).
fn vmcall_ud() -> Outcome {
    match hypercall::vmcall(Regs {
        rax: 0,
        rbx: 0,
        rcx: 0,
        rdx: 0,
    }) {
        Err(Caught { vector, rip, .. }) if vector == fault::UD => pass!("rip={:#x}", rip),
        Err(c) => fail!("wrong-exception vector={}", c.vector),
        Ok(r) => fail!(
            "vmcall-returned rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x}",
            r.rax,
            r.rbx,
            r.rcx,
            r.rdx
        ),
    }
}

/// Vigil only: with a TSC offset configured, the guest's RDTSC value is at least the offset and
/// Vigil confirms it returned exactly that value.
fn tsc_offset() -> Outcome {
    let observed = cpu::rdtsc();
    if !hypercall::vigil_present() {
        return skip!("no-hypervisor");
    }
    let (offset, intercepted) = match hypercall::tsc_offset() {
        Ok(o) => o,
        Err(e) => return fail!("tsc-offset-hypercall error={}", e),
    };
    if offset == 0 {
        return skip!("no-tsc-offset");
    }
    if observed < offset {
        return fail!("below-offset observed={:#x} offset={:#x}", observed, offset);
    }
    if !intercepted {
        // The processor applies the offset (VMCS TSC offsetting): nothing to confirm.
        return pass!(
            "observed={:#x} offset={:#x} intercepted=no",
            observed,
            offset
        );
    }
    match hypercall::confirm_tsc(observed) {
        Ok(true) => pass!(
            "observed={:#x} offset={:#x} intercepted=yes",
            observed,
            offset
        ),
        Ok(false) => fail!(
            "not-confirmed observed={:#x} offset={:#x}",
            observed,
            offset
        ),
        Err(e) => fail!("confirm-tsc-hypercall error={} observed={:#x}", e, observed),
    }
}
