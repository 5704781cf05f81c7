//! INS/OUTS: addresses as the processor computes them, restartable REP.

use crate::exit::{Action, Exit, IoAccess};
use crate::testing::{cpu, cpu_with, exit, FakeVcpu, RAM};
use crate::vcpu::Host;
use crate::vcpu::{gpr, Seg};
use x86_arch::event::Event;
use x86_arch::regs::RFLAGS_DF;

fn string(port: u16, size: u8, input: bool, rep: bool, addr_size: u8) -> Exit {
    Exit::Io(IoAccess {
        port,
        size,
        input,
        string: true,
        rep,
        addr_size,
        segment: Seg::Ds,
    })
}

#[test]
fn rep_outsb_sends_the_buffer_and_advances_rsi_and_rcx() {
    let mut c = cpu("trap=io:0x3f8");
    c.vcpu.mem[0x5000..0x5004].copy_from_slice(b"abcd");
    c.vcpu.gprs[gpr::RSI as usize] = 0x5000;
    c.vcpu.gprs[gpr::RCX as usize] = 4;
    assert_eq!(
        exit(&mut c, string(0x3F8, 1, false, true, 8)),
        Action::Advance
    );
    let sent: alloc::vec::Vec<u32> = c
        .vcpu
        .host
        .port_log
        .iter()
        .map(|&(_, _, v)| v.unwrap())
        .collect();
    assert_eq!(sent, [b'a' as u32, b'b' as u32, b'c' as u32, b'd' as u32]);
    assert_eq!(c.vcpu.gprs[gpr::RSI as usize], 0x5004);
    assert_eq!(c.vcpu.gprs[gpr::RCX as usize], 0);
}

#[test]
fn insw_writes_guest_memory_through_es() {
    let mut v = FakeVcpu::protected32();
    v.segs[Seg::Es as usize].base = 0x1000;
    v.segs[Seg::Ds as usize].base = 0x9000;
    let mut c = cpu_with("trap=io:0x1f0-0x1f7", v);
    c.vcpu.host.ports.insert(0x1F0, 0x34);
    c.vcpu.host.ports.insert(0x1F1, 0x12);
    c.vcpu.gprs[gpr::RDI as usize] = 0x200;
    exit(&mut c, string(0x1F0, 2, true, false, 4));
    assert_eq!(c.vcpu.peek(0x1200, 2), [0x34, 0x12], "ES base + EDI");
    assert_eq!(c.vcpu.gprs[gpr::RDI as usize], 0x202);
}

#[test]
fn the_direction_flag_walks_down() {
    let mut c = cpu("trap=io:0x80");
    c.vcpu.rflags |= RFLAGS_DF;
    c.vcpu.mem[0x5000] = 1;
    c.vcpu.mem[0x4FFF] = 2;
    c.vcpu.gprs[gpr::RSI as usize] = 0x5000;
    c.vcpu.gprs[gpr::RCX as usize] = 2;
    exit(&mut c, string(0x80, 1, false, true, 8));
    assert_eq!(c.vcpu.host.port_log[1], (0x80, 1, Some(2)));
    assert_eq!(c.vcpu.gprs[gpr::RSI as usize], 0x4FFE);
}

#[test]
fn a_16_bit_address_size_wraps_si_and_cx_within_64_kib() {
    // 16-bit addressing: SI wraps from 0xFFFF to 0 and the next byte comes from DS:0000, not
    // DS:10000; the upper halves of ESI and ECX are untouched (SDM Vol. 1 3.3.7).
    let mut v = FakeVcpu::protected32();
    v.segs[Seg::Ds as usize].base = 0x10_0000;
    let mut c = cpu_with("trap=io:0x80", v);
    c.vcpu.mem[0x10_FFFF] = 0xAA;
    c.vcpu.mem[0x10_0000] = 0xBB;
    c.vcpu.mem[0x11_0000] = 0xCC;
    c.vcpu.gprs[gpr::RSI as usize] = 0x7_FFFF;
    c.vcpu.gprs[gpr::RCX as usize] = 0x5_0002;
    exit(&mut c, string(0x80, 1, false, true, 2));
    let sent: alloc::vec::Vec<_> = c.vcpu.host.port_log.iter().map(|l| l.2).collect();
    assert_eq!(sent, [Some(0xAA), Some(0xBB)]);
    assert_eq!(c.vcpu.gprs[gpr::RSI as usize], 0x7_0001);
    assert_eq!(c.vcpu.gprs[gpr::RCX as usize], 0x5_0000);
}

#[test]
fn a_32_bit_address_size_zero_extends_the_registers_in_64_bit_mode() {
    let mut c = cpu("trap=io:0x80");
    c.vcpu.mem[0x5000] = 9;
    c.vcpu.gprs[gpr::RSI as usize] = 0xFFFF_FFFF_0000_5000;
    exit(&mut c, string(0x80, 1, false, false, 4));
    assert_eq!(c.vcpu.host.port_log, [(0x80, 1, Some(9))]);
    assert_eq!(c.vcpu.gprs[gpr::RSI as usize], 0x5001);
}

#[test]
fn a_page_fault_part_way_leaves_the_registers_at_the_faulting_element() {
    let mut c = cpu("trap=io:0x80");
    // The buffer runs off the end of the one mapped 2 MiB page.
    let start = 0x1F_FFFE;
    c.vcpu.gprs[gpr::RSI as usize] = start;
    c.vcpu.gprs[gpr::RCX as usize] = 4;
    let a = exit(&mut c, string(0x80, 1, false, true, 8));
    assert_eq!(a, Action::Inject(Event::page_fault(0)));
    assert_eq!(c.vcpu.cr2, 0x20_0000);
    assert_eq!(c.vcpu.host.port_log.len(), 2);
    assert_eq!(c.vcpu.gprs[gpr::RSI as usize], 0x20_0000);
    assert_eq!(c.vcpu.gprs[gpr::RCX as usize], 2);
    assert_eq!(
        c.vcpu.rip, 0x1000,
        "the instruction restarts after the fault"
    );
}

#[test]
fn a_buffer_in_vigils_memory_gets_gp() {
    let mut c = cpu_with("trap=io:0x80", FakeVcpu::protected32());
    let vigil = c.vcpu.host.vigil_range(0).unwrap().0;
    c.vcpu.gprs[gpr::RDI as usize] = vigil;
    assert_eq!(
        exit(&mut c, string(0x80, 1, true, false, 4)),
        Action::Inject(Event::GP0)
    );
    assert_eq!(c.vcpu.gprs[gpr::RDI as usize], vigil);
    assert!(c.vcpu.mmio_log.is_empty(), "no access reached anything");
}

#[test]
fn device_memory_gets_the_access_the_guest_would_make() {
    // INSW into device memory (a VGA-like window above RAM): one 2-byte access per element.
    let mut c = cpu_with("trap=io:0x80", FakeVcpu::protected32());
    c.vcpu.host.ports.insert(0x80, 0x34);
    c.vcpu.host.ports.insert(0x81, 0x12);
    c.vcpu.gprs[gpr::RDI as usize] = RAM as u64;
    c.vcpu.gprs[gpr::RCX as usize] = 2;
    assert_eq!(
        exit(&mut c, string(0x80, 2, true, true, 4)),
        Action::Advance
    );
    let at = RAM as u64;
    assert_eq!(c.vcpu.mmio_log, [(at, 2, true), (at + 2, 2, true)]);
    assert_eq!(c.vcpu.mmio.get(&(at + 3)), Some(&0x12));
    // OUTSB from ROM reads it; INSB into ROM leaves it as it was, without a fault.
    let rom = crate::testing::ROM;
    c.vcpu.mmio.insert(rom, 0xAA);
    c.vcpu.gprs[gpr::RSI as usize] = rom;
    assert_eq!(
        exit(&mut c, string(0x80, 1, false, false, 4)),
        Action::Advance
    );
    assert_eq!(c.vcpu.host.ports.get(&0x80), Some(&0xAA));
    c.vcpu.gprs[gpr::RDI as usize] = rom;
    assert_eq!(
        exit(&mut c, string(0x80, 1, true, false, 4)),
        Action::Advance
    );
    assert_eq!(c.vcpu.mmio.get(&rom), Some(&0xAA), "a ROM ignores writes");
}

#[test]
fn an_element_across_a_page_boundary_is_translated_page_by_page() {
    // A dword OUTSD whose first two bytes are the last of RAM and whose last two are device
    // memory: each piece from its own place.
    let mut c = cpu_with("trap=io:0x80-0x83", FakeVcpu::protected32());
    let end = RAM as u64;
    c.vcpu.mem[RAM - 2..].copy_from_slice(&[0x11, 0x22]);
    c.vcpu.mmio.insert(end, 0x33);
    c.vcpu.mmio.insert(end + 1, 0x44);
    c.vcpu.gprs[gpr::RSI as usize] = end - 2;
    assert_eq!(
        exit(&mut c, string(0x80, 4, false, false, 4)),
        Action::Advance
    );
    assert_eq!(c.vcpu.host.port_log, [(0x80, 4, Some(0x4433_2211))]);
    assert_eq!(c.vcpu.mmio_log, [(end, 2, false)]);
}

#[test]
fn rep_with_a_zero_count_does_nothing() {
    let mut c = cpu("trap=io:0x80");
    c.vcpu.gprs[gpr::RSI as usize] = 0x5000;
    assert_eq!(
        exit(&mut c, string(0x80, 1, false, true, 8)),
        Action::Advance
    );
    assert!(c.vcpu.host.port_log.is_empty());
    assert_eq!(c.vcpu.gprs[gpr::RSI as usize], 0x5000);
}

#[test]
fn a_long_rep_is_done_in_slices() {
    let mut c = cpu("trap=io:0x80");
    c.vcpu.gprs[gpr::RSI as usize] = 0x1000;
    c.vcpu.gprs[gpr::RCX as usize] = 5000;
    assert_eq!(
        exit(&mut c, string(0x80, 1, false, true, 8)),
        Action::Resume
    );
    assert_eq!(c.vcpu.gprs[gpr::RCX as usize], 5000 - 4096);
    assert_eq!(c.vcpu.rip, 0x1000, "re-entered to continue");
    assert_eq!(
        exit(&mut c, string(0x80, 1, false, true, 8)),
        Action::Advance
    );
    assert_eq!(c.vcpu.gprs[gpr::RCX as usize], 0);
    assert_eq!(c.vcpu.host.port_log.len(), 5000);
}

#[test]
fn outs_to_com2_reads_the_buffer_but_never_the_device() {
    let mut c = cpu("");
    c.vcpu.gprs[gpr::RSI as usize] = 0x5000;
    exit(&mut c, string(0x2F8, 1, false, false, 8));
    assert!(c.vcpu.host.port_log.is_empty());
    assert_eq!(c.vcpu.gprs[gpr::RSI as usize], 0x5001);
}
