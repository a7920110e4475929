//! Every `unsafe` of the AF_XDP path, and nothing else: the `bpf(2)` calls (an XSKMAP, the
//! program, its link to an interface, a test run), and one AF_XDP socket with its UMEM and
//! four rings. Callers see safe types.
//!
//! Invariants this module keeps:
//!
//! - **Mappings live as long as their pointers.** A `Mapping` is unmapped on drop only; every
//!   ring pointer points into a mapping the same `Ring` owns, and the UMEM is owned by the
//!   `Socket` whose rings name its frames. Field order drops the socket fd (which makes the
//!   kernel let go of the UMEM) before the mappings.
//! - **A frame is touched only while weir owns it.** A frame belongs to the kernel from the
//!   moment its address is published on the fill ring (or the TX ring) until it comes back on
//!   the RX ring (or the completion ring). `Socket::frame` and `Socket::send` are only called
//!   with a frame taken from RX by the caller and not yet given back (`recycle` or `send`);
//!   `frame` also bounds-checks the descriptor against the UMEM, so a bad descriptor is refused,
//!   not read.
//! - **Ring indexes are free-running `u32`s**, masked by `size - 1` (sizes are powers of two);
//!   the kernel's index is read with `Acquire` before reading the descriptors it published,
//!   ours written with `Release` after writing the descriptors we publish (the kernel pairs
//!   these with its own barriers: `Documentation/networking/af_xdp.rst`).
//! - **Never more frames than ring slots:** the UMEM has `FRAMES` frames and each ring
//!   `FRAMES` slots, so neither the fill ring nor the TX ring can be full when weir owns a
//!   frame to put on it.
//!
//! The program's link is a `bpf_link` (BPF_LINK_CREATE): the kernel detaches the program when
//! the link's last file descriptor closes, which happens when weir exits in any way, `kill -9`
//! included. A killed weir leaves nothing attached, so a restart has nothing to replace.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::program::Insn;

/// Frames per socket (UMEM size = `FRAMES * FRAME`), and the size of every ring.
pub(super) const FRAMES: u32 = 2048;
/// Bytes per UMEM frame. Half a page, not a page: at a 4 KiB stride every frame's headers fall
/// in the same few cache sets, and the first read of a received frame was 6% of the server's
/// core under a flood (perf, bench/RESULTS.md); 2 KiB frames (Knot's size too) took the median
/// from 290,742 to 329,324 replies/s. Room for a received frame up to `RX_ROOM` bytes (MTU
/// 1778); the program leaves longer ones to the kernel.
pub(super) const FRAME: u32 = 2048;
/// The kernel writes a received frame `XDP_PACKET_HEADROOM` (256) bytes into its UMEM frame.
pub(super) const RX_ROOM: u32 = FRAME - 256;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
#[cfg(test)]
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_SKB_MODE` and `XDP_FLAGS_DRV_MODE` (if_link.h).
pub(super) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub(super) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `union bpf_attr`, large enough for every command used here; fields written at their
/// offsets in the kernel's layout (`include/uapi/linux/bpf.h`).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, at: usize, v: u32) -> &mut Attr {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, at: usize, v: u64) -> &mut Attr {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    #[cfg(test)]
    #[allow(clippy::expect_used, reason = "a 4-byte slice always converts")]
    fn read_u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, writable `bpf_attr` of the size passed; every pointer stored
    // in it (by the callers below) points at memory that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd(r: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor to us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(r as RawFd) }
}

/// A BPF_MAP_TYPE_XSKMAP of `entries` slots (queue index → AF_XDP socket).
pub(super) fn xsk_map(entries: u32) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, BPF_MAP_TYPE_XSKMAP)
        .u32(4, 4)
        .u32(8, 4)
        .u32(12, entries.max(1));
    bpf(BPF_MAP_CREATE, &mut a).map(fd)
}

/// Puts `socket` at `queue` in the XSKMAP `map`.
pub(super) fn map_set(map: &OwnedFd, queue: u32, socket: &Socket) -> io::Result<()> {
    let key = queue;
    let value = socket.fd.as_raw_fd() as u32;
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32)
        .u64(8, &raw const key as u64)
        .u64(16, &raw const value as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(drop)
}

/// Loads an XDP program; on failure the error carries the verifier's log.
pub(super) fn load(insns: &[Insn]) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut a = Attr::new();
    a.u32(0, BPF_PROG_TYPE_XDP)
        .u32(4, insns.len() as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1)
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64);
    a.0[48..52].copy_from_slice(b"weir");
    a.u32(68, BPF_XDP);
    bpf(BPF_PROG_LOAD, &mut a).map(fd).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]);
        let tail: Vec<&str> = text.lines().rev().take(6).collect();
        io::Error::new(
            e.kind(),
            format!(
                "{e}; verifier: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
        )
    })
}

/// Attaches `prog` to the interface `ifindex` as a `bpf_link` (detached when the returned
/// descriptor closes), in driver (`XDP_FLAGS_DRV_MODE`) or generic (`XDP_FLAGS_SKB_MODE`) mode.
pub(super) fn attach(prog: &OwnedFd, ifindex: u32, mode: u32) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, BPF_XDP)
        .u32(12, mode);
    bpf(BPF_LINK_CREATE, &mut a).map(fd)
}

#[cfg(test)]
/// Runs `prog` once over `frame` (BPF_PROG_TEST_RUN) and returns its verdict.
pub(super) fn test_run(prog: &OwnedFd, frame: &[u8]) -> io::Result<u32> {
    let mut out = vec![0u8; frame.len() + 512];
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(8, frame.len() as u32)
        .u32(12, out.len() as u32)
        .u64(16, frame.as_ptr() as u64)
        .u64(24, out.as_mut_ptr() as u64)
        .u32(32, 1);
    bpf(BPF_PROG_TEST_RUN, &mut a)?;
    Ok(a.read_u32(4))
}

/// The interface's index, or a clear error.
pub(super) fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::other("interface name holds a NUL"))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

/// A memory mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a mapping is plain memory; the types holding one decide who touches it.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(len: usize, fd: Option<RawFd>, offset: u64) -> io::Result<Mapping> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd),
            None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a fresh mapping chosen by the kernel; nothing aliases it yet.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if fd < 0 {
            // The UMEM (4 MiB) in transparent huge pages where the system allows them (fewer
            // TLB misses per frame; nothing changes where it does not), then touched whole so
            // no page fault happens on the query path.
            // SAFETY: `ptr..ptr + len` is the fresh private mapping made above, ours alone.
            unsafe {
                libc::madvise(ptr, len, libc::MADV_HUGEPAGE);
                std::ptr::write_bytes(ptr.cast::<u8>(), 0, len);
            }
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from a successful mmap and are unmapped once, here.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// One of the four rings shared with the kernel: `producer`/`consumer` indexes, `flags`, and
/// `FRAMES` descriptors of type `T`, all inside `map`.
struct Ring<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    /// Our side's index (the producer's on fill/TX, the consumer's on RX/completion).
    local: u32,
    _map: Mapping,
}

// SAFETY: the ring's memory is owned by the ring (its mapping); one thread uses a socket.
unsafe impl<T> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, pgoff: u64) -> io::Result<Ring<T>> {
        let len = off.desc as usize + FRAMES as usize * std::mem::size_of::<T>();
        let map = Mapping::new(len, Some(fd), pgoff)?;
        // SAFETY: the kernel's offsets lie inside the ring it mapped (of `len` bytes).
        let at = |o: u64| unsafe { map.ptr.add(o as usize) };
        let ring = Ring {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            descs: at(off.desc).cast(),
            local: 0,
            _map: map,
        };
        Ok(ring)
    }

    fn index(&self, which: *const AtomicU32) -> u32 {
        // SAFETY: points at an aligned u32 inside the live mapping.
        unsafe { (*which).load(Ordering::Acquire) }
    }

    fn publish(&self, which: *const AtomicU32, v: u32) {
        // SAFETY: as in `index`.
        unsafe { (*which).store(v, Ordering::Release) }
    }

    fn slot(&self, i: u32) -> *mut T {
        // SAFETY: masked into 0..FRAMES, inside the descriptor array.
        unsafe { self.descs.add((i & (FRAMES - 1)) as usize) }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as in `index`.
        unsafe { (*self.flags).load(Ordering::Acquire) & libc::XDP_RING_NEED_WAKEUP != 0 }
    }

    // Consumer side (RX, completion).
    fn available(&self) -> u32 {
        self.index(self.producer).wrapping_sub(self.local)
    }
    fn read(&self, i: u32) -> T {
        // SAFETY: the caller reads only descriptors below `available()`, which the kernel
        // published (Acquire in `available`) and will not touch until `release`.
        unsafe { self.slot(self.local.wrapping_add(i)).read_volatile() }
    }
    fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.publish(self.consumer, self.local);
    }

    // Producer side (fill, TX): `pending` descriptors written past the published index.
    fn write(&mut self, pending: u32, v: T) {
        // SAFETY: at most FRAMES frames exist, so the slot is free (module invariants).
        unsafe {
            self.slot(self.local.wrapping_add(pending))
                .write_volatile(v)
        }
    }
    fn submit(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.publish(self.producer, self.local);
    }
    fn in_flight(&self) -> u32 {
        self.local.wrapping_sub(self.index(self.consumer))
    }
}

/// One AF_XDP socket bound to one queue of one interface, with its own UMEM.
pub(super) struct Socket {
    // Dropped first: closing the socket releases the kernel's hold on the UMEM and rings.
    fd: OwnedFd,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    completion: Ring<u64>,
    umem: Mapping,
    /// Descriptors written to fill and TX since the last `flush`.
    fill_pending: u32,
    tx_pending: u32,
    pub(super) zero_copy: bool,
}

fn setsockopt<T>(fd: RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn getsockopt<T>(fd: RawFd, name: libc::c_int) -> io::Result<T> {
    // SAFETY: plain C structs for which all-zero is valid; the kernel writes at most `len`.
    let mut value: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

impl Socket {
    /// An AF_XDP socket on `queue` of `ifindex`: UMEM registered, rings mapped, every frame on
    /// the fill ring, bound zero-copy when the driver can and in copy mode otherwise (the
    /// kernel's own fallback when neither mode is forced).
    pub(super) fn open(ifindex: u32, queue: u32) -> io::Result<Socket> {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor, owned only here.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Mapping::new((FRAMES * FRAME) as usize, None, 0)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr as u64,
            len: umem.len as u64,
            chunk_size: FRAME,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::XDP_UMEM_REG, &reg)?;
        for ring in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt(raw, ring, &FRAMES)?;
        }
        let off: libc::xdp_mmap_offsets = getsockopt(raw, libc::XDP_MMAP_OFFSETS)?;
        let mut socket = Socket {
            rx: Ring::map(raw, &off.rx, libc::XDP_PGOFF_RX_RING as u64)?,
            tx: Ring::map(raw, &off.tx, libc::XDP_PGOFF_TX_RING as u64)?,
            fill: Ring::map(raw, &off.fr, libc::XDP_UMEM_PGOFF_FILL_RING)?,
            completion: Ring::map(raw, &off.cr, libc::XDP_UMEM_PGOFF_COMPLETION_RING)?,
            fd,
            umem,
            fill_pending: 0,
            tx_pending: 0,
            zero_copy: false,
        };
        for i in 0..FRAMES {
            socket.fill.write(i, u64::from(i * FRAME));
        }
        socket.fill.submit(FRAMES);
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_USE_NEED_WAKEUP,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `addr` is a live sockaddr_xdp of the size passed.
        let r = unsafe {
            libc::bind(
                raw,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let options: u32 = getsockopt(raw, libc::XDP_OPTIONS)?;
        socket.zero_copy = options & libc::XDP_OPTIONS_ZEROCOPY != 0;
        Ok(socket)
    }

    /// Frames waiting on the RX ring (the caller takes them with `received(i)` for `i` below
    /// this count, then `release`s them).
    pub(super) fn waiting(&self) -> u32 {
        self.rx.available().min(FRAMES)
    }

    /// The `i`th waiting frame: its UMEM frame address and its bytes, or None (with the frame
    /// address, to recycle) when the kernel's descriptor does not lie inside the UMEM.
    pub(super) fn received(&self, i: u32) -> (u64, Option<&[u8]>) {
        let d = self.rx.read(i);
        let base = d.addr & !u64::from(FRAME - 1);
        let end = d.addr.checked_add(u64::from(d.len));
        let ok =
            end.is_some_and(|end| end <= base + u64::from(FRAME) && end <= self.umem.len as u64);
        if !ok || base >= self.umem.len as u64 {
            return (base.min(u64::from((FRAMES - 1) * FRAME)), None);
        }
        // SAFETY: inside the UMEM (checked), and the frame is ours until the caller gives it
        // back with `recycle` or `send` (module invariants), so the kernel does not write it
        // while this borrow lives.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.umem.ptr.add(d.addr as usize), d.len as usize)
        };
        (base, Some(bytes))
    }

    /// Hands back the first `n` waiting RX descriptors (their frames stay the caller's until
    /// `recycle`d or `send`t).
    pub(super) fn release(&mut self, n: u32) {
        self.rx.release(n);
    }

    /// Gives a frame the caller owns back to the kernel for receiving.
    pub(super) fn recycle(&mut self, base: u64) {
        self.fill.write(self.fill_pending, base);
        self.fill_pending += 1;
    }

    /// Writes `bytes` into the caller's frame at `base` and queues it for transmission.
    /// Returns false (and recycles the frame) if `bytes` does not fit a frame.
    pub(super) fn send(&mut self, base: u64, bytes: &[u8]) -> bool {
        if bytes.len() > FRAME as usize || base + u64::from(FRAME) > self.umem.len as u64 {
            self.recycle(base);
            return false;
        }
        // SAFETY: inside the UMEM (checked above) and owned by the caller (module
        // invariants); `bytes` is caller memory, never the UMEM frame itself (the caller
        // builds replies in its own buffer), so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.umem.ptr.add(base as usize),
                bytes.len(),
            );
        }
        self.tx.write(
            self.tx_pending,
            libc::xdp_desc {
                addr: base,
                len: bytes.len() as u32,
                options: 0,
            },
        );
        self.tx_pending += 1;
        true
    }

    /// Publishes what `recycle` and `send` queued, wakes the kernel to transmit, and moves
    /// frames whose transmission completed back to the fill ring.
    pub(super) fn flush(&mut self) {
        if self.tx_pending > 0 {
            self.tx.submit(self.tx_pending);
            self.tx_pending = 0;
        }
        // Copy mode sends from this system call (32 frames per call); zero-copy drivers ask
        // for it only when their NAPI loop is idle (need_wakeup).
        let mut tries = 0;
        while self.tx.in_flight() > 0 && (!self.zero_copy || self.tx.needs_wakeup()) && tries < 8 {
            tries += 1;
            // SAFETY: sendto with no buffer: the AF_XDP "kick".
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                break;
            }
        }
        let done = self.completion.available().min(FRAMES);
        for i in 0..done {
            let base = self.completion.read(i) & !u64::from(FRAME - 1);
            self.fill.write(self.fill_pending, base);
            self.fill_pending += 1;
        }
        self.completion.release(done);
        if self.fill_pending > 0 {
            self.fill.submit(self.fill_pending);
            self.fill_pending = 0;
        }
    }

    /// Frames still on their way out.
    pub(super) fn sending(&self) -> bool {
        self.tx.in_flight() > 0
    }

    /// Waits until frames arrive or `timeout` passes (poll(2); woken by the kernel).
    pub(super) fn wait(&self, timeout: Duration) {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        if self.fill.needs_wakeup() || self.rx.available() == 0 {
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&raw mut p, 1, timeout.as_millis() as libc::c_int) };
        }
    }

    /// The kernel's counters of this socket (`XDP_STATISTICS`): frames it dropped because
    /// the RX ring was full or the fill ring empty, or that were invalid.
    pub(super) fn kernel_drops(&self) -> u64 {
        getsockopt::<libc::xdp_statistics>(self.fd.as_raw_fd(), libc::XDP_STATISTICS)
            .map(|s| s.rx_dropped + s.rx_ring_full + s.rx_invalid_descs + s.tx_invalid_descs)
            .unwrap_or(0)
    }
}
