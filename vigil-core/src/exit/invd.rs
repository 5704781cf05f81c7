//! INVD (it always exits under VMX). Dropping the caches without writing them back could destroy
//! Vigil's own data, so the write-back form is executed instead; the guest cannot tell the
//! difference except by losing dirty lines it should never rely on.

use super::Action;
use crate::cpu::Cpu;
use crate::vcpu::{Host, Vcpu};

pub fn handle<V: Vcpu>(cpu: &mut Cpu<V>) -> Action {
    cpu.vcpu.host().write_back_caches();
    Action::Advance
}
