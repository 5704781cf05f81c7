//! The single-step trap (RFLAGS.TF) across instructions a hypervisor may emulate: the #DB must
//! come right after the instruction, with DR6.BS set, as bare metal delivers it (SDM Vol. 3B
//! 18.3.1.4) — also when the instruction follows MOV SS, whose shadow holds the trap of MOV SS
//! back until after the next instruction (SDM Vol. 3A 6.8.3).

use core::arch::{asm, global_asm};
use guest_kit::interrupts;
use guest_kit::{fail, pass, Outcome};

// The case's own #DB handler: it records where the trap came from and DR6, clears TF in the
// interrupted RFLAGS (so the trap is taken once) and DR6's sticky bits, and returns.
global_asm!(
    r#"
    .global cases_db_stub
cases_db_stub:
    push rax
    mov rax, dr6
    mov [rip + CASES_DB_DR6], rax
    mov rax, [rsp + 8]
    mov [rip + CASES_DB_RIP], rax
    and qword ptr [rsp + 24], ~0x100
    mov eax, 0xffff0ff0
    mov dr6, rax
    inc qword ptr [rip + CASES_DB_COUNT]
    pop rax
    iretq
"#
);

unsafe extern "C" {
    fn cases_db_stub();
}

#[unsafe(no_mangle)]
static mut CASES_DB_DR6: u64 = 0;
#[unsafe(no_mangle)]
static mut CASES_DB_RIP: u64 = 0;
#[unsafe(no_mangle)]
static mut CASES_DB_COUNT: u64 = 0;

const DR6_BS: u64 = 1 << 14;

/// What one traced instruction produced: (#DB count, RIP of the #DB, DR6, the expected RIP).
fn traced(which: u8) -> (u64, u64, u64, u64) {
    let expected: u64;
    // SAFETY: the case runs alone on one CPU; the statics are only read and written here and
    // in the stub, which runs synchronously inside the traced sequence.
    unsafe {
        CASES_DB_COUNT = 0;
        CASES_DB_RIP = 0;
        CASES_DB_DR6 = 0;
        match which {
            // POPF sets TF: the trap comes after the instruction that follows it (CPUID).
            // (RBX is LLVM's: CPUID's result in it is thrown away.)
            0 => asm!(
                "mov r8, rbx",
                "lea r9, [rip + 2f]",
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "cpuid",
                "2:",
                "nop",
                "mov rbx, r8",
                out("r8") _,
                out("r9") expected,
                inout("eax") 0 => _, out("ecx") _, out("edx") _,
            ),
            // MOV SS holds its own trap back until after CPUID: one #DB, after CPUID.
            1 => asm!(
                "mov r8, rbx",
                "mov r10d, ss",
                "lea r9, [rip + 2f]",
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "mov ss, r10d",
                "cpuid",
                "2:",
                "nop",
                "mov rbx, r8",
                out("r8") _,
                out("r10") _,
                out("r9") expected,
                inout("eax") 0 => _, out("ecx") _, out("edx") _,
            ),
            // OUT to port 0x80 (trapped in some scenarios).
            _ => asm!(
                "lea {exp}, [rip + 2f]",
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "out 0x80, al",
                "2:",
                "nop",
                exp = out(reg) expected,
                in("al") 0x5Au8,
            ),
        }
        (CASES_DB_COUNT, CASES_DB_RIP, CASES_DB_DR6, expected)
    }
}

pub(super) fn single_step() -> Outcome {
    let previous = interrupts::handler(1);
    interrupts::set_handler(1, cases_db_stub as *const () as u64);
    let mut results = [(0, 0, 0, 0); 3];
    for (i, r) in results.iter_mut().enumerate() {
        *r = traced(i as u8);
    }
    interrupts::set_handler(1, previous);
    for (name, (count, rip, dr6, expected)) in ["cpuid", "mov-ss-cpuid", "out"].iter().zip(results)
    {
        if count != 1 || rip != expected || dr6 & DR6_BS == 0 {
            return fail!("{name} traps={count} rip={rip:#x} expected={expected:#x} dr6={dr6:#x}");
        }
    }
    pass!(
        "traps after cpuid, mov-ss+cpuid and out, each once with DR6.BS (dr6={:#x})",
        results[0].2
    )
}

// The collision case's #DB handler: it records each #DB's DR6 (up to four), clears DR6, and
// returns with RF set (so an instruction breakpoint is not taken again at the same
// instruction) and TF clear.
global_asm!(
    r#"
    .global cases_db_collision_stub
cases_db_collision_stub:
    push rax
    push rcx
    mov rcx, [rip + CASES_DBC_COUNT]
    cmp rcx, 4
    jae cases_dbc_counted
    mov rax, dr6
    push rdx
    lea rdx, [rip + CASES_DBC_DR6]
    mov [rdx + rcx * 8], rax
    mov rax, [rsp + 24]
    lea rdx, [rip + CASES_DBC_RIP]
    mov [rdx + rcx * 8], rax
    pop rdx
cases_dbc_counted:
    inc qword ptr [rip + CASES_DBC_COUNT]
    or qword ptr [rsp + 32], 0x10000
    and qword ptr [rsp + 32], ~0x100
    mov eax, 0xffff0ff0
    mov dr6, rax
    pop rcx
    pop rax
    iretq
"#
);

unsafe extern "C" {
    fn cases_db_collision_stub();
}

#[unsafe(no_mangle)]
static mut CASES_DBC_DR6: [u64; 4] = [0; 4];
#[unsafe(no_mangle)]
static mut CASES_DBC_RIP: [u64; 4] = [0; 4];
#[unsafe(no_mangle)]
static mut CASES_DBC_COUNT: u64 = 0;

/// VMAware's DR0 + TF collision: single-step over CPUID with an instruction breakpoint (DR0,
/// DR7.L0, execute) on the instruction after it. The single-step trap of CPUID and the
/// breakpoint of the next instruction meet at one boundary; what bare metal reports — how many
/// #DBs, where, and which DR6 bits (BS, B0) each carries (SDM Vol. 3B 18.2.3, 18.3.1) — is what
/// a hypervisor that emulates CPUID must reproduce. The case reports it; the scenario compares
/// it with the bare run's. With several processors, Bochs 3.0 needs the fix of docs/platform.md
/// ("After an exception with several processors, the previous RIP stays behind"): unfixed, it
/// raises this #DB again and again before the handler's first instruction.
pub(super) fn db_collision() -> Outcome {
    let previous = interrupts::handler(1);
    interrupts::set_handler(1, cases_db_collision_stub as *const () as u64);
    let expected: u64;
    // SAFETY: the kit runs alone; DR0/DR7 are the kit's and are cleared again; the statics are
    // only written by the handler, synchronously.
    let (count, dr6, rip) = unsafe {
        CASES_DBC_COUNT = 0;
        CASES_DBC_DR6 = [0; 4];
        CASES_DBC_RIP = [0; 4];
        asm!(
            "mov r8, rbx",
            "lea r9, [rip + 2f]",
            "mov dr0, r9",
            // L0, execute (R/W0 = 00), length 1 (LEN0 = 00), bit 10 reads as 1.
            "mov r10, 0x401",
            "mov dr7, r10",
            "pushfq",
            "or qword ptr [rsp], 0x100",
            "popfq",
            "cpuid",
            "2:",
            "nop",
            "mov r10, 0x400",
            "mov dr7, r10",
            "xor r10d, r10d",
            "mov dr0, r10",
            "mov rbx, r8",
            // Named registers: a `reg` operand may be given RBX, which CPUID writes.
            out("r8") _,
            out("r9") expected,
            out("r10") _,
            inout("eax") 0 => _, out("ecx") _, out("edx") _,
        );
        (CASES_DBC_COUNT, CASES_DBC_DR6, CASES_DBC_RIP)
    };
    interrupts::set_handler(1, previous);
    if count == 0 || rip[0] != expected {
        return fail!(
            "no-db-after-cpuid count={} rip={:#x} expected={:#x}",
            count,
            rip[0],
            expected
        );
    }
    pass!(
        "count={} dr6_1={:#x} dr6_2={:#x} rip_2_after={}",
        count,
        dr6[0],
        dr6[1],
        rip[1].wrapping_sub(expected)
    )
}
