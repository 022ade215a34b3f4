//! The floor of a descriptor hop on this machine, for the data-plane benchmark: 48-byte
//! ping-pong between two threads,
//! - over sk_msg redirection with a bare redirect program (no SPROXY: `spright_ebpf::floor`),
//!   each thread blocking in `read`, both on one CPU and on two CPUs; and between two
//!   processes on one CPU, as a chain's functions are (a switch between processes also changes
//!   the address space, which a switch between threads does not);
//! - over spright's shared-memory descriptor rings (poll mode's), both threads polling: on two
//!   CPUs spinning, on one CPU yielding to each other.
//!
//! Prints one JSON object per case: round trips, their mean, p50 and p99 in µs, and the CPU
//! time of both sides per hop (half a round trip) in µs. `--seconds S` per case (default 2).
//! The sk_msg cases need root.

use spright_core::descriptor::{Descriptor, DESCRIPTOR_SIZE};
use spright_core::ids::{Endpoint, FnId, InstanceId};
use spright_core::pool::{Pool, PoolSpec};
use spright_core::rings::{rings_path, RingId, Rings};
use spright_ebpf::floor::Floor;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The request id that ends a ping-pong.
const STOP: u64 = u64::MAX;

/// What one side of a ping-pong does: send a descriptor, wait for one.
trait Side: Send {
    fn send(&mut self, d: &Descriptor);
    /// `None` when the other side has stopped.
    fn receive(&mut self) -> Option<Descriptor>;
}

struct Socket(TcpStream);

impl Side for Socket {
    fn send(&mut self, d: &Descriptor) {
        self.0
            .write_all(d.as_bytes())
            .expect("send on the floor socket");
    }

    fn receive(&mut self) -> Option<Descriptor> {
        let mut bytes = [0u8; DESCRIPTOR_SIZE];
        self.0.read_exact(&mut bytes).ok()?;
        Some(Descriptor::from_bytes(&bytes))
    }
}

struct Ring {
    rings: Arc<Rings>,
    to: RingId,
    from: RingId,
    /// Yield the CPU between empty polls (both sides on one CPU).
    yielding: bool,
    stop: Arc<AtomicBool>,
}

impl Side for Ring {
    fn send(&mut self, d: &Descriptor) {
        while !self.rings.push(self.to, d) {
            std::hint::spin_loop();
        }
    }

    fn receive(&mut self) -> Option<Descriptor> {
        loop {
            if let Some(d) = self.rings.pop(self.from) {
                return Some(d);
            }
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            if self.yielding {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// The calling thread's CPU time so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The CPUs this process may run on.
fn cpus() -> Vec<usize> {
    // SAFETY: as in `pin`; sched_getaffinity fills the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set);
        assert_eq!(rc, 0, "sched_getaffinity");
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

struct Outcome {
    round_trips: usize,
    rtt_ns: Vec<u64>,
    cpu: Duration,
}

/// Ping-pongs for `seconds`: `ping` sends and times each round trip, `pong` answers.
fn ping_pong(
    ping: impl Side + 'static,
    mut pong: impl Side + 'static,
    cpus: (usize, usize),
    seconds: f64,
    stop: Arc<AtomicBool>,
) -> Outcome {
    let answering = std::thread::spawn(move || {
        pin(cpus.1);
        let start = thread_cpu();
        while let Some(d) = pong.receive() {
            if d.request_id == STOP {
                break;
            }
            pong.send(&d);
        }
        thread_cpu() - start
    });
    let pinging = std::thread::spawn(move || pinging(ping, cpus.0, seconds, stop));
    let (rtt_ns, ping_cpu) = pinging.join().expect("pinging thread");
    let pong_cpu = answering.join().expect("answering thread");
    Outcome {
        round_trips: rtt_ns.len(),
        rtt_ns,
        // The answering side's warm-up is in its total; 1000 round trips among ~10^5 or more.
        cpu: ping_cpu + pong_cpu,
    }
}

/// The timing side of a ping-pong: warms up, then sends and times round trips for `seconds`,
/// and tells the other side to stop. Returns the round trips in ns and its own CPU time.
fn pinging(
    mut ping: impl Side,
    cpu: usize,
    seconds: f64,
    stop: Arc<AtomicBool>,
) -> (Vec<u64>, Duration) {
    pin(cpu);
    let d = Descriptor::request(FnId(2), 1);
    // Warm up: page faults, the first wake-ups.
    for _ in 0..1000 {
        ping.send(&d);
        ping.receive().expect("the answering side stopped");
    }
    let start_cpu = thread_cpu();
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut rtt_ns = Vec::with_capacity(1 << 20);
    loop {
        let t = Instant::now();
        if t >= until {
            break;
        }
        ping.send(&d);
        ping.receive().expect("the answering side stopped");
        rtt_ns.push(t.elapsed().as_nanos() as u64);
    }
    let cpu = thread_cpu() - start_cpu;
    stop.store(true, Ordering::Relaxed);
    ping.send(&Descriptor::request(FnId(2), STOP));
    (rtt_ns, cpu)
}

/// As `ping_pong` over sk_msg, but the answering side is a child process on the same CPU (its
/// CPU time, from `wait4`, includes its warm-up, as the answering thread's does).
/// Called with no other thread running, so the child inherits nothing half-done.
fn ping_pong_processes(ping: Socket, mut pong: Socket, cpu: usize, seconds: f64) -> Outcome {
    // The peers' ends stay open in main, so a child that died would never be seen as gone:
    // the pinging side gives up after this long without an answer instead of hanging.
    ping.0
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout on the floor socket");
    let parent = std::process::id();
    // SAFETY: every earlier case's threads have been joined; the child only reads and writes
    // its socket, then leaves with `_exit` (no destructors, no buffered output of the parent's),
    // a panic included.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            // Should the parent die, its socket's copy here would keep this child waiting
            // forever, so the child dies with it (and leaves if it already has).
            // SAFETY: prctl with these arguments only sets this process's parent-death signal.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            // SAFETY: getppid has no preconditions.
            if unsafe { libc::getppid() } as u32 != parent {
                return;
            }
            drop(ping);
            pin(cpu);
            while let Some(d) = pong.receive() {
                if d.request_id == STOP {
                    break;
                }
                pong.send(&d);
            }
        }));
        // SAFETY: ends the child at once, without running the parent's destructors.
        unsafe { libc::_exit(if answered.is_ok() { 0 } else { 1 }) }
    }
    drop(pong);
    let stop = Arc::new(AtomicBool::new(false));
    // On a thread of its own, as `pinging` pins the thread it runs on and main stays unpinned.
    let (rtt_ns, ping_cpu) = std::thread::spawn(move || pinging(ping, cpu, seconds, stop))
        .join()
        .expect("pinging thread");
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; wait4 fills them for our own child.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the answering process failed: status {status}"
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Outcome {
        round_trips: rtt_ns.len(),
        rtt_ns,
        cpu: ping_cpu + tv(usage.ru_utime) + tv(usage.ru_stime),
    }
}

fn report(case: &str, mut o: Outcome) {
    o.rtt_ns.sort_unstable();
    let n = o.rtt_ns.len().max(1);
    let at = |q: f64| o.rtt_ns.get(((n as f64 * q) as usize).min(n - 1)).copied();
    let mean = o.rtt_ns.iter().sum::<u64>() as f64 / n as f64;
    let us = |ns: Option<u64>| ns.map_or(0.0, |v| v as f64 / 1000.0);
    println!(
        "{{\"case\":\"{case}\",\"round_trips\":{},\"rtt_us_mean\":{:.2},\"rtt_us_p50\":{:.2},\
         \"rtt_us_p99\":{:.2},\"cpu_us_per_hop\":{:.2}}}",
        o.round_trips,
        mean / 1000.0,
        us(at(0.50)),
        us(at(0.99)),
        o.cpu.as_secs_f64() * 1e6 / (2.0 * n as f64)
    );
}

/// Two loopback connections whose client ends the floor program joins.
fn socket_pair(floor: &mut Floor) -> (Socket, Socket, [TcpStream; 2]) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind on loopback");
    let addr = listener.local_addr().unwrap();
    let a = TcpStream::connect(addr).expect("connect");
    let (a_peer, _) = listener.accept().expect("accept");
    let b = TcpStream::connect(addr).expect("connect");
    let (b_peer, _) = listener.accept().expect("accept");
    for s in [&a, &b] {
        s.set_nodelay(true).unwrap();
    }
    floor
        .pair(&a, &b)
        .expect("join the sockets to the floor program");
    (Socket(a), Socket(b), [a_peer, b_peer])
}

fn ring_pair(dir: &std::path::Path, yielding: bool) -> (Ring, Ring, Pool, Arc<AtomicBool>) {
    let (f1, f2) = (FnId(1), FnId(2));
    let pool = Pool::create(
        &dir.join(format!("floor-{yielding}.pool")),
        PoolSpec {
            buffer_count: 16,
            buffer_size: 4096,
        },
        "floor",
        0o600,
    )
    .expect("create a pool");
    let rings = Rings::create(
        &rings_path(pool.path()),
        &pool,
        &[f1, f2],
        [(1, 2), (2, 1)],
        0o600,
    )
    .expect("create the rings");
    let ring = |f| {
        rings
            .ring_of(Endpoint::new(f, InstanceId(0)))
            .expect("a ring per endpoint")
    };
    let (r1, r2) = (ring(f1), ring(f2));
    let rings = Arc::new(rings);
    let stop = Arc::new(AtomicBool::new(false));
    let side = |to, from| Ring {
        rings: rings.clone(),
        to,
        from,
        yielding,
        stop: stop.clone(),
    };
    (side(r2, r1), side(r1, r2), pool, stop)
}

fn main() {
    let mut seconds = 2.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds takes a number")
            }
            other => {
                eprintln!("spright-floor: unknown argument {other:?} (only --seconds S)");
                std::process::exit(2);
            }
        }
    }
    let cpus = cpus();
    let one = (cpus[0], cpus[0]);
    let two = (cpus[0], *cpus.get(1).unwrap_or(&cpus[0]));
    let dir = tempfile::Builder::new()
        .prefix("spright-floor")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a directory for the floor's rings");

    match Floor::load() {
        Ok(mut floor) => {
            for (case, cpus) in [("sk_msg, one CPU", one), ("sk_msg, two CPUs", two)] {
                let (a, b, _peers) = socket_pair(&mut floor);
                let stop = Arc::new(AtomicBool::new(false));
                report(case, ping_pong(a, b, cpus, seconds, stop));
            }
            let (a, b, _peers) = socket_pair(&mut floor);
            report(
                "sk_msg, one CPU, two processes",
                ping_pong_processes(a, b, cpus[0], seconds),
            );
        }
        Err(e) => eprintln!("spright-floor: skipping the sk_msg cases: {e}"),
    }
    for (case, cpus, yielding) in [
        ("ring, two CPUs spinning", two, false),
        ("ring, one CPU yielding", one, true),
    ] {
        let (a, b, _pool, stop) = ring_pair(dir.path(), yielding);
        report(case, ping_pong(a, b, cpus, seconds, stop));
    }
}
