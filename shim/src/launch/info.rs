//! `-info`: what containerd 2.x asks of a runtime on task create. The options come on stdin;
//! the answer is an `introspection.RuntimeInfo` with runc's features (the spec's
//! `features.json`, as `runc features` prints it), since containers run under runc.

use super::handshake::read_info_options;
use super::{LaunchError, MAX_STDIN, RUNTIME};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use std::io::{Read, Write};

const FEATURES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

pub fn info() -> Result<(), LaunchError> {
    let mut stdin = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN)
        .read_to_end(&mut stdin)
        .map_err(LaunchError::io("reading the runtime options on stdin"))?;
    let options = read_info_options(&stdin);
    let mut info = RuntimeInfo {
        name: RUNTIME.to_owned(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    if let Some(options) = options {
        info.options = MessageField::some(options);
    }
    // Without runc's features the info is still an answer (the runc v2 shim does the same).
    let runc = std::env::var("SPRIGHT_RUNC").unwrap_or_else(|_| "runc".into());
    match std::process::Command::new(&runc)
        .arg("features")
        .stderr(std::process::Stdio::null())
        .output()
    {
        Ok(features) if features.status.success() => {
            info.features = MessageField::some(Any {
                type_url: FEATURES_TYPE.to_owned(),
                value: features.stdout,
                ..Default::default()
            });
        }
        Ok(features) => eprintln!(
            "{runc} features failed ({}): no features in the info",
            features.status
        ),
        Err(e) => eprintln!("cannot run {runc} features ({e}): no features in the info"),
    }
    let bytes = info
        .write_to_bytes()
        .map_err(|e| LaunchError::Other(format!("encoding the runtime info: {e}")))?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(LaunchError::io("answering containerd on stdout"))
}
