//! Two network namespaces of a test's own joined by a veth pair: what a function container's
//! own interface looks like under CNI, without a CNI. IPv4 only, with static neighbours, so
//! nothing crosses the pair but what the test sends. Removed on drop, panics included.

use spright_test_support::netns::run;
pub use spright_test_support::netns::{dev_stats, in_netns};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};

pub struct VethPair {
    /// The namespace a container joins (`ctr run --with-ns network:...`).
    pub inside: String,
    pub inside_if: String,
    pub inside_ip: Ipv4Addr,
    /// The namespace at the far end of the pair: the container's outside world.
    pub outside: String,
    pub outside_if: String,
    pub outside_ip: Ipv4Addr,
}

static NEXT: AtomicU8 = AtomicU8::new(0);

impl VethPair {
    pub fn new() -> VethPair {
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 64, "one /30 in 10.214.x.0/24 per pair");
        let x = (pid % 250) as u8;
        let tag = format!("{}x{n}", pid % 1_000_000);
        let pair = VethPair {
            inside: format!("sprt-in-{pid}-{n}"),
            inside_if: format!("spi{tag}"),
            inside_ip: Ipv4Addr::new(10, 214, x, 4 * n + 2),
            outside: format!("sprt-out-{pid}-{n}"),
            outside_if: format!("spo{tag}"),
            outside_ip: Ipv4Addr::new(10, 214, x, 4 * n + 1),
        };
        pair.remove();
        let sides = [
            (
                &pair.inside,
                &pair.inside_if,
                pair.inside_ip,
                "02:5e:00:00:01:02",
            ),
            (
                &pair.outside,
                &pair.outside_if,
                pair.outside_ip,
                "02:5e:00:00:01:01",
            ),
        ];
        for (ns, ..) in sides {
            run(&["ip", "netns", "add", ns]);
        }
        run(&[
            "ip",
            "link",
            "add",
            &pair.inside_if,
            "netns",
            &pair.inside,
            "type",
            "veth",
            "peer",
            "name",
            &pair.outside_if,
            "netns",
            &pair.outside,
        ]);
        for (i, (ns, ifname, ip, mac)) in sides.iter().enumerate() {
            let exec = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", ns.as_str()];
                all.extend_from_slice(args);
                run(&all);
            };
            exec(&["ip", "link", "set", ifname, "address", mac]);
            exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{ifname}.disable_ipv6=1"),
            ]);
            exec(&["ip", "addr", "add", &format!("{ip}/30"), "dev", ifname]);
            exec(&["ip", "link", "set", ifname, "up"]);
            exec(&["ip", "link", "set", "lo", "up"]);
            // After the link is up (taking a link down flushes its neighbours).
            let (_, _, far_ip, far_mac) = sides[1 - i];
            exec(&[
                "ip",
                "neigh",
                "replace",
                &far_ip.to_string(),
                "lladdr",
                far_mac,
                "dev",
                ifname,
                "nud",
                "permanent",
            ]);
        }
        pair
    }

    /// The inside namespace's path, for `--with-ns network:<path>`.
    pub fn inside_path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.inside))
    }

    /// The inside interface's own counts: (rx packets, rx bytes, tx packets, tx bytes), bytes
    /// as frames.
    pub fn inside_stats(&self) -> [u64; 4] {
        let ifname = self.inside_if.clone();
        in_netns(&self.inside, move || dev_stats(&ifname))
    }

    fn remove(&self) {
        for ns in [&self.inside, &self.outside] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Default for VethPair {
    fn default() -> Self {
        VethPair::new()
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        self.remove();
    }
}
