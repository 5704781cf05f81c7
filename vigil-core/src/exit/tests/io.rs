//! IN/OUT by the ownership table, checked over the whole access width.

use crate::exit::{Action, Exit, IoAccess, Stop};
use crate::owners::SHUTDOWN_PORT;
use crate::testing::{cpu, exit, PM1A};
use crate::vcpu::Seg;

fn io(port: u16, size: u8, input: bool) -> Exit {
    Exit::Io(IoAccess {
        port,
        size,
        input,
        string: false,
        rep: false,
        addr_size: 8,
        segment: Seg::Ds,
    })
}

#[test]
fn com2_is_no_device_to_the_guest() {
    let mut c = cpu("");
    c.vcpu.gprs[0] = 0x1234_5678_9abc_def0;
    assert_eq!(exit(&mut c, io(0x2F8, 1, true)), Action::Advance);
    assert_eq!(
        c.vcpu.gprs[0], 0x1234_5678_9abc_deff,
        "reads float high, upper RAX kept"
    );
    c.vcpu.gprs[0] = 0x41;
    exit(&mut c, io(0x2F8, 1, false));
    assert!(
        c.vcpu.host.port_log.is_empty(),
        "COM2 never touched for the guest"
    );
}

#[test]
fn a_word_read_below_com2_touches_only_the_guests_byte() {
    // A word at 0x2F7 reads the guest's 0x2F7 and Vigil's 0x2F8: the device sees only the
    // guest's byte; Vigil's byte floats high.
    let mut c = cpu("");
    c.vcpu.host.ports.insert(0x2F7, 0x5A);
    c.vcpu.host.ports.insert(0x2F8, 0x11);
    exit(&mut c, io(0x2F7, 2, true));
    assert_eq!(c.vcpu.gprs[0] & 0xFFFF, 0xFF5A);
    assert_eq!(c.vcpu.host.port_log, [(0x2F7, 1, None)]);
}

#[test]
fn a_dword_write_below_com2_reaches_only_the_guests_bytes() {
    let mut c = cpu("");
    c.vcpu.gprs[0] = 0xAABB_CCDD;
    exit(&mut c, io(0x2F6, 4, false));
    assert_eq!(
        c.vcpu.host.port_log,
        [(0x2F6, 1, Some(0xDD)), (0x2F7, 1, Some(0xCC))]
    );
    assert!(!c.vcpu.host.ports.contains_key(&0x2F8));
    assert!(!c.vcpu.host.ports.contains_key(&0x2F9));
}

#[test]
fn a_dword_read_zero_extends_into_rax() {
    let mut c = cpu("trap=io:0x80-0x83");
    c.vcpu.gprs[0] = u64::MAX;
    for (i, b) in [1u8, 2, 3, 4].into_iter().enumerate() {
        c.vcpu.host.ports.insert(0x80 + i as u16, b);
    }
    exit(&mut c, io(0x80, 4, true));
    assert_eq!(c.vcpu.gprs[0], 0x0403_0201);
    assert_eq!(
        c.vcpu.host.port_log,
        [(0x80, 4, None)],
        "one access, full width"
    );
}

#[test]
fn the_shutdown_sequence_powers_off() {
    let mut c = cpu("");
    for &b in b"Shut" {
        c.vcpu.gprs[0] = b as u64;
        assert_eq!(exit(&mut c, io(SHUTDOWN_PORT, 1, false)), Action::Advance);
    }
    // A wrong byte starts over.
    c.vcpu.gprs[0] = b'x' as u64;
    exit(&mut c, io(SHUTDOWN_PORT, 1, false));
    let mut last = Action::Advance;
    for &b in b"Shutdown" {
        c.vcpu.gprs[0] = b as u64;
        last = exit(&mut c, io(SHUTDOWN_PORT, 1, false));
    }
    assert_eq!(last, Action::Stop(Stop::PowerOff));
}

#[test]
fn the_shutdown_port_decodes_only_accesses_that_start_at_it() {
    // Words at 0x88FF whose high bytes spell the sequence: Bochs dispatches them to 0x88FF
    // alone, and so does Vigil's shutdown port.
    let mut c = cpu("");
    for &b in b"Shutdown" {
        c.vcpu.gprs[0] = u64::from(b) << 8 | u64::from(b);
        assert_eq!(
            exit(&mut c, io(SHUTDOWN_PORT - 1, 2, false)),
            Action::Advance
        );
    }
    assert!(c
        .vcpu
        .host
        .port_log
        .iter()
        .all(|&(p, ..)| p == SHUTDOWN_PORT - 1));
}

#[test]
fn acpi_sleep_powers_off_in_any_width() {
    let mut c = cpu("");
    c.vcpu.gprs[0] = 0x2001;
    assert_eq!(
        exit(&mut c, io(PM1A, 2, false)),
        Action::Stop(Stop::PowerOff)
    );
    // The byte of PM1a_CNT that holds SLP_EN, written alone.
    let mut c = cpu("");
    c.vcpu.gprs[0] = 0x20;
    assert_eq!(
        exit(&mut c, io(PM1A + 1, 1, false)),
        Action::Stop(Stop::PowerOff)
    );
    // A write without SLP_EN goes to the device.
    let mut c = cpu("");
    c.vcpu.gprs[0] = 0x0001;
    assert_eq!(exit(&mut c, io(PM1A, 2, false)), Action::Advance);
    assert_eq!(c.vcpu.host.port_log, [(PM1A, 2, Some(1))]);
}

#[test]
fn a_trapped_port_behaves_as_the_device() {
    let mut c = cpu("trap=io:0x3f8-0x3ff");
    c.vcpu.host.ports.insert(0x3FD, 0x60);
    c.vcpu.gprs[0] = 0xFFFF_0000;
    exit(&mut c, io(0x3FD, 1, true));
    assert_eq!(c.vcpu.gprs[0], 0xFFFF_0060);
    c.vcpu.gprs[0] = 0x41;
    exit(&mut c, io(0x3F8, 1, false));
    assert_eq!(c.vcpu.host.ports[&0x3F8], 0x41);
}

#[test]
fn an_access_that_wraps_past_port_ffff_is_split() {
    let mut c = cpu("trap=io:0xffff");
    c.vcpu.host.ports.insert(0xFFFF, 0x12);
    c.vcpu.host.ports.insert(0x0000, 0x34);
    exit(&mut c, io(0xFFFF, 2, true));
    assert_eq!(c.vcpu.gprs[0] & 0xFFFF, 0x3412);
    assert_eq!(c.vcpu.host.port_log, [(0xFFFF, 1, None), (0, 1, None)]);
}
