//! The first stage of the packet path: bytes from COM2 become whole, checked packets.
//!
//! `gdbstub` ends its session on a bad checksum, a NAK, a stray byte between packets or a packet
//! longer than its buffer. A serial line can deliver all of those, and a debugger must not die
//! of line noise, so every byte passes through [`Framer`] first:
//! - between packets only `$` (a packet starts), `+` (ack) and 0x03 (interrupt) mean anything;
//!   everything else, `-` included, is dropped (the stub never retransmits, so a NAK has no use);
//! - a packet is `$`, a body of at most [`MAX_BODY`] bytes without `$` or `#`, `#` and two hex
//!   digits that must equal the body's byte sum (GDB manual, "Overview" of the remote protocol);
//! - a `$` inside a body starts the packet again (the old one was cut off);
//! - a packet whose checksum is wrong or not hex, or whose body is too long, is reported as
//!   [`Frame::Rejected`] so the session can answer it without the protocol engine seeing it.

/// The longest packet body accepted; the stub's buffer holds a whole packet of this size.
pub const MAX_BODY: usize = 4000;

/// Why a packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    BadChecksum,
    TooLong,
}

/// What one byte completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Nothing yet.
    None,
    /// A `+` acknowledgement.
    Ack,
    /// A 0x03 interrupt request.
    Interrupt,
    /// A whole packet with a correct checksum: `$body#cc`.
    Packet(&'a [u8]),
    Rejected(Reject),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Between,
    Body,
    Check1,
    Check2,
}

pub struct Framer {
    state: State,
    buf: alloc::vec::Vec<u8>,
    overflow: bool,
    first_digit: u8,
    /// Counts for reports and tests.
    pub dropped: u64,
    pub rejected: u64,
    pub packets: u64,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

impl Framer {
    pub fn new() -> Framer {
        Framer {
            state: State::Between,
            buf: alloc::vec::Vec::with_capacity(MAX_BODY + 4),
            overflow: false,
            first_digit: 0,
            dropped: 0,
            rejected: 0,
            packets: 0,
        }
    }

    /// Whether a packet is partly received.
    pub fn in_packet(&self) -> bool {
        self.state != State::Between
    }

    fn start(&mut self) {
        self.buf.clear();
        self.buf.push(b'$');
        self.overflow = false;
        self.state = State::Body;
    }

    pub fn push(&mut self, byte: u8) -> Frame<'_> {
        match self.state {
            State::Between => match byte {
                b'$' => self.start(),
                b'+' => return Frame::Ack,
                0x03 => return Frame::Interrupt,
                _ => self.dropped += 1,
            },
            State::Body => match byte {
                b'$' => {
                    self.dropped += self.buf.len() as u64;
                    self.start();
                }
                b'#' => self.state = State::Check1,
                _ if self.buf.len() > MAX_BODY => self.overflow = true,
                _ => self.buf.push(byte),
            },
            State::Check1 => {
                self.first_digit = byte;
                self.state = State::Check2;
            }
            State::Check2 => {
                self.state = State::Between;
                let sum = self.buf[1..].iter().fold(0u8, |a, &b| a.wrapping_add(b));
                let given = hex_value(self.first_digit)
                    .zip(hex_value(byte))
                    .map(|(h, l)| h << 4 | l);
                if self.overflow {
                    self.rejected += 1;
                    return Frame::Rejected(Reject::TooLong);
                }
                if given != Some(sum) {
                    self.rejected += 1;
                    return Frame::Rejected(Reject::BadChecksum);
                }
                self.packets += 1;
                self.buf.push(b'#');
                self.buf.push(self.first_digit);
                self.buf.push(byte);
                return Frame::Packet(&self.buf);
            }
        }
        Frame::None
    }
}

/// `$body#cc` for a reply Vigil makes itself (error replies to rejected packets).
pub fn packet(body: &[u8], put: &mut dyn FnMut(u8)) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    put(b'$');
    let mut sum = 0u8;
    for &b in body {
        sum = sum.wrapping_add(b);
        put(b);
    }
    put(b'#');
    put(HEX[(sum >> 4) as usize]);
    put(HEX[(sum & 15) as usize]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn frames(input: &[u8]) -> Vec<alloc::string::String> {
        let mut f = Framer::new();
        let mut out = Vec::new();
        for &b in input {
            match f.push(b) {
                Frame::None => {}
                Frame::Packet(p) => out.push(alloc::string::String::from_utf8_lossy(p).into()),
                other => out.push(alloc::format!("{other:?}")),
            }
        }
        out
    }

    #[test]
    fn good_packets_pass_with_their_checksum() {
        assert_eq!(frames(b"+$g#67"), ["Ack", "$g#67"]);
        assert_eq!(frames(b"$qSupported#37"), ["$qSupported#37"]);
    }

    #[test]
    fn noise_between_packets_is_dropped_and_nak_ignored() {
        assert_eq!(frames(b"hello-\r\n$g#67\x03"), ["$g#67", "Interrupt"]);
    }

    #[test]
    fn bad_checksums_and_non_hex_digits_are_rejected() {
        assert_eq!(frames(b"$g#68"), ["Rejected(BadChecksum)"]);
        assert_eq!(frames(b"$g#zz"), ["Rejected(BadChecksum)"]);
    }

    #[test]
    fn a_dollar_restarts_the_packet() {
        assert_eq!(frames(b"$m10$g#67"), ["$g#67"]);
    }

    #[test]
    fn overlong_packets_are_rejected_whole() {
        let mut p = Vec::from(&b"$"[..]);
        p.extend(core::iter::repeat_n(b'a', MAX_BODY + 10));
        p.extend_from_slice(b"#00$g#67");
        assert_eq!(frames(&p), ["Rejected(TooLong)", "$g#67"]);
    }

    #[test]
    fn reply_packets_carry_their_checksum() {
        let mut out = Vec::new();
        packet(b"E01", &mut |b| out.push(b));
        assert_eq!(out, b"$E01#a6");
    }
}
