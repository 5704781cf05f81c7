//! The transparency suite: every case passes bare and under Vigil; Vigil-specific cases skip
//! when bare. Select cases with `case=NAME[,NAME...]` on the command line (default: all).
//!
//! To add a case, write a `fn() -> Outcome` and add a line to [`CASES`].

#![no_std]
#![no_main]

use core::arch::asm;
use guest_kit::cpu::{self, IA32_TSC, IA32_TSC_AUX};
use guest_kit::fault::{self, Caught};
use guest_kit::hypercall::{self, Regs, TscMode, VigilRange};
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
    Case::new("io-string", io_string),
    Case::new("multiboot-mmap", multiboot_mmap),
    Case::new("vmcall-ud", vmcall_ud),
    Case::new("tsc-offset", tsc_offset),
    Case::new("tsc-monotonic-exits", tsc_monotonic_exits),
    Case::new("pafish", pafish),
    Case::new("tsc-rate", tsc_rate),
    Case::new("tsc-hold", tsc_hold),
    Case::new("tsc-offset-exact", tsc_offset_exact),
    Case::new("isolation", isolation),
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

/// REP OUTSB and REP INSB through COM1's scratch register (SDM Vol. 2B OUTS/INS): the register
/// keeps the last byte written, so after `rep outsb` of a buffer it holds the buffer's last
/// byte, and `rep insb` of it fills memory with that byte. Also run backwards (DF = 1), where
/// RSI/RDI walk down. RSI, RDI and RCX must end where the instructions leave them.
fn io_string() -> Outcome {
    let port = COM1 + SCRATCH;
    let out: [u8; 5] = [0x11, 0x22, 0x33, 0x44, 0x5A];
    let mut back = [0u8; 8];
    let (rsi, rdi, rcx_out, rcx_in): (u64, u64, u64, u64);
    // SAFETY: the buffers are this function's; the port is COM1's scratch register.
    unsafe {
        let original = cpu::inb(port);
        core::arch::asm!(
            "cld",
            "rep outsb",
            "mov {rcx_out}, rcx",
            "mov rcx, 8",
            "rep insb",
            rcx_out = out(reg) rcx_out,
            inout("rsi") out.as_ptr() => rsi,
            inout("rdi") back.as_mut_ptr() => rdi,
            inout("rcx") out.len() => rcx_in,
            in("dx") port,
            options(nostack)
        );
        cpu::outb(port, original);
    }
    let ends_ok = rsi == out.as_ptr() as u64 + 5 && rdi == back.as_ptr() as u64 + 8;
    if !ends_ok || rcx_out != 0 || rcx_in != 0 || back != [0x5A; 8] {
        return fail!(
            "string-io rsi_off={} rdi_off={} rcx={}/{} back={:02x?}",
            rsi.wrapping_sub(out.as_ptr() as u64),
            rdi.wrapping_sub(back.as_ptr() as u64),
            rcx_out,
            rcx_in,
            back
        );
    }
    // Backwards: OUTSB from the last element down leaves the first element in the register.
    let mut back2 = [0u8; 3];
    let (rsi2, rdi2): (u64, u64);
    // SAFETY: as above; DF is cleared again before the block ends.
    unsafe {
        let original = cpu::inb(port);
        core::arch::asm!(
            "std",
            "mov rcx, 5",
            "rep outsb",
            "mov rcx, 3",
            "rep insb",
            "cld",
            inout("rsi") out.as_ptr().add(4) => rsi2,
            inout("rdi") back2.as_mut_ptr().add(2) => rdi2,
            out("rcx") _,
            in("dx") port,
            options(nostack)
        );
        cpu::outb(port, original);
    }
    if back2 != [0x11; 3]
        || rsi2 != (out.as_ptr() as u64).wrapping_sub(1)
        || rdi2 != (back2.as_ptr() as u64).wrapping_sub(1)
    {
        return fail!("string-io-backwards back={:02x?}", back2);
    }
    pass!("port={:#x} out=5 in=8 backwards=3", port)
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
///
/// The "at least" holds only for a configured offset that is positive: a negative one (two's
/// complement) wraps, and in modes hide, frozen and scale the offset is Vigil's running
/// correction, normally negative. Confirmation applies whenever Vigil intercepts RDTSC.
fn tsc_offset() -> Outcome {
    let observed = cpu::rdtsc();
    if !hypercall::vigil_present() {
        return skip!("no-hypervisor");
    }
    let info = match hypercall::tsc_info() {
        Ok(info) => info,
        Err(e) => return fail!("tsc-offset-hypercall error={}", e),
    };
    let (offset, mode) = (info.offset, info.mode);
    let configured = matches!(mode, TscMode::Native | TscMode::Offset);
    if configured && offset == 0 {
        return skip!("no-tsc-offset");
    }
    if configured && (offset as i64) >= 0 && observed < offset {
        return fail!(
            "below-offset observed={:#x} offset={:#x} mode={}",
            observed,
            offset,
            mode
        );
    }
    if !info.intercepted {
        // The processor applies the offset (VMCS TSC offsetting): nothing to confirm.
        return pass!(
            "observed={:#x} offset={:#x} intercepted=no mode={}",
            observed,
            offset,
            mode
        );
    }
    match hypercall::confirm_tsc(observed) {
        Ok(true) => pass!(
            "observed={:#x} offset={:#x} intercepted=yes mode={}",
            observed,
            offset,
            mode
        ),
        Ok(false) => fail!(
            "not-confirmed observed={:#x} offset={:#x} mode={}",
            observed,
            offset,
            mode
        ),
        Err(e) => fail!("confirm-tsc-hypercall error={} observed={:#x}", e, observed),
    }
}

/// RDTSC, CPUID (which always exits under VMX, SDM Vol. 3C, "Instructions That Cause VM Exits
/// Unconditionally"), RDTSC, RDMSR(IA32_TSC), 200 times: the TSC never goes backwards across VM
/// exits, and the MSR reads the same counter as RDTSC (SDM Vol. 3B, "Time-Stamp Counter"; with
/// TSC offsetting both are offset, SDM Vol. 3C, "Time-Stamp Counter Offset and Multiplier").
fn tsc_monotonic_exits() -> Outcome {
    const ITERATIONS: u32 = 200;
    let first = cpu::rdtsc();
    let mut previous = first;
    let mut max_cpuid = 0;
    for i in 0..ITERATIONS {
        let before = cpu::rdtsc();
        let _ = cpu::cpuid(0, 0);
        let after = cpu::rdtsc();
        // IA32_TSC exists on every processor with a TSC (SDM Vol. 4, table 2-2).
        let msr = unsafe { cpu::rdmsr(IA32_TSC) };
        if !(previous <= before && before <= after && after <= msr) {
            return fail!(
                "went-backwards iteration={} previous={:#x} rdtsc={:#x} after_cpuid={:#x} msr={:#x}",
                i,
                previous,
                before,
                after,
                msr
            );
        }
        max_cpuid = max_cpuid.max(after - before);
        previous = msr;
    }
    pass!(
        "iterations={} span={} max_cpuid={}",
        ITERATIONS,
        previous - first,
        max_cpuid
    )
}

/// `rdtsc; cpuid; rdtsc` (EAX = 0), TSC ticks between the two reads.
fn rdtsc_cpuid_rdtsc() -> u64 {
    let (start, end): (u64, u64);
    unsafe {
        asm!(
            // LLVM reserves RBX, which CPUID writes.
            "mov {saved_rbx}, rbx",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov {start}, rax",
            "xor eax, eax",
            "cpuid",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov rbx, {saved_rbx}",
            saved_rbx = out(reg) _,
            start = out(reg) start,
            out("rax") end,
            out("rcx") _,
            out("rdx") _,
            options(nostack)
        );
    }
    end.wrapping_sub(start)
}

/// `rdtsc; rdtsc`, TSC ticks between the two reads.
fn rdtsc_rdtsc() -> u64 {
    let (start, end): (u64, u64);
    unsafe {
        asm!(
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov {start}, rax",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            start = out(reg) start,
            out("rax") end,
            out("rdx") _,
            options(nomem, nostack)
        );
    }
    end.wrapping_sub(start)
}

/// pafish's "RDTSC forcing a VM exit" check: CPUID exits unconditionally under VMX, so a
/// hypervisor that does not hide its exit time makes `rdtsc; cpuid; rdtsc` slow. pafish calls an
/// average of 1000 ticks or more a VM; so does this case.
fn pafish() -> Outcome {
    const ROUNDS: u64 = 100;
    const VM_THRESHOLD: u64 = 1000;
    let (mut sum_cpuid, mut min_cpuid, mut max_cpuid) = (0u64, u64::MAX, 0u64);
    for _ in 0..ROUNDS {
        let d = rdtsc_cpuid_rdtsc();
        sum_cpuid = sum_cpuid.saturating_add(d);
        min_cpuid = min_cpuid.min(d);
        max_cpuid = max_cpuid.max(d);
    }
    let sum_rdtsc = (0..ROUNDS).fold(0u64, |sum, _| sum.saturating_add(rdtsc_rdtsc()));
    let (avg_cpuid, avg_rdtsc) = (sum_cpuid / ROUNDS, sum_rdtsc / ROUNDS);
    if avg_cpuid >= VM_THRESHOLD {
        return fail!(
            "looks-virtualized avg_cpuid={} avg_rdtsc={} min_cpuid={} max_cpuid={}",
            avg_cpuid,
            avg_rdtsc,
            min_cpuid,
            max_cpuid
        );
    }
    pass!(
        "avg_cpuid={} avg_rdtsc={} min_cpuid={} max_cpuid={}",
        avg_cpuid,
        avg_rdtsc,
        min_cpuid,
        max_cpuid
    )
}

/// TSC ticks per PIT input clock, measured twice over 20 ms of PIT channel 2; the two must agree
/// within 1 %. Polling PIT channel 2 takes no VM exit (Vigil leaves the PIT to the guest), so
/// this runs the same bare and virtualized. In Bochs with `clock: sync=none` both the PIT and
/// the TSC follow emulated instructions, so the rate is ips / 1193182.
fn tsc_rate() -> Outcome {
    // 20 periods of 1 ms (1193 input clocks each).
    const PIT_TICKS: u16 = 20 * 1193;
    // About 100 times the polls 20 ms need in Bochs; only a PIT that never counts reaches it.
    const MAX_POLLS: u64 = 20_000_000;
    let mut rates = [0u64; 2];
    let mut total_delta = 0u64;
    for rate in rates.iter_mut() {
        let Some(t) = timer::time_channel2(PIT_TICKS, MAX_POLLS) else {
            return fail!("pit-channel2-out-stays-low polls={}", MAX_POLLS);
        };
        *rate = t.tsc_delta * 1000 / u64::from(PIT_TICKS);
        total_delta += t.tsc_delta;
    }
    let [first, second] = rates;
    let rate = total_delta * 1000 / (2 * u64::from(PIT_TICKS));
    if first == 0 || second == 0 {
        return fail!(
            "tsc-not-advancing first_x1000={} second_x1000={}",
            first,
            second
        );
    }
    // |first - second| <= 1 % of the larger.
    if first.abs_diff(second) * 100 > first.max(second) {
        return fail!(
            "rate-unstable first_x1000={} second_x1000={} pit_ticks={}",
            first,
            second,
            PIT_TICKS
        );
    }
    pass!(
        "tsc_per_pit_x1000={} pit_ticks={} tsc_delta={} first_x1000={} second_x1000={}",
        rate,
        2 * u64::from(PIT_TICKS),
        total_delta,
        first,
        second
    )
}

/// The guest TSC delta across a `hold` hypercall of `ticks`.
fn held_delta(ticks: u32) -> Result<u64, hypercall::Error> {
    let start = cpu::rdtsc();
    let held = hypercall::hold(ticks);
    let end = cpu::rdtsc();
    held.map(|()| end.wrapping_sub(start))
}

/// Vigil only: does a hold (Vigil keeping the guest stopped, as a debugger would) show in the
/// guest's TSC? In modes hide and frozen it must not: a hold of 2^24 ticks reads like a hold of
/// 0. In native and offset mode the guest TSC is the host's plus a constant, so the hold shows.
/// Scale mode only reports the deltas.
fn tsc_hold() -> Outcome {
    const HOLD: u32 = 1 << 24;
    // Identical instruction streams make equal deltas in Bochs; allow for a different rounding.
    const SLACK: u64 = 2;
    if !hypercall::vigil_present() {
        return skip!("no-hypervisor");
    }
    let mode = match hypercall::tsc_info() {
        Ok(info) => info.mode,
        Err(e) => return fail!("tsc-offset-hypercall error={}", e),
    };
    // One hold first, so the measured ones both find Vigil's path warm.
    let deltas = held_delta(0).and_then(|_| Ok((held_delta(0)?, held_delta(HOLD)?)));
    let (d0, d1) = match deltas {
        Ok(d) => d,
        Err(e) => return fail!("hold-hypercall error={}", e),
    };
    match mode {
        TscMode::Hide | TscMode::Frozen if d1.abs_diff(d0) > SLACK => fail!(
            "hold-visible mode={} d0={} d1={} hold={}",
            mode,
            d0,
            d1,
            HOLD
        ),
        TscMode::Native | TscMode::Offset if d1 <= d0 + u64::from(HOLD / 2) => fail!(
            "hold-not-visible mode={} d0={} d1={} hold={}",
            mode,
            d0,
            d1,
            HOLD
        ),
        TscMode::Unknown(_) => fail!("unknown-tsc-mode mode={} d0={} d1={}", mode, d0, d1),
        _ => pass!("mode={} d0={} d1={} hold={}", mode, d0, d1, HOLD),
    }
}

/// Vigil only, modes native and offset: the guest TSC is the host TSC plus the offset, exactly
/// (SDM Vol. 3C, "Time-Stamp Counter Offset and Multiplier"). The host TSC Vigil read at the
/// VMCALL's exit, plus the offset, lies between the guest's RDTSCs around the VMCALL.
fn tsc_offset_exact() -> Outcome {
    if !hypercall::vigil_present() {
        return skip!("no-hypervisor");
    }
    let info = match hypercall::tsc_info() {
        Ok(info) => info,
        Err(e) => return fail!("tsc-offset-hypercall error={}", e),
    };
    if !matches!(info.mode, TscMode::Native | TscMode::Offset) {
        return skip!("tsc-mode-{}", info.mode);
    }
    let before = cpu::rdtsc();
    let host = hypercall::host_tsc();
    let after = cpu::rdtsc();
    let host = match host {
        Ok(h) => h,
        Err(e) => return fail!("host-tsc-hypercall error={}", e),
    };
    let guest = host.wrapping_add(info.offset);
    // before <= guest <= after, in wrapping arithmetic: the offset may be "negative".
    if guest.wrapping_sub(before) > after.wrapping_sub(before) {
        return fail!(
            "outside before={:#x} host={:#x} offset={:#x} host_plus_offset={:#x} after={:#x}",
            before,
            host,
            info.offset,
            guest,
            after
        );
    }
    pass!(
        "mode={} before={:#x} host={:#x} offset={:#x} after={:#x}",
        info.mode,
        before,
        host,
        info.offset,
        after
    )
}

const PAGE: u64 = 4096;
/// The kit's page tables identity-map the first 4 GiB (see `guest_kit::boot`).
const MAPPED_END: u64 = 1 << 32;

fn page_down(address: u64) -> u64 {
    address & !(PAGE - 1)
}

fn page_up(address: u64) -> u64 {
    page_down(address.saturating_add(PAGE - 1))
}

/// Vigil's memory is out of the guest's reach (docs/architecture.md, "Memory"):
/// (a) every page of every available region of the memory map below 4 GiB can be read;
/// (b) Vigil only: every page of its image and pool raises #GP on a read and on a write, and
/// the checksum of Vigil's protected memory is the same after all that as before.
///
/// The write is a locked add of 0 ([`fault::try_write_probe_u64`]): it needs write permission
/// like a store, but if isolation were broken it would leave Vigil's memory as it was, so the
/// failure is reported by this case rather than by whatever a corrupted Vigil does next.
fn isolation() -> Outcome {
    let Some(boot) = guest_kit::boot_info() else {
        return fail!("no-boot-info");
    };
    let Some(map) = boot.memory_map() else {
        return fail!("no-memory-map flags={:#x}", boot.flags);
    };

    let mut vigil = [(0u64, 0u64); 2];
    let present = hypercall::vigil_present();
    if present {
        for (slot, range) in vigil.iter_mut().zip(VigilRange::ALL) {
            *slot = match hypercall::vigil_range(range) {
                Ok(r) if r.0 < r.1 => r,
                Ok(r) => {
                    return fail!(
                        "empty-vigil-range range={} vigil={:#x}-{:#x}",
                        range.name(),
                        r.0,
                        r.1
                    )
                }
                Err(e) => return fail!("vigil-range-hypercall range={} error={}", range.name(), e),
            };
        }
        // The memory map must not offer Vigil's memory as RAM.
        for region in boot.memory_map().into_iter().flatten() {
            if !region.available() {
                continue;
            }
            for (&(start, end), range) in vigil.iter().zip(VigilRange::ALL) {
                if region.base < end && start < region.end() {
                    return fail!(
                        "vigil-memory-offered-as-ram range={} vigil={:#x}-{:#x} region={:#x}-{:#x}",
                        range.name(),
                        start,
                        end,
                        region.base,
                        region.end()
                    );
                }
            }
        }
    }

    // (a) RAM: nothing may fault.
    let mut ram_pages = 0u64;
    for region in map.filter(|r| r.available()) {
        let start = page_up(region.base);
        let end = page_down(region.end().min(MAPPED_END));
        let mut page = start;
        while page < end {
            if let Err(c) = fault::try_read_u64(page) {
                return fail!(
                    "ram-read-faulted address={:#x} vector={} error={:#x}",
                    page,
                    c.vector,
                    c.error
                );
            }
            ram_pages += 1;
            page += PAGE;
        }
    }
    if ram_pages == 0 {
        return fail!("no-available-ram-below-4gib");
    }
    if !present {
        return pass!("ram_pages={} vigil_pages=0 gp=0 checksum=none", ram_pages);
    }

    // (b) Vigil's memory: every read and write is #GP.
    let before = match hypercall::vigil_checksum() {
        Ok(c) => c,
        Err(e) => return fail!("vigil-checksum-hypercall error={}", e),
    };
    let (mut vigil_pages, mut gp) = (0u64, 0u64);
    for (&(start, end), range) in vigil.iter().zip(VigilRange::ALL) {
        // One probe per 4 KiB page (the EPT's smallest unit): the range's start, then each page
        // boundary after it. Beyond 4 GiB the kit's own page tables would fault first, which
        // says nothing about Vigil (the architecture keeps its memory below 4 GiB anyway).
        let mut address = start;
        while address < end.min(MAPPED_END) {
            vigil_pages += 1;
            match fault::try_read_u64(address) {
                Ok(value) => {
                    return fail!(
                        "vigil-read-succeeded range={} address={:#x} value={:#x}",
                        range.name(),
                        address,
                        value
                    )
                }
                Err(c) if c.vector == fault::GP => gp += 1,
                Err(c) => {
                    return fail!(
                        "vigil-read-wrong-vector range={} address={:#x} vector={} error={:#x}",
                        range.name(),
                        address,
                        c.vector,
                        c.error
                    )
                }
            }
            match fault::try_write_probe_u64(address) {
                Ok(value) => {
                    return fail!(
                        "vigil-write-succeeded range={} address={:#x} value={:#x}",
                        range.name(),
                        address,
                        value
                    )
                }
                Err(c) if c.vector == fault::GP => gp += 1,
                Err(c) => {
                    return fail!(
                        "vigil-write-wrong-vector range={} address={:#x} vector={} error={:#x}",
                        range.name(),
                        address,
                        c.vector,
                        c.error
                    )
                }
            }
            address = page_down(address) + PAGE;
        }
    }
    let after = match hypercall::vigil_checksum() {
        Ok(c) => c,
        Err(e) => return fail!("vigil-checksum-hypercall error={}", e),
    };
    if after != before {
        return fail!(
            "vigil-memory-changed checksum_before={:#x} checksum_after={:#x} vigil_pages={}",
            before,
            after,
            vigil_pages
        );
    }
    pass!(
        "ram_pages={} vigil_pages={} gp={} checksum={:#x}",
        ram_pages,
        vigil_pages,
        gp,
        before
    )
}
