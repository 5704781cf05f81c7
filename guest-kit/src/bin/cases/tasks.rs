//! Hardware task switches, as a 32-bit guest uses them (SDM Vol. 3A, "Task Management"). Task
//! switches exist only outside IA-32e mode, so the case leaves long mode for its duration: it
//! far-returns to a 32-bit code segment (compatibility mode), turns paging off (which leaves
//! IA-32e mode), clears EFER.LME, and runs task A of its own GDT, IDT and TSSs in 32-bit
//! protected mode with paging off, as a 32-bit kernel would; then it goes back the same way.
//!
//! What task A does, and what the other tasks record:
//!
//! | step | how | what must hold |
//! |---|---|---|
//! | JMP to a TSS | `jmp 0x20:0` to B, B jumps back | B starts with its TSS's registers, NT clear, both busy bits as JMP leaves them, TR = B, CR0.TS set; A resumes with its registers; B's TSS holds the EIP after its JMP |
//! | CALL to a TSS, IRET back | `call 0x28:0` to C, C's IRET | NT set and the back link = A in C; both busy; after the IRET C is free, A's NT clear, NT clear in C's saved EFLAGS |
//! | faults before the switch | JMP to busy A, JMP to a TSS with limit 0x50, CALL to a TSS not present | #GP(0x18), #TS(0x40), #NP(0x48), in task A |
//! | a fault after the commit point | CALL to F whose DS is beyond the GDT | #TS(0x78) delivered in F (TR = F, the pushed CS is F's); F's own IRET returns to A |
//! | #DF through a task gate | #GP with the #GP gate not present: #NP during #GP, so #DF, whose gate is a task gate | task D starts with error code 0 on its stack, NT set, back link A; A's TSS holds the faulting instruction's address |
//! | NMI through a task gate | an NMI IPI to itself; task E sends a second one | E runs twice; the second NMI waits while E runs (NMIs blocked until its IRET) |
//! | the TSS's T bit | JMP to G, whose TSS has T set | #DB before G's first instruction, DR6.BT set, in task G |
//!
//! Under Vigil every one of these switches is a VM exit that Vigil emulates (the faults before
//! the switch are the processor's own); bare, the processor does them.

use core::arch::global_asm;
use core::ptr::{addr_of, addr_of_mut};
use guest_kit::{fail, pass, Outcome};

/// Result slots (dword indices into `t32_res`).
mod r {
    pub const STATUS: usize = 0;
    pub const JMP_B_EAX: usize = 1;
    pub const JMP_B_NT: usize = 2;
    pub const JMP_B_BUSY_A: usize = 3;
    pub const JMP_B_BUSY_B: usize = 4;
    pub const JMP_B_TR: usize = 5;
    pub const JMP_B_TS: usize = 6;
    pub const JMP_A_EBX: usize = 7;
    pub const JMP_A_ESI: usize = 8;
    pub const JMP_A_BUSY_B: usize = 9;
    pub const JMP_B_SAVED_EIP: usize = 10;
    pub const CALL_C_NT: usize = 11;
    pub const CALL_C_LINK: usize = 12;
    pub const CALL_C_BUSY_A: usize = 13;
    pub const CALL_C_BUSY_C: usize = 14;
    pub const CALL_A_BUSY_C: usize = 15;
    pub const CALL_A_EFLAGS: usize = 16;
    pub const CALL_C_SAVED_EFLAGS: usize = 17;
    pub const CALL_C_SAVED_EIP: usize = 18;
    pub const BUSY_VEC: usize = 19;
    pub const BUSY_ERR: usize = 20;
    pub const SHORT_VEC: usize = 21;
    pub const SHORT_ERR: usize = 22;
    pub const NP_VEC: usize = 23;
    pub const NP_ERR: usize = 24;
    pub const POST_VEC: usize = 25;
    pub const POST_ERR: usize = 26;
    pub const POST_TR: usize = 27;
    pub const POST_CS: usize = 28;
    pub const POST_BUSY_F: usize = 29;
    pub const DF_COUNT: usize = 30;
    pub const DF_ERROR: usize = 31;
    pub const DF_LINK: usize = 32;
    pub const DF_EFLAGS: usize = 33;
    pub const DF_SAVED_EIP: usize = 34;
    pub const DF_ESP: usize = 35;
    pub const DF_TR: usize = 36;
    pub const NMI_COUNT: usize = 37;
    pub const NMI_INSIDE: usize = 38;
    pub const NMI_EFLAGS: usize = 39;
    pub const NMI_LINK: usize = 40;
    pub const DB_DR6: usize = 41;
    pub const DB_TR: usize = 42;
    pub const DB_COUNT: usize = 43;
    pub const FAULT_VEC: usize = 44;
    pub const FAULT_ERR: usize = 45;
    pub const FAULT_CS: usize = 46;
    pub const FAULT_TR: usize = 47;
    pub const SLOTS: usize = 48;
}

/// TSS slots of `t32_tss` (0x80 bytes each) and their selectors in the case's GDT.
const TSS_SIZE: usize = 0x80;
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;
const E: usize = 4;
const SHORT: usize = 5;
const F: usize = 6;
const G: usize = 7;
const TASKS: usize = 8;

const SEL_CODE32: u16 = 0x08;
const SEL_DATA: u16 = 0x10;
const SEL_A: u16 = 0x18;
const SEL_B: u16 = 0x20;
const SEL_C: u16 = 0x28;
const SEL_D: u16 = 0x30;
const SEL_E: u16 = 0x38;
const SEL_SHORT: u16 = 0x40;
const SEL_ABSENT: u16 = 0x48;
const SEL_F: u16 = 0x50;
const SEL_CODE64: u16 = 0x58;
const SEL_G: u16 = 0x60;
const GDT_ENTRIES: usize = 13;
/// F's DS: beyond the GDT's limit.
const SEL_BAD: u16 = 0x78;
/// The selector task A loads into DS to raise #GP (beyond the GDT's limit).
const SEL_GP: u16 = 0xFFF8;
const STACK: usize = 1024;

const NT: u32 = 1 << 14;
const BUSY: u32 = 1 << 9;
const DR6_BT: u32 = 1 << 15;

global_asm!(
    r#"
    .section .text.guest_kit_tasks32, "ax"
    .code64
    .global guest_kit_tasks32
guest_kit_tasks32:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    pushfq
    cli
    mov [rip + t32_saved_rsp], rsp
    sgdt [rip + t32_saved_gdtr]
    sidt [rip + t32_saved_idtr]
    lgdt [rip + t32_gdtr]
    lea rax, [rip + t32_compat]
    push {code32}
    push rax
    retfq

    .code32
t32_compat:
    # Compatibility mode: turning paging off leaves IA-32e mode (SDM Vol. 3A, "IA-32e Mode
    # Initialization": leaving it), then EFER.LME goes.
    mov eax, cr0
    and eax, 0x7FFFFFFF
    mov cr0, eax
    mov ecx, 0xC0000080
    rdmsr
    and eax, 0xFFFFFEFF
    wrmsr
    mov ax, {data}
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov esp, offset t32_stack_a_top
    lidt [t32_idtr]
    mov ax, {sel_a}
    ltr ax

    # --- JMP to TSS B; B jumps back here.
    mov ebx, 0x12345678
    mov esi, 0x9ABCDEF0
    .byte 0xEA
    .long 0
    .word {sel_b}
    mov [t32_res + 4*{jmp_a_ebx}], ebx
    mov [t32_res + 4*{jmp_a_esi}], esi
    mov eax, [t32_gdt + {sel_b} + 4]
    and eax, {busy}
    mov [t32_res + 4*{jmp_a_busy_b}], eax
    mov eax, [t32_tss + {tss_b} + 0x20]
    mov [t32_res + 4*{jmp_b_saved_eip}], eax

    # --- CALL to TSS C; its IRET returns here.
    .byte 0x9A
    .long 0
    .word {sel_c}
    pushfd
    pop eax
    mov [t32_res + 4*{call_a_eflags}], eax
    mov eax, [t32_gdt + {sel_c} + 4]
    and eax, {busy}
    mov [t32_res + 4*{call_a_busy_c}], eax
    mov eax, [t32_tss + {tss_c} + 0x24]
    mov [t32_res + 4*{call_c_saved_eflags}], eax
    mov eax, [t32_tss + {tss_c} + 0x20]
    mov [t32_res + 4*{call_c_saved_eip}], eax

    # --- Faults before the switch: JMP to itself (busy), to a short TSS, CALL to an absent one.
    mov dword ptr [t32_recover], offset t32_after_busy
    mov dword ptr [t32_res + 4*{fault_vec}], 0xFFFFFFFF
    .byte 0xEA
    .long 0
    .word {sel_a}
t32_after_busy:
    mov eax, [t32_res + 4*{fault_vec}]
    mov [t32_res + 4*{busy_vec}], eax
    mov eax, [t32_res + 4*{fault_err}]
    mov [t32_res + 4*{busy_err}], eax
    mov dword ptr [t32_recover], offset t32_after_short
    mov dword ptr [t32_res + 4*{fault_vec}], 0xFFFFFFFF
    .byte 0xEA
    .long 0
    .word {sel_short}
t32_after_short:
    mov eax, [t32_res + 4*{fault_vec}]
    mov [t32_res + 4*{short_vec}], eax
    mov eax, [t32_res + 4*{fault_err}]
    mov [t32_res + 4*{short_err}], eax
    mov dword ptr [t32_recover], offset t32_after_absent
    mov dword ptr [t32_res + 4*{fault_vec}], 0xFFFFFFFF
    .byte 0x9A
    .long 0
    .word {sel_absent}
t32_after_absent:
    mov eax, [t32_res + 4*{fault_vec}]
    mov [t32_res + 4*{np_vec}], eax
    mov eax, [t32_res + 4*{fault_err}]
    mov [t32_res + 4*{np_err}], eax

    # --- A fault after the commit point: F's DS is bad. The #TS handler returns to an IRET in
    # F, whose NT (set by the CALL) takes it back here.
    mov dword ptr [t32_recover], offset t32_task_return
    mov dword ptr [t32_res + 4*{fault_vec}], 0xFFFFFFFF
    .byte 0x9A
    .long 0
    .word {sel_f}
    mov eax, [t32_res + 4*{fault_vec}]
    mov [t32_res + 4*{post_vec}], eax
    mov eax, [t32_res + 4*{fault_err}]
    mov [t32_res + 4*{post_err}], eax
    mov eax, [t32_res + 4*{fault_tr}]
    mov [t32_res + 4*{post_tr}], eax
    mov eax, [t32_res + 4*{fault_cs}]
    mov [t32_res + 4*{post_cs}], eax
    mov eax, [t32_gdt + {sel_f} + 4]
    and eax, {busy}
    mov [t32_res + 4*{post_busy_f}], eax

    # --- #DF through a task gate: the #GP gate is made not present, so the #GP below becomes
    # #NP during #GP delivery, which is #DF. Task D sends A on to t32_after_df.
    and byte ptr [t32_idt + 13*8 + 5], 0x7F
    mov dword ptr [t32_recover], offset t32_after_df
    mov ax, {sel_gp}
    .global t32_df_fault
t32_df_fault:
    mov ds, ax
t32_after_df:
    or byte ptr [t32_idt + 13*8 + 5], 0x80

    # --- NMI through a task gate, to this processor's own local APIC.
    mov ecx, 0x1B
    rdmsr
    and eax, 0xFFFFF000
    mov [t32_apic], eax
    mov eax, [eax + 0x20]
    and eax, 0xFF000000
    mov [t32_apic_id], eax
    call t32_send_nmi
    mov ecx, 1000000
t32_nmi_wait:
    cmp dword ptr [t32_res + 4*{nmi_count}], 2
    jae t32_nmi_done
    pause
    dec ecx
    jnz t32_nmi_wait
t32_nmi_done:

    # --- The T bit: G's TSS asks for #DB as G starts; G jumps back.
    .byte 0xEA
    .long 0
    .word {sel_g}

    mov dword ptr [t32_res + 4*{status}], 1

    # --- Back to long mode: EFER.LME, then paging (CR4.PAE and CR3 still hold the kit's).
    cli
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    .byte 0xEA
    .long t32_back64
    .word {code64}

# The NMI IPI: physical destination this APIC, delivery mode NMI (SDM Vol. 3A, "Interrupt
# Command Register (ICR)").
t32_send_nmi:
    push ebx
    mov ebx, [t32_apic]
    mov eax, [t32_apic_id]
    mov [ebx + 0x310], eax
    mov dword ptr [ebx + 0x300], 0x400
    pop ebx
    ret

t32_task_b:
    mov [t32_res + 4*{jmp_b_eax}], eax
    pushfd
    pop eax
    and eax, {nt}
    mov [t32_res + 4*{jmp_b_nt}], eax
    mov eax, [t32_gdt + {sel_a} + 4]
    and eax, {busy}
    mov [t32_res + 4*{jmp_b_busy_a}], eax
    mov eax, [t32_gdt + {sel_b} + 4]
    and eax, {busy}
    mov [t32_res + 4*{jmp_b_busy_b}], eax
    str ax
    movzx eax, ax
    mov [t32_res + 4*{jmp_b_tr}], eax
    mov eax, cr0
    and eax, 8
    mov [t32_res + 4*{jmp_b_ts}], eax
    clts
    .byte 0xEA
    .long 0
    .word {sel_a}
    .global t32_b_after_jmp
t32_b_after_jmp:
    ud2

t32_task_c:
    pushfd
    pop eax
    and eax, {nt}
    mov [t32_res + 4*{call_c_nt}], eax
    movzx eax, word ptr [t32_tss + {tss_c}]
    mov [t32_res + 4*{call_c_link}], eax
    mov eax, [t32_gdt + {sel_a} + 4]
    and eax, {busy}
    mov [t32_res + 4*{call_c_busy_a}], eax
    mov eax, [t32_gdt + {sel_c} + 4]
    and eax, {busy}
    mov [t32_res + 4*{call_c_busy_c}], eax
    clts
    iretd
    .global t32_c_after_iret
t32_c_after_iret:
    jmp t32_task_c

t32_task_d:
    pop eax
    mov [t32_res + 4*{df_error}], eax
    mov [t32_res + 4*{df_esp}], esp
    pushfd
    pop eax
    mov [t32_res + 4*{df_eflags}], eax
    movzx eax, word ptr [t32_tss + {tss_d}]
    mov [t32_res + 4*{df_link}], eax
    str ax
    movzx eax, ax
    mov [t32_res + 4*{df_tr}], eax
    mov eax, [t32_tss + {tss_a} + 0x20]
    mov [t32_res + 4*{df_saved_eip}], eax
    mov eax, [t32_recover]
    mov [t32_tss + {tss_a} + 0x20], eax
    inc dword ptr [t32_res + 4*{df_count}]
    clts
    iretd
    jmp t32_task_d

t32_task_e:
    inc dword ptr [t32_res + 4*{nmi_count}]
    cmp dword ptr [t32_res + 4*{nmi_count}], 1
    jne t32_task_e_return
    pushfd
    pop eax
    mov [t32_res + 4*{nmi_eflags}], eax
    movzx eax, word ptr [t32_tss + {tss_e}]
    mov [t32_res + 4*{nmi_link}], eax
    call t32_send_nmi
    mov ecx, 20000
t32_task_e_spin:
    pause
    dec ecx
    jnz t32_task_e_spin
    mov eax, [t32_res + 4*{nmi_count}]
    mov [t32_res + 4*{nmi_inside}], eax
t32_task_e_return:
    clts
    iretd
    jmp t32_task_e

t32_task_g:
    clts
    .byte 0xEA
    .long 0
    .word {sel_a}

# An IRET in the task it runs in: with NT set it returns to the task in the back link.
t32_task_return:
    iretd
    jmp t32_task_return

# Fault handlers with an error code: record vector, error code, the interrupted CS and the
# current TR, and resume at t32_recover. Only SS-relative accesses: DS may be the bad one.
t32_isr_ts:
    push 10
    jmp t32_isr_common
t32_isr_np:
    push 11
    jmp t32_isr_common
t32_isr_ss:
    push 12
    jmp t32_isr_common
t32_isr_gp:
    push 13
t32_isr_common:
    push eax
    mov eax, [esp + 4]
    mov ss:[t32_res + 4*{fault_vec}], eax
    mov eax, [esp + 8]
    mov ss:[t32_res + 4*{fault_err}], eax
    mov eax, [esp + 16]
    mov ss:[t32_res + 4*{fault_cs}], eax
    str ax
    movzx eax, ax
    mov ss:[t32_res + 4*{fault_tr}], eax
    mov eax, ss:[t32_recover]
    mov [esp + 12], eax
    pop eax
    add esp, 8
    iretd

t32_isr_db:
    push eax
    mov eax, dr6
    mov ss:[t32_res + 4*{db_dr6}], eax
    str ax
    movzx eax, ax
    mov ss:[t32_res + 4*{db_tr}], eax
    inc dword ptr ss:[t32_res + 4*{db_count}]
    xor eax, eax
    mov dr6, eax
    pop eax
    iretd

    .code64
t32_back64:
    lgdt [rip + t32_saved_gdtr]
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, [rip + t32_saved_rsp]
    lea rax, [rip + t32_back64_cs]
    push 0x08
    push rax
    retfq
t32_back64_cs:
    lidt [rip + t32_saved_idtr]
    clts
    popfq
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

    .section .data.guest_kit_tasks32, "aw"
    .p2align 3
t32_gdtr:
    .word {gdt_entries}*8 - 1
    .quad t32_gdt
    .p2align 3
t32_idtr:
    .word 32*8 - 1
    .quad t32_idt
    .p2align 3
t32_saved_gdtr:
    .skip 16
t32_saved_idtr:
    .skip 16
t32_saved_rsp:
    .quad 0
t32_recover:
    .long 0
t32_apic:
    .long 0
t32_apic_id:
    .long 0

    .section .bss.guest_kit_tasks32, "aw", @nobits
    .p2align 4
    .global t32_gdt
t32_gdt:
    .skip {gdt_entries}*8
    .p2align 4
    .global t32_idt
t32_idt:
    .skip 32*8
    .p2align 4
    .global t32_res
t32_res:
    .skip 4*{slots}
    .p2align 7
    .global t32_tss
t32_tss:
    .skip {tss_size}*{tasks}
    .p2align 4
    .global t32_stacks
t32_stacks:
    .skip {stack}*{tasks}
t32_stack_a_top = t32_stacks + {stack}
"#,
    code32 = const SEL_CODE32,
    code64 = const SEL_CODE64,
    data = const SEL_DATA,
    sel_a = const SEL_A,
    sel_b = const SEL_B,
    sel_c = const SEL_C,
    sel_short = const SEL_SHORT,
    sel_absent = const SEL_ABSENT,
    sel_f = const SEL_F,
    sel_g = const SEL_G,
    sel_gp = const SEL_GP,
    tss_a = const A * TSS_SIZE,
    tss_b = const B * TSS_SIZE,
    tss_c = const C * TSS_SIZE,
    tss_d = const D * TSS_SIZE,
    tss_e = const E * TSS_SIZE,
    busy = const BUSY,
    nt = const NT,
    gdt_entries = const GDT_ENTRIES,
    slots = const r::SLOTS,
    tss_size = const TSS_SIZE,
    tasks = const TASKS,
    stack = const STACK,
    status = const r::STATUS,
    jmp_b_eax = const r::JMP_B_EAX,
    jmp_b_nt = const r::JMP_B_NT,
    jmp_b_busy_a = const r::JMP_B_BUSY_A,
    jmp_b_busy_b = const r::JMP_B_BUSY_B,
    jmp_b_tr = const r::JMP_B_TR,
    jmp_b_ts = const r::JMP_B_TS,
    jmp_a_ebx = const r::JMP_A_EBX,
    jmp_a_esi = const r::JMP_A_ESI,
    jmp_a_busy_b = const r::JMP_A_BUSY_B,
    jmp_b_saved_eip = const r::JMP_B_SAVED_EIP,
    call_c_nt = const r::CALL_C_NT,
    call_c_link = const r::CALL_C_LINK,
    call_c_busy_a = const r::CALL_C_BUSY_A,
    call_c_busy_c = const r::CALL_C_BUSY_C,
    call_a_busy_c = const r::CALL_A_BUSY_C,
    call_a_eflags = const r::CALL_A_EFLAGS,
    call_c_saved_eflags = const r::CALL_C_SAVED_EFLAGS,
    call_c_saved_eip = const r::CALL_C_SAVED_EIP,
    busy_vec = const r::BUSY_VEC,
    busy_err = const r::BUSY_ERR,
    short_vec = const r::SHORT_VEC,
    short_err = const r::SHORT_ERR,
    np_vec = const r::NP_VEC,
    np_err = const r::NP_ERR,
    post_vec = const r::POST_VEC,
    post_err = const r::POST_ERR,
    post_tr = const r::POST_TR,
    post_cs = const r::POST_CS,
    post_busy_f = const r::POST_BUSY_F,
    df_count = const r::DF_COUNT,
    df_error = const r::DF_ERROR,
    df_link = const r::DF_LINK,
    df_eflags = const r::DF_EFLAGS,
    df_saved_eip = const r::DF_SAVED_EIP,
    df_esp = const r::DF_ESP,
    df_tr = const r::DF_TR,
    nmi_count = const r::NMI_COUNT,
    nmi_inside = const r::NMI_INSIDE,
    nmi_eflags = const r::NMI_EFLAGS,
    nmi_link = const r::NMI_LINK,
    db_dr6 = const r::DB_DR6,
    db_tr = const r::DB_TR,
    db_count = const r::DB_COUNT,
    fault_vec = const r::FAULT_VEC,
    fault_err = const r::FAULT_ERR,
    fault_cs = const r::FAULT_CS,
    fault_tr = const r::FAULT_TR,
);

unsafe extern "C" {
    fn guest_kit_tasks32();
    static mut t32_gdt: [u64; GDT_ENTRIES];
    static mut t32_idt: [u64; 32];
    static mut t32_res: [u32; r::SLOTS];
    static mut t32_tss: [[u32; TSS_SIZE / 4]; TASKS];
    static t32_stacks: [u8; STACK * TASKS];
    static t32_task_b: u8;
    static t32_task_c: u8;
    static t32_task_d: u8;
    static t32_task_e: u8;
    static t32_task_g: u8;
    static t32_task_return: u8;
    static t32_b_after_jmp: u8;
    static t32_c_after_iret: u8;
    static t32_df_fault: u8;
    static t32_isr_db: u8;
    static t32_isr_ts: u8;
    static t32_isr_np: u8;
    static t32_isr_ss: u8;
    static t32_isr_gp: u8;
}

fn addr<T>(p: *const T) -> u32 {
    p as usize as u32
}

/// A descriptor from base, limit (bytes, or pages with G), access byte and flags nibble (SDM
/// Vol. 3A, "Segment Descriptors").
fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    (limit as u64 & 0xFFFF)
        | (base as u64 & 0xFF_FFFF) << 16
        | (access as u64) << 40
        | ((limit as u64 >> 16) & 0xF) << 48
        | (flags as u64 & 0xF) << 52
        | ((base as u64 >> 24) & 0xFF) << 56
}

/// A 32-bit interrupt gate to the case's code segment, and a task gate.
fn interrupt_gate(handler: u32) -> u64 {
    (handler as u64 & 0xFFFF)
        | (SEL_CODE32 as u64) << 16
        | 0x8E_u64 << 40
        | ((handler as u64 >> 16) & 0xFFFF) << 48
}

fn task_gate(tss: u16) -> u64 {
    (tss as u64) << 16 | 0x85_u64 << 40
}

/// A 32-bit TSS starting at `eip` on its own stack, flat ring-0 segments (SDM Vol. 3A,
/// "Task-State Segment (TSS)"): dword 1/2 ESP0/SS0, 8 EIP, 9 EFLAGS, 10-17 EAX..EDI, 18-23
/// ES, CS, SS, DS, FS, GS, 24 LDT, 25 the T bit and the I/O map base.
fn task(t: &mut [u32; TSS_SIZE / 4], eip: u32, stack_top: u32) {
    *t = [0; TSS_SIZE / 4];
    t[1] = stack_top;
    t[2] = SEL_DATA as u32;
    t[8] = eip;
    t[9] = 0x2;
    t[14] = stack_top;
    for (i, sel) in [SEL_DATA, SEL_CODE32, SEL_DATA, SEL_DATA, SEL_DATA, SEL_DATA]
        .into_iter()
        .enumerate()
    {
        t[18 + i] = sel as u32;
    }
    t[25] = 0x68 << 16;
}

pub fn task_switches() -> Outcome {
    // SAFETY: the case runs alone on one CPU with interrupts off; the tables and results are
    // used only here and by the assembly this calls.
    unsafe {
        let tss = &mut *addr_of_mut!(t32_tss);
        let stacks = addr_of!(t32_stacks) as usize as u32;
        let top = |i: usize| stacks + ((i + 1) * STACK) as u32;
        let base = |i: usize| addr_of!(t32_tss) as usize as u32 + (i * TSS_SIZE) as u32;
        task(&mut tss[A], 0, top(A));
        task(&mut tss[B], addr(addr_of!(t32_task_b)), top(B));
        tss[B][10] = 0xB0B0_0001;
        task(&mut tss[C], addr(addr_of!(t32_task_c)), top(C));
        task(&mut tss[D], addr(addr_of!(t32_task_d)), top(D));
        task(&mut tss[E], addr(addr_of!(t32_task_e)), top(E));
        task(&mut tss[SHORT], addr(addr_of!(t32_task_return)), top(SHORT));
        task(&mut tss[F], addr(addr_of!(t32_task_return)), top(F));
        tss[F][21] = SEL_BAD as u32;
        task(&mut tss[G], addr(addr_of!(t32_task_g)), top(G));
        tss[G][25] |= 1;

        let gdt = &mut *addr_of_mut!(t32_gdt);
        *gdt = [0; GDT_ENTRIES];
        let mut set = |sel: u16, d: u64| gdt[sel as usize / 8] = d;
        set(SEL_CODE32, descriptor(0, 0xFFFFF, 0x9B, 0xC));
        set(SEL_DATA, descriptor(0, 0xFFFFF, 0x93, 0xC));
        set(SEL_CODE64, descriptor(0, 0xFFFFF, 0x9B, 0xA));
        for (sel, i) in [
            (SEL_A, A),
            (SEL_B, B),
            (SEL_C, C),
            (SEL_D, D),
            (SEL_E, E),
            (SEL_F, F),
            (SEL_G, G),
        ] {
            set(sel, descriptor(base(i), 0x67, 0x89, 0));
        }
        set(SEL_SHORT, descriptor(base(SHORT), 0x50, 0x89, 0));
        set(SEL_ABSENT, descriptor(base(SHORT), 0x67, 0x09, 0));

        let idt = &mut *addr_of_mut!(t32_idt);
        *idt = [0; 32];
        idt[1] = interrupt_gate(addr(addr_of!(t32_isr_db)));
        idt[2] = task_gate(SEL_E);
        idt[8] = task_gate(SEL_D);
        idt[10] = interrupt_gate(addr(addr_of!(t32_isr_ts)));
        idt[11] = interrupt_gate(addr(addr_of!(t32_isr_np)));
        idt[12] = interrupt_gate(addr(addr_of!(t32_isr_ss)));
        idt[13] = interrupt_gate(addr(addr_of!(t32_isr_gp)));

        *addr_of_mut!(t32_res) = [0; r::SLOTS];
        guest_kit_tasks32();
    }
    // SAFETY: the assembly is done with the results.
    let res = unsafe { *addr_of!(t32_res) };
    let b_after = addr(addr_of!(t32_b_after_jmp));
    let c_after = addr(addr_of!(t32_c_after_iret));
    let df_fault = addr(addr_of!(t32_df_fault));
    let d_top = addr_of!(t32_stacks) as usize as u32 + ((D + 1) * STACK) as u32;
    let expect: [(&str, usize, u32, u32); 43] = [
        ("finished", r::STATUS, u32::MAX, 1),
        ("jmp.b.eax", r::JMP_B_EAX, u32::MAX, 0xB0B0_0001),
        ("jmp.b.nt", r::JMP_B_NT, NT, 0),
        ("jmp.b.busy-a", r::JMP_B_BUSY_A, BUSY, 0),
        ("jmp.b.busy-b", r::JMP_B_BUSY_B, BUSY, BUSY),
        ("jmp.b.tr", r::JMP_B_TR, 0xFFFF, SEL_B as u32),
        ("jmp.b.cr0-ts", r::JMP_B_TS, 8, 8),
        ("jmp.a.ebx", r::JMP_A_EBX, u32::MAX, 0x1234_5678),
        ("jmp.a.esi", r::JMP_A_ESI, u32::MAX, 0x9ABC_DEF0),
        ("jmp.a.busy-b", r::JMP_A_BUSY_B, BUSY, 0),
        ("jmp.b.saved-eip", r::JMP_B_SAVED_EIP, u32::MAX, b_after),
        ("call.c.nt", r::CALL_C_NT, NT, NT),
        ("call.c.link", r::CALL_C_LINK, 0xFFFF, SEL_A as u32),
        ("call.c.busy-a", r::CALL_C_BUSY_A, BUSY, BUSY),
        ("call.c.busy-c", r::CALL_C_BUSY_C, BUSY, BUSY),
        ("call.a.busy-c", r::CALL_A_BUSY_C, BUSY, 0),
        ("call.a.nt", r::CALL_A_EFLAGS, NT, 0),
        ("call.c.saved-nt", r::CALL_C_SAVED_EFLAGS, NT, 0),
        ("call.c.saved-eip", r::CALL_C_SAVED_EIP, u32::MAX, c_after),
        ("busy.vector", r::BUSY_VEC, u32::MAX, 13),
        ("busy.error", r::BUSY_ERR, u32::MAX, SEL_A as u32),
        ("short.vector", r::SHORT_VEC, u32::MAX, 10),
        ("short.error", r::SHORT_ERR, u32::MAX, SEL_SHORT as u32),
        ("absent.vector", r::NP_VEC, u32::MAX, 11),
        ("absent.error", r::NP_ERR, u32::MAX, SEL_ABSENT as u32),
        ("post.vector", r::POST_VEC, u32::MAX, 10),
        ("post.error", r::POST_ERR, u32::MAX, SEL_BAD as u32),
        ("post.tr", r::POST_TR, 0xFFFF, SEL_F as u32),
        ("post.cs", r::POST_CS, 0xFFFF, SEL_CODE32 as u32),
        ("post.busy-f", r::POST_BUSY_F, BUSY, 0),
        ("df.count", r::DF_COUNT, u32::MAX, 1),
        ("df.error", r::DF_ERROR, u32::MAX, 0),
        ("df.esp", r::DF_ESP, u32::MAX, d_top),
        ("df.nt", r::DF_EFLAGS, NT, NT),
        ("df.link", r::DF_LINK, 0xFFFF, SEL_A as u32),
        ("df.tr", r::DF_TR, 0xFFFF, SEL_D as u32),
        ("df.saved-eip", r::DF_SAVED_EIP, u32::MAX, df_fault),
        ("nmi.count", r::NMI_COUNT, u32::MAX, 2),
        ("nmi.inside", r::NMI_INSIDE, u32::MAX, 1),
        ("nmi.nt", r::NMI_EFLAGS, NT, NT),
        ("nmi.link", r::NMI_LINK, 0xFFFF, SEL_A as u32),
        ("db.count", r::DB_COUNT, u32::MAX, 1),
        ("db.bt", r::DB_DR6, DR6_BT, DR6_BT),
    ];
    for (name, slot, mask, want) in expect {
        let got = res[slot];
        if got & mask != want {
            return fail!(
                "mismatch what={} got={:#x} expected={:#x} fault_vec={:#x} fault_err={:#x}",
                name,
                got,
                want,
                res[r::FAULT_VEC],
                res[r::FAULT_ERR]
            );
        }
    }
    if res[r::DB_TR] & 0xFFFF != SEL_G as u32 {
        return fail!("mismatch what=db.tr got={:#x}", res[r::DB_TR]);
    }
    pass!(
        "switches=jmp,call,iret,df-gate,nmi-gate faults=gp:{:#x},ts:{:#x},np:{:#x} post=ts:{:#x} df_eip={:#x} nmis={} dr6={:#x}",
        res[r::BUSY_ERR],
        res[r::SHORT_ERR],
        res[r::NP_ERR],
        res[r::POST_ERR],
        res[r::DF_SAVED_EIP],
        res[r::NMI_COUNT],
        res[r::DB_DR6]
    )
}
