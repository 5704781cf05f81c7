//! Vigil's demo guest: prints what it observes of the instructions a hypervisor may trap, one line
//! each with values, then the summary. Each observation is also a sanity check; a check that
//! fails prints a `FAIL demo-<what>` line and counts in the summary.

#![no_std]
#![no_main]

use guest_kit::cpu::{self, IA32_APIC_BASE, IA32_TSC, IA32_TSC_AUX};
use guest_kit::serial::{COM1, SCRATCH};
use guest_kit::{fail, fault, harness, hypercall, pass, println, timer, BootInfo};

guest_kit::entry!(main);

fn main(boot: &'static BootInfo) -> ! {
    println!(
        "guest-kit demo {}: multiboot1 guest in 64-bit mode",
        env!("CARGO_PKG_VERSION")
    );
    println!("cmdline: \"{}\"", boot.cmdline());
    memory(boot);
    cpuid();
    rdtsc();
    rdtscp();
    msrs();
    io();
    hlt();
    vmcall();
    harness::finish()
}

fn check(name: &str, ok: bool, why: core::fmt::Arguments) {
    let outcome = if ok { pass!() } else { fail!("{}", why) };
    harness::tally(name, &outcome);
}

fn memory(boot: &BootInfo) {
    let (mut regions, mut available_kib) = (0u32, 0u64);
    for region in boot.memory_map().into_iter().flatten() {
        regions += 1;
        if region.available() {
            available_kib += region.length / 1024;
        }
    }
    println!(
        "memory: regions={} available_kib={}",
        regions, available_kib
    );
}

fn cpuid() {
    let leaf0 = cpu::cpuid(0, 0);
    let vendor = cpu::vendor(&leaf0);
    let vendor = core::str::from_utf8(&vendor).unwrap_or("?");
    println!("cpuid 0: vendor=\"{}\" max_leaf={:#x}", vendor, leaf0.eax);
    let leaf1 = cpu::cpuid(1, 0);
    println!(
        "cpuid 1: eax={:#010x} ecx={:#010x} edx={:#010x}",
        leaf1.eax, leaf1.ecx, leaf1.edx
    );
    check(
        "demo-cpuid",
        leaf0.eax >= 1 && !vendor.trim_matches('\0').is_empty(),
        format_args!("empty-vendor"),
    );
}

fn rdtsc() {
    let first = cpu::rdtsc();
    let second = cpu::rdtsc();
    println!(
        "rdtsc: first={:#x} second={:#x} delta={}",
        first,
        second,
        second.wrapping_sub(first)
    );
    check(
        "demo-rdtsc",
        second > first,
        format_args!("not-increasing first={:#x} second={:#x}", first, second),
    );
}

fn rdtscp() {
    if !cpu::has_rdtscp() {
        println!("rdtscp: not supported (CPUID.80000001H:EDX[27] = 0)");
        return;
    }
    let (tsc, aux) = cpu::rdtscp();
    println!("rdtscp: tsc={:#x} aux={:#x}", tsc, aux);
    let msr = fault::try_rdmsr(IA32_TSC_AUX);
    check(
        "demo-rdtscp",
        msr == Ok(u64::from(aux)),
        format_args!("aux-mismatch ecx={:#x} msr={:?}", aux, msr.ok()),
    );
}

fn msrs() {
    for (name, msr) in [("IA32_TSC", IA32_TSC), ("IA32_APIC_BASE", IA32_APIC_BASE)] {
        match fault::try_rdmsr(msr) {
            Ok(value) => println!("rdmsr {:#x} {}: {:#x}", msr, name, value),
            Err(c) => println!("rdmsr {:#x} {}: fault #{}", msr, name, c.vector),
        }
    }
    let ok = fault::try_rdmsr(IA32_TSC).is_ok() && fault::try_rdmsr(IA32_APIC_BASE).is_ok();
    check("demo-rdmsr", ok, format_args!("rdmsr-faulted"));
}

fn io() {
    let port = COM1 + SCRATCH;
    let read = unsafe {
        cpu::outb(0x80, 0x42);
        let original = cpu::inb(port);
        cpu::outb(port, 0x5A);
        let read = cpu::inb(port);
        cpu::outb(port, original);
        read
    };
    println!(
        "io: out 0x80 done; scratch {:#x} wrote=0x5a read={:#04x}",
        port, read
    );
    check(
        "demo-io",
        read == 0x5A,
        format_args!("scratch-mismatch read={:#x}", read),
    );
}

fn hlt() {
    let wake = timer::hlt_until_tick(1000, 100_000);
    if wake.woke {
        println!(
            "hlt: woken by PIT IRQ0 after {} hlt(s), tsc_delta={}",
            wake.hlts, wake.tsc_delta
        );
    } else {
        println!("hlt: not woken by PIT after {} hlt(s)", wake.hlts);
    }
    check(
        "demo-hlt",
        wake.woke,
        format_args!("no-timer-interrupt hlts={}", wake.hlts),
    );
}

fn vmcall() {
    match hypercall::ping() {
        Ok(version) => println!("vmcall: vigil present, version {}", version),
        Err(hypercall::Error::NoHypervisor(_)) => {
            println!("vmcall: #UD (no hypervisor)");
            return;
        }
        Err(e) => {
            println!("vmcall: unexpected answer {}", e);
            check("demo-vmcall", false, format_args!("bad-ping error={}", e));
            return;
        }
    }
    // Read the TSC first: confirm-tsc compares with the last value Vigil's RDTSC returned.
    let observed = cpu::rdtsc();
    match hypercall::tsc_offset() {
        Ok((0, _)) => println!("tsc: no offset configured"),
        Ok((offset, intercepted)) => {
            // Only an intercepted RDTSC can be confirmed value for value; otherwise the
            // processor applied the offset and the value's size is the evidence.
            let confirmed = !intercepted || hypercall::confirm_tsc(observed) == Ok(true);
            let looks = observed >= offset && confirmed;
            println!(
                "tsc: offset={:#x} rdtsc={:#x} intercepted={} confirmed={} -> rdtsc {}",
                offset,
                observed,
                intercepted,
                confirmed,
                if looks {
                    "looks virtualized"
                } else {
                    "does not look virtualized"
                }
            );
            check(
                "demo-tsc-offset",
                looks,
                format_args!(
                    "not-virtualized observed={:#x} offset={:#x}",
                    observed, offset
                ),
            );
        }
        Err(e) => {
            println!("tsc: offset hypercall failed: {}", e);
            check(
                "demo-tsc-offset",
                false,
                format_args!("hypercall error={}", e),
            );
        }
    }
}
