//! Compiles the C eBPF programs with clang (`-target bpf`), so aya can embed and load them.

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["sproxy", "floor", "eproxy"];

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // <asm/types.h> lives under the multiarch include directory on Debian.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => panic!("spright-ebpf: no multiarch include path known for {other}"),
    };
    for name in PROGRAMS {
        let src = format!("src/bpf/{name}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let obj = out.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .args(["-c", &src, "-o"])
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "spright-ebpf: cannot run {clang} ({e}); install clang and libbpf-dev \
                     (scripts/install-deps.sh does)"
                )
            });
        assert!(status.success(), "spright-ebpf: {clang} failed on {src}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");
}
