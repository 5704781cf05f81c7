//! INS and OUTS (with or without REP) on ports that exit.
//!
//! Each element's address is computed as the processor computes it: the segment's base (none
//! for ES/CS/SS/DS in 64-bit mode) plus RSI or RDI, both at the instruction's address size
//! (SDM Vol. 2B INS/OUTS; Vol. 1 3.3.7), so a 16-bit index wraps at 64 KiB and a 32-bit one at
//! 4 GiB. Each element is translated through the guest's page tables, checked against its RAM,
//! and moved through the same port logic as IN/OUT. RSI/RDI and RCX advance as the processor
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
        let gpa = match super::page_walk(&mut cpu.vcpu, linear, access) {
            Ok(gpa) => gpa,
            Err(fault) => {
                outcome = Action::Inject(fault);
                break;
            }
        };
        let n = io.size as usize;
        let mut bytes = [0u8; 4];
        let result = if io.input {
            match port_access(cpu, io.port, io.size, None) {
                Ok(v) => {
                    bytes = v.unwrap_or(0).to_le_bytes();
                    // Memory outside the guest's RAM is Vigil's or no one's: #GP, as for any
                    // access there (nested_fault.rs).
                    if !cpu.vcpu.write_phys(gpa, &bytes[..n]) {
                        outcome = Action::Inject(Event::GP0);
                        break;
                    }
                    Ok(())
                }
                Err(stop) => Err(stop),
            }
        } else {
            if !cpu.vcpu.read_phys(gpa, &mut bytes[..n]) {
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
    // Its bare cost goes by the elements moved (`crate::time::cost`).
    cpu.time.detail = done as u32;
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
