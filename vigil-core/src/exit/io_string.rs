//! INS and OUTS (with or without REP) on ports that exit.
//!
//! Each element's address is computed as the processor computes it: the segment's base (none
//! for ES/CS/SS/DS in 64-bit mode) plus RSI or RDI, both at the instruction's address size
//! (SDM Vol. 2B INS/OUTS; Vol. 1 3.3.7), so a 16-bit index wraps at 64 KiB and a 32-bit one at
//! 4 GiB. Each element is translated through the guest's page tables, checked against its RAM,
//! and moved through the same port logic as IN/OUT; an element that crosses a page boundary is
//! translated page by page. Memory that is not RAM — the VGA window, a ROM, a device's
//! registers — is accessed as the guest's own access would be (`Vcpu::read_mmio`), so the
//! device sees the same access; only memory the guest cannot reach itself (Vigil's) is #GP.
//! RSI/RDI and RCX advance as the processor
//! advances them; a page fault part-way stops with the registers describing the elements done,
//! exactly as a REP string instruction is restartable (SDM Vol. 2B REP). Long REPs are done in
//! slices: after `SLICE` elements the instruction is re-entered rather than skipped, so one exit
//! never holds the guest for long.

use super::io::{port_access, size_mask};
use super::{Action, IoAccess};
use crate::cpu::Cpu;
use crate::vcpu::{gpr, Seg, Vcpu};
use x86_arch::event::Event;
use x86_arch::paging::Access;
use x86_arch::regs::RFLAGS_DF;

const SLICE: u64 = 4096;

fn addr_mask(addr_size: u8) -> u64 {
    match addr_size {
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}

/// `reg` plus `delta` at the address size: a 16-bit update keeps the register's upper bits, a
/// 32-bit one zero-extends (as every 32-bit register write does; SDM Vol. 1 3.4.1.1).
fn advance(reg: u64, delta: u64, addr_size: u8) -> u64 {
    let sum = reg.wrapping_add(delta);
    match addr_size {
        2 => (reg & !0xFFFF) | (sum & 0xFFFF),
        4 => sum & 0xFFFF_FFFF,
        _ => sum,
    }
}

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>, io: &IoAccess) -> Action {
    let vcpu = &mut cpu.vcpu;
    let mask = addr_mask(io.addr_size);
    let size = io.size as u64;
    let step = if vcpu.rflags() & RFLAGS_DF != 0 {
        size.wrapping_neg()
    } else {
        size
    };
    let count = if io.rep { vcpu.gpr(gpr::RCX) & mask } else { 1 };
    let index_reg = if io.input { gpr::RDI } else { gpr::RSI };
    let segment = if io.input { Seg::Es } else { io.segment };
    let long = vcpu.long_mode_64();
    // In 64-bit mode only FS and GS have a base (SDM Vol. 3A 3.4.4).
    let base = if long && !matches!(segment, Seg::Fs | Seg::Gs) {
        0
    } else {
        vcpu.segment(segment).base
    };
    let linear_mask = if long { u64::MAX } else { 0xFFFF_FFFF };
    let access = Access {
        write: io.input,
        user: vcpu.cpl() == 3,
        fetch: false,
    };
    let start = vcpu.gpr(index_reg);
    let mut index = start;
    let mut done = 0;
    let mut outcome = Action::Advance;
    while done < count.min(SLICE) {
        let linear = base.wrapping_add(index & mask) & linear_mask;
        let n = io.size as usize;
        let parts = match element(&mut cpu.vcpu, linear, n, linear_mask, access) {
            Ok(parts) => parts,
            Err(fault) => {
                outcome = Action::Inject(fault);
                break;
            }
        };
        let mut bytes = [0u8; 4];
        let result = if io.input {
            match port_access(cpu, io.port, io.size, None) {
                Ok(v) => {
                    bytes = v.unwrap_or(0).to_le_bytes();
                    if !store(&mut cpu.vcpu, &parts, &bytes[..n]) {
                        outcome = Action::Inject(Event::GP0);
                        break;
                    }
                    Ok(())
                }
                Err(stop) => Err(stop),
            }
        } else {
            if !load(&mut cpu.vcpu, &parts, &mut bytes[..n]) {
                outcome = Action::Inject(Event::GP0);
                break;
            }
            let value = u32::from_le_bytes(bytes) & size_mask(io.size);
            port_access(cpu, io.port, io.size, Some(value)).map(|_| ())
        };
        done += 1;
        index = advance(index, step, io.addr_size);
        if let Err(stop) = result {
            outcome = Action::Stop(stop);
            break;
        }
    }
    // Registers reflect the elements moved, whatever ended the loop.
    let vcpu = &mut cpu.vcpu;
    if index != start {
        vcpu.set_gpr(index_reg, index);
    }
    if io.rep {
        let rcx = vcpu.gpr(gpr::RCX);
        if done > 0 {
            vcpu.set_gpr(gpr::RCX, advance(rcx, done.wrapping_neg(), io.addr_size));
        }
        if outcome == Action::Advance && done < count {
            // More to do: run the instruction again from where it stands.
            outcome = Action::Resume;
        }
    }
    outcome
}

/// One element's memory: its guest-physical pieces (two when it crosses a page boundary, each
/// translated as the processor translates it), as (address, length).
type Parts = [(u64, usize); 2];

fn element<V: Vcpu>(
    vcpu: &mut V,
    linear: u64,
    n: usize,
    linear_mask: u64,
    access: Access,
) -> Result<Parts, Event> {
    let first = n.min(4096 - (linear & 0xFFF) as usize);
    let mut parts = [(super::page_walk(vcpu, linear, access)?, first), (0, 0)];
    if first < n {
        let next = linear.wrapping_add(first as u64) & linear_mask;
        parts[1] = (super::page_walk(vcpu, next, access)?, n - first);
    }
    Ok(parts)
}

/// Reads an element: RAM, or else device memory as one access per piece. False where the
/// guest itself could not reach the memory (Vigil's): #GP, as for any access there
/// (nested_fault.rs).
fn load<V: Vcpu>(vcpu: &mut V, parts: &Parts, buf: &mut [u8]) -> bool {
    let mut at = 0;
    for &(gpa, len) in parts.iter().filter(|p| p.1 != 0) {
        let piece = &mut buf[at..at + len];
        if !vcpu.read_phys(gpa, piece) && !vcpu.read_mmio(gpa, piece) {
            return false;
        }
        at += len;
    }
    true
}

fn store<V: Vcpu>(vcpu: &mut V, parts: &Parts, bytes: &[u8]) -> bool {
    let mut at = 0;
    for &(gpa, len) in parts.iter().filter(|p| p.1 != 0) {
        let piece = &bytes[at..at + len];
        if !vcpu.write_phys(gpa, piece) && !vcpu.write_mmio(gpa, piece) {
            return false;
        }
        at += len;
    }
    true
}
