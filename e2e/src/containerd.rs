//! A private containerd for a test: its own root, state, sockets and namespace, the spright shim
//! and Debian's runc shim as runtimes, the CRI plugin on, and everything removed afterwards
//! (also when the test fails).

use crate::{bin_dir, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Where `e2e/images/build.sh` puts the test images.
pub fn images_dir() -> PathBuf {
    let dir = bin_dir().parent().expect("target dir").join("images");
    for image in ["functions.tar", "pause.tar"] {
        assert!(
            dir.join(image).is_file(),
            "{} is missing: run e2e/images/build.sh (scripts/test.sh does)",
            dir.join(image).display()
        );
    }
    dir
}

pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub address: PathBuf,
    pub namespace: String,
    /// The spright runtime root the shim looks for chains in.
    pub runtime_root: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Starts containerd with the spright shim on its PATH, looking for chains under
    /// `runtime_root`, and imports the test images into `namespace`.
    pub fn start(runtime_root: &Path) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("spright-ctrd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let address = d.join("c.sock");
        for sub in ["root", "state", "cni-conf", "opt"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        // A bridge network for pods, so function pods need no host network.
        std::fs::write(
            d.join("cni-conf/10-spright-test.conflist"),
            format!(
                r#"{{"cniVersion": "0.4.0", "name": "{name}", "plugins": [
                  {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": false,
                    "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.{a}.{b}.0/24"}}]]}}}},
                  {{"type": "loopback"}}]}}"#,
                name = network_name(),
                bridge = bridge_name(),
                a = 100 + (std::process::id() % 50),
                b = std::process::id() % 250,
            ),
        )
        .unwrap();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{address}"
[ttrpc]
  address = "{address}.ttrpc"
[debug]
  address = "{address}.debug"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "spright.local/pause:latest"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.spright]
      runtime_type = "io.containerd.spright.v1"
      pod_annotations = ["spright.io/*"]
      container_annotations = ["spright.io/*"]
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            address = address.display(),
            opt = d.join("opt").display(),
            cni = d.join("cni-conf").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .env("SPRIGHT_RUNTIME_ROOT", runtime_root)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd (install it with scripts/install-deps.sh)");
        // Unique per instance: runc's state directory is per namespace, and tests of one
        // process run their containerds side by side.
        static INSTANCES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let namespace = format!(
            "spright-test-{}-{}",
            std::process::id(),
            INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut c = Containerd {
            address,
            namespace,
            runtime_root: runtime_root.to_owned(),
            child: Some(child),
            dir,
        };
        wait_for("containerd to answer", Duration::from_secs(30), || {
            c.ctr(&["version"]).status.success().then_some(())
        });
        let images = images_dir();
        for ns in [c.namespace.clone(), "k8s.io".to_string()] {
            for image in ["functions.tar", "pause.tar"] {
                let out = c.ctr_in(
                    &ns,
                    &["images", "import", images.join(image).to_str().unwrap()],
                );
                assert!(out.status.success(), "import {image}: {}", text(&out));
            }
        }
        let _ = &mut c;
        c
    }

    /// Runs `ctr` against this containerd in the test's namespace.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in(&self.namespace, args)
    }

    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.address)
            .args(["--namespace", namespace])
            .args(args)
            .output()
            .expect("run ctr")
    }

    /// containerd's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        // Containers first, so no shim outlives its containerd.
        for ns in [self.namespace.clone(), "k8s.io".to_string()] {
            let tasks = self.ctr_in(&ns, &["tasks", "ls", "--quiet"]);
            for id in String::from_utf8_lossy(&tasks.stdout).split_whitespace() {
                let _ = self.ctr_in(&ns, &["tasks", "kill", "--signal", "SIGKILL", id]);
                let _ = self.ctr_in(&ns, &["tasks", "delete", "--force", id]);
            }
            let containers = self.ctr_in(&ns, &["containers", "ls", "--quiet"]);
            for id in String::from_utf8_lossy(&containers.stdout).split_whitespace() {
                let _ = self.ctr_in(&ns, &["containers", "delete", id]);
            }
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            for _ in 0..200 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Shims of this containerd that are still around (they name its address).
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", "--"])
            .arg(format!("-address {}", self.address.display()))
            .status();
        let root = self.dir.path().to_string_lossy().into_owned();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {root}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"
            ))
            .status();
        // Our namespace's runc state. (k8s.io is shared by every containerd of the host; the
        // containers deleted above took their state there with them.)
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/spright").join(&self.namespace));
        // The runc v2 shim keeps its runc state here.
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(&self.namespace));
        // The pod network's bridge and address leases.
        let _ = Command::new("ip")
            .args(["link", "delete", &bridge_name()])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(format!("/var/lib/cni/networks/{}", network_name()));
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn network_name() -> String {
    format!("spright-test-{}", std::process::id())
}

fn bridge_name() -> String {
    format!("sprt{}", std::process::id() % 100_000)
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
