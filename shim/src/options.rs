//! The runtime options containerd passes with a create: whether runc should use the systemd
//! cgroup driver.
//!
//! ctr and the runc shim's callers send `containerd.runc.v1.Options`; the CRI plugin sends, for
//! any runtime type other than runc's, `runtimeoptions.v1.Options`, whose `config_body` is the
//! runtime's `options` table from containerd's config as TOML (`SystemdCgroup = true`).

use containerd_shim::api;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{CodedInputStream, Message};

/// Whether the options ask for the systemd cgroup driver.
pub fn systemd_cgroup(options: Option<&Any>) -> bool {
    let Some(any) = options else {
        return false;
    };
    if any.type_url.ends_with("runtimeoptions.v1.Options") {
        return config_body(&any.value).is_some_and(|toml| toml_flag(&toml, "SystemdCgroup"));
    }
    api::Options::parse_from_bytes(&any.value).is_ok_and(|o| o.systemd_cgroup)
}

/// Field 3 (`config_body`) of a `runtimeoptions.v1.Options` message.
fn config_body(bytes: &[u8]) -> Option<String> {
    let mut input = CodedInputStream::from_bytes(bytes);
    while !input.eof().ok()? {
        let tag = input.read_raw_varint32().ok()?;
        let (field, wire_type) = (tag >> 3, tag & 7);
        if field == 3 && wire_type == 2 {
            return input.read_string().ok();
        }
        match wire_type {
            0 => {
                input.read_raw_varint64().ok()?;
            }
            1 => {
                input.read_raw_bytes(8).ok()?;
            }
            2 => {
                let n = input.read_raw_varint32().ok()?;
                input.read_raw_bytes(n).ok()?;
            }
            5 => {
                input.read_raw_bytes(4).ok()?;
            }
            _ => return None,
        }
    }
    None
}

/// `key = true` at the top of a small TOML table.
fn toml_flag(toml: &str, key: &str) -> bool {
    toml.lines().any(|line| {
        let Some((k, v)) = line.split_once('=') else {
            return false;
        };
        k.trim() == key && v.split('#').next().unwrap_or("").trim() == "true"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime_options(body: &str) -> Any {
        // type_url (1) and config_body (3), hand-encoded as the CRI plugin would.
        let mut value = Vec::new();
        for (field, text) in [(1u8, "runtimeoptions.v1.Options"), (3, body)] {
            value.push(field << 3 | 2);
            value.push(text.len() as u8);
            value.extend_from_slice(text.as_bytes());
        }
        let mut any = Any::new();
        any.type_url = "runtimeoptions.v1.Options".into();
        any.value = value;
        any
    }

    #[test]
    fn reads_cri_runtime_options() {
        assert!(systemd_cgroup(Some(&runtime_options(
            "SystemdCgroup = true\n"
        ))));
        assert!(!systemd_cgroup(Some(&runtime_options(
            "SystemdCgroup = false\n"
        ))));
        assert!(!systemd_cgroup(Some(&runtime_options(
            "# SystemdCgroup = true\n"
        ))));
        assert!(!systemd_cgroup(None));
    }

    #[test]
    fn reads_runc_options() {
        let mut o = api::Options::new();
        o.systemd_cgroup = true;
        let mut any = Any::new();
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = o.write_to_bytes().unwrap();
        assert!(systemd_cgroup(Some(&any)));
    }
}
