//! The XDP program weir attaches, assembled here as eBPF instructions: no clang, no BPF
//! toolchain, no object file. It is small enough to read whole in `listing()` (and `weir`
//! logs nothing of it; the unit test prints it on failure), and the kernel's verifier checks
//! every load against the packet's bounds before it runs.
//!
//! What it does, per frame (the same cases `frame::parse` takes; everything else `XDP_PASS`,
//! the kernel's):
//!
//! 1. Ethernet II with IPv4 (version 4, IHL 5, protocol UDP, not a fragment) or IPv6 (next
//!    header UDP);
//! 2. the UDP destination port and address are one of `listen` (an unspecified address: any
//!    address of that family on the port);
//! 3. the DNS opcode is not UPDATE (5): UPDATEs go to the kernel's socket and weir's UDP
//!    workers, which hand them to the writer (`dns::updates`);
//! 4. then `bpf_redirect_map(xsks, rx_queue_index, fallback)`: to the AF_XDP socket of the
//!    queue the frame came in on, or, if that queue has none, the `fallback` action
//!    (`XDP_PASS` in service: a queue weir does not take stays the kernel's).
//!
//! Loads are in host byte order (as eBPF's are); every constant compared with packet bytes is
//! made from the network-order bytes with `from_ne_bytes`, so the program is right on either
//! endianness.

use std::net::{IpAddr, SocketAddr};

/// XDP verdicts (`enum xdp_action`).
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;

/// One eBPF instruction (`struct bpf_insn`), as the kernel reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// Registers used: r1-r5 are call arguments and scratch, r6-r7 callee-saved.
#[derive(Clone, Copy, Debug)]
enum Reg {
    R0 = 0,
    R1 = 1,
    R2 = 2,
    R3 = 3,
    R4 = 4,
    R5 = 5,
    R6 = 6,
    R7 = 7,
}
use Reg::*;

/// Load sizes (`BPF_LDX | BPF_MEM | size`).
#[derive(Clone, Copy, Debug)]
enum Size {
    B = 0x71,
    H = 0x69,
    W = 0x61,
}

/// Jump conditions against an immediate: 64-bit (`BPF_JMP`) or 32-bit (`BPF_JMP32`, for
/// addresses, whose words would be sign-extended in a 64-bit compare).
#[derive(Clone, Copy, Debug)]
enum Cond {
    Eq = 0x15,
    Ne = 0x55,
    Ne32 = 0x56,
}

/// Jump targets, resolved when the program is finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Label(usize);

/// A tiny assembler: instructions, and jumps to labels patched at `finish`.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    jumps: Vec<(usize, Label)>,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }

    fn emit(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: (src as u8) << 4 | dst as u8,
            off,
            imm,
        });
    }

    fn mov_reg(&mut self, dst: Reg, src: Reg) {
        self.emit(0xbf, dst, src, 0, 0);
    }

    fn mov(&mut self, dst: Reg, imm: i32) {
        self.emit(0xb7, dst, R0, 0, imm);
    }

    fn add(&mut self, dst: Reg, imm: i32) {
        self.emit(0x07, dst, R0, 0, imm);
    }

    fn and(&mut self, dst: Reg, imm: i32) {
        self.emit(0x57, dst, R0, 0, imm);
    }

    fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) {
        self.emit(size as u8, dst, src, off, 0);
    }

    fn jump_if(&mut self, cond: Cond, dst: Reg, imm: i32, to: Label) {
        self.jumps.push((self.insns.len(), to));
        self.emit(cond as u8, dst, R0, 0, imm);
    }

    /// `if dst > src goto to` (unsigned, 64-bit).
    fn jump_if_greater(&mut self, dst: Reg, src: Reg, to: Label) {
        self.jumps.push((self.insns.len(), to));
        self.emit(0x2d, dst, src, 0, 0);
    }

    fn jump(&mut self, to: Label) {
        self.jumps.push((self.insns.len(), to));
        self.emit(0x05, R0, R0, 0, 0);
    }

    /// `dst = map` (`BPF_LD | BPF_IMM | BPF_DW` with `BPF_PSEUDO_MAP_FD`: two slots).
    fn load_map(&mut self, dst: Reg, map_fd: i32) {
        self.emit(0x18, dst, R1, 0, map_fd);
        self.emit(0, R0, R0, 0, 0);
    }

    fn call(&mut self, helper: i32) {
        self.emit(0x85, R0, R0, 0, helper);
    }

    fn exit(&mut self) {
        self.emit(0x95, R0, R0, 0, 0);
    }

    #[allow(
        clippy::expect_used,
        reason = "labels and offsets are fixed by `build`; a failure is a bug the unit tests hit"
    )]
    fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.jumps {
            let target = self.labels[label.0].expect("every label used is bound");
            self.insns[at].off = i16::try_from(target as isize - at as isize - 1)
                .expect("the program is far shorter than 32k instructions");
        }
        self.insns
    }
}

/// `bpf_redirect_map`'s helper number.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;

const ETH: i16 = 14;
/// The DNS header byte holding QR, opcode, AA, TC, RD; the offset from the UDP header.
const DNS_FLAGS: i16 = 8 + 2;
const OPCODE_UPDATE: i32 = 5;

fn ne16(v: u16) -> i32 {
    i32::from(u16::from_ne_bytes(v.to_be_bytes()))
}

fn ne32(bytes: [u8; 4]) -> i32 {
    i32::from_ne_bytes(bytes)
}

/// The program for `listen` (the bound addresses weir serves on this interface), redirecting
/// to the XSKMAP `map_fd`, with `fallback` for a queue without a socket; frames longer than
/// `max_frame` (more than a UMEM frame holds) go to the kernel.
pub fn build(listen: &[SocketAddr], map_fd: i32, fallback: i32, max_frame: u16) -> Vec<Insn> {
    let mut a = Asm::default();
    let (pass, redirect, v4, v6) = (a.label(), a.label(), a.label(), a.label());
    // r6 = ctx; r2 = data; r3 = data_end.
    a.mov_reg(R6, R1);
    a.load(Size::W, R2, R1, 0);
    a.load(Size::W, R3, R1, 4);
    // The shortest frame taken: Ethernet, IPv4, UDP, and the DNS flags byte.
    a.mov_reg(R4, R2);
    a.add(R4, i32::from(ETH + 20 + DNS_FLAGS + 1));
    a.jump_if_greater(R4, R3, pass);
    a.mov_reg(R4, R2);
    a.add(R4, i32::from(max_frame));
    a.jump_if_greater(R3, R4, pass);
    a.load(Size::H, R5, R2, 12);
    let has = |v6: bool| listen.iter().any(|l| l.is_ipv6() == v6);
    if has(false) {
        a.jump_if(Cond::Eq, R5, ne16(0x0800), v4);
    }
    if has(true) {
        a.jump_if(Cond::Eq, R5, ne16(0x86DD), v6);
    }
    a.jump(pass);

    for family_v6 in [false, true] {
        if !has(family_v6) {
            continue;
        }
        let (ip_len, port_at, addr_at) = if family_v6 {
            a.bind(v6);
            a.mov_reg(R4, R2);
            a.add(R4, i32::from(ETH + 40 + DNS_FLAGS + 1));
            a.jump_if_greater(R4, R3, pass);
            // Version 6, next header UDP (no extension headers).
            a.load(Size::B, R5, R2, ETH);
            a.and(R5, 0xF0);
            a.jump_if(Cond::Ne, R5, 0x60, pass);
            a.load(Size::B, R5, R2, ETH + 6);
            a.jump_if(Cond::Ne, R5, 17, pass);
            (40, ETH + 40 + 2, ETH + 24)
        } else {
            a.bind(v4);
            // Version 4 without options, UDP, not a fragment (MF clear, offset 0).
            a.load(Size::B, R5, R2, ETH);
            a.jump_if(Cond::Ne, R5, 0x45, pass);
            a.load(Size::B, R5, R2, ETH + 9);
            a.jump_if(Cond::Ne, R5, 17, pass);
            a.load(Size::H, R5, R2, ETH + 6);
            a.and(R5, ne16(0x3FFF));
            a.jump_if(Cond::Ne, R5, 0, pass);
            (20, ETH + 20 + 2, ETH + 16)
        };
        // UPDATEs are the kernel's (weir's sockets hand them to the writer).
        a.load(Size::B, R5, R2, ETH + ip_len + DNS_FLAGS);
        a.and(R5, 0x78);
        a.jump_if(Cond::Eq, R5, OPCODE_UPDATE << 3, pass);
        a.load(Size::H, R5, R2, port_at);
        for l in listen.iter().filter(|l| l.is_ipv6() == family_v6) {
            let next = a.label();
            a.jump_if(Cond::Ne, R5, ne16(l.port()), next);
            let words: Vec<[u8; 4]> = match l.ip() {
                ip if ip.is_unspecified() => Vec::new(),
                IpAddr::V4(ip) => vec![ip.octets()],
                IpAddr::V6(ip) => ip
                    .octets()
                    .chunks_exact(4)
                    .map(|w| [w[0], w[1], w[2], w[3]])
                    .collect(),
            };
            for (i, word) in words.iter().enumerate() {
                a.load(Size::W, R7, R2, addr_at + 4 * i as i16);
                a.jump_if(Cond::Ne32, R7, ne32(*word), next);
            }
            a.jump(redirect);
            a.bind(next);
        }
        a.jump(pass);
    }

    a.bind(redirect);
    // bpf_redirect_map(map, ctx->rx_queue_index, fallback)
    a.load(Size::W, R2, R6, 16);
    a.load_map(R1, map_fd);
    a.mov(R3, fallback);
    a.call(BPF_FUNC_REDIRECT_MAP);
    a.exit();

    a.bind(pass);
    a.mov(R0, XDP_PASS);
    a.exit();
    a.finish()
}

/// The program as text, one instruction a line (for review and test failures).
pub fn listing(insns: &[Insn]) -> String {
    insns
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "{i:3}: code {:#04x} dst r{} src r{} off {:4} imm {:#x}\n",
                n.code,
                n.regs & 0xF,
                n.regs >> 4,
                n.off,
                n.imm
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_inside_the_program_and_it_ends_in_exit() {
        let listen: Vec<SocketAddr> = vec![
            "10.0.0.1:53".parse().unwrap(),
            "0.0.0.0:5353".parse().unwrap(),
            "[fd00::1]:53".parse().unwrap(),
        ];
        let p = build(&listen, 7, XDP_PASS, 1792);
        let text = listing(&p);
        for (i, n) in p.iter().enumerate() {
            if n.code & 0x07 == 0x05 || n.code & 0x07 == 0x06 {
                if n.code == 0x85 || n.code == 0x95 {
                    continue;
                }
                let target = i as isize + 1 + n.off as isize;
                assert!((0..p.len() as isize).contains(&target), "{i}\n{text}");
            }
        }
        assert_eq!(p.last().unwrap().code, 0x95, "{text}");
        // The map load carries the fd and the pseudo-map source register.
        assert!(
            p.iter()
                .any(|n| n.code == 0x18 && n.imm == 7 && n.regs >> 4 == 1)
        );
    }
}
