//! What containerd says to `start`, and what the shim answers.
//!
//! containerd has spoken two start protocols:
//! - **legacy** (1.6 to 2.2): the ids come as flags (`-namespace`, `-id`, `-address`), the
//!   ttrpc address as `TTRPC_ADDRESS`, and stdin holds the runtime's options as a protobuf
//!   `Any` (or nothing). The shim answers with its socket address as plain text, which every
//!   version reads as "task API v2 over ttrpc".
//! - **bootstrap** (2.3 on): stdin holds a `containerd.runtime.bootstrap.v1.BootstrapParams`
//!   (ids, addresses, containerd's version, the options as an extension, a socket directory),
//!   and the shim answers with a `BootstrapResult` naming its address, `ttrpc` and task API 3.
//!
//! Both messages are small and stable, so they are decoded here field by field rather than
//! through generated code the shim crates of this toolchain do not ship.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{CodedOutputStream, Message};
use std::fmt;

/// The task API version a shim serves when containerd lets it choose (bootstrap protocol).
pub const TASK_API_BOOTSTRAP: i32 = 3;

/// Which start protocol the calling containerd speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Legacy,
    Bootstrap,
}

/// Everything `start` needs, whichever protocol brought it.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRequest {
    pub protocol: Protocol,
    pub id: String,
    pub namespace: String,
    /// containerd's gRPC address: shim sockets are named after it.
    pub grpc_address: String,
    /// containerd's ttrpc address: events are published there.
    pub ttrpc_address: String,
    /// containerd's binary (for the record; events go over ttrpc).
    pub containerd_binary: String,
    /// The calling containerd's version, when it says (bootstrap only).
    pub containerd_version: Option<String>,
    pub debug: bool,
    /// Where to put the shim's socket, when containerd says (bootstrap only).
    pub socket_dir: Option<String>,
    /// The runtime's options (`containerd.runc.v1.Options`, CRI's `runtimeoptions.v1.Options`).
    pub options: Option<Any>,
}

/// What the flags and environment of a `start` call carry (the legacy protocol's inputs, which
/// containerd 2.3 still passes alongside the bootstrap message).
#[derive(Debug, Clone, Default)]
pub struct LegacyInputs {
    pub id: String,
    pub namespace: String,
    pub grpc_address: String,
    pub publish_binary: String,
    pub debug: bool,
    pub ttrpc_address: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HandshakeError {
    #[error(
        "containerd sent {len} bytes on stdin that are neither runtime options (containerd \
         1.6 to 2.2) nor bootstrap parameters (containerd 2.3 and later): {detail}. This shim \
         speaks both start protocols; a containerd that speaks another is not supported by \
         this build (first bytes: {head})"
    )]
    UnknownProtocol {
        len: usize,
        detail: String,
        head: String,
    },
    #[error("containerd's bootstrap parameters name no {0}")]
    BootstrapIncomplete(&'static str),
    #[error("start was called without {0} (it is containerd's to call, with -namespace, -id, -address and TTRPC_ADDRESS)")]
    LegacyIncomplete(&'static str),
}

/// Reads `start`'s stdin (and, for the legacy protocol, its flags and environment).
pub fn read_start_request(
    stdin: &[u8],
    legacy: &LegacyInputs,
) -> Result<StartRequest, HandshakeError> {
    if stdin.is_empty() {
        return legacy_request(None, legacy);
    }
    // A legacy `Any` has exactly fields 1 and 2; bootstrap parameters always carry more
    // (containerd's version and addresses), so the two never look alike.
    let fields = match parse_fields(stdin) {
        Ok(fields) => fields,
        Err(detail) => return Err(unknown(stdin, detail)),
    };
    if let Some(any) = as_any(&fields) {
        return legacy_request(Some(any), legacy);
    }
    bootstrap_request(&fields).map_err(|e| match e {
        Decode::Malformed(detail) => unknown(stdin, detail),
        Decode::Missing(what) => HandshakeError::BootstrapIncomplete(what),
    })
}

fn unknown(stdin: &[u8], detail: String) -> HandshakeError {
    let head: String = stdin.iter().take(16).map(|b| format!("{b:02x}")).collect();
    HandshakeError::UnknownProtocol {
        len: stdin.len(),
        detail,
        head,
    }
}

fn legacy_request(
    options: Option<Any>,
    legacy: &LegacyInputs,
) -> Result<StartRequest, HandshakeError> {
    for (value, what) in [
        (&legacy.id, "-id"),
        (&legacy.namespace, "-namespace"),
        (&legacy.grpc_address, "-address"),
    ] {
        if value.is_empty() {
            return Err(HandshakeError::LegacyIncomplete(what));
        }
    }
    let ttrpc_address = legacy
        .ttrpc_address
        .clone()
        .filter(|a| !a.is_empty())
        .ok_or(HandshakeError::LegacyIncomplete("TTRPC_ADDRESS"))?;
    Ok(StartRequest {
        protocol: Protocol::Legacy,
        id: legacy.id.clone(),
        namespace: legacy.namespace.clone(),
        grpc_address: legacy.grpc_address.clone(),
        ttrpc_address,
        containerd_binary: legacy.publish_binary.clone(),
        containerd_version: None,
        debug: legacy.debug,
        socket_dir: None,
        options,
    })
}

enum Decode {
    Malformed(String),
    Missing(&'static str),
}

/// `BootstrapParams` (api/runtime/bootstrap/v1/bootstrap.proto): 1 instance_id, 2 namespace,
/// 3 log_level, 4 containerd_version, 5 containerd_ttrpc_address, 6 containerd_grpc_address,
/// 7 containerd_binary, 8 repeated Extension { 1 Any }, 9 optional socket_dir. Fields this
/// build does not know are skipped, as protobuf readers do.
fn bootstrap_request(fields: &[(u32, Wire<'_>)]) -> Result<StartRequest, Decode> {
    let mut r = StartRequest {
        protocol: Protocol::Bootstrap,
        id: String::new(),
        namespace: String::new(),
        grpc_address: String::new(),
        ttrpc_address: String::new(),
        containerd_binary: String::new(),
        containerd_version: None,
        debug: false,
        socket_dir: None,
        options: None,
    };
    for (number, wire) in fields {
        match (number, wire) {
            (1, w) => r.id = text(w, "instance_id")?,
            (2, w) => r.namespace = text(w, "namespace")?,
            // LogLevel: debug is -4, trace -8 (int32, sign-extended varint).
            (3, Wire::Varint(v)) => r.debug = (*v as i64 as i32) < 0,
            (4, w) => r.containerd_version = Some(text(w, "containerd_version")?),
            (5, w) => r.ttrpc_address = text(w, "containerd_ttrpc_address")?,
            (6, w) => r.grpc_address = text(w, "containerd_grpc_address")?,
            (7, w) => r.containerd_binary = text(w, "containerd_binary")?,
            (8, Wire::Bytes(extension)) => {
                // Extensions carry typed configuration; the runtime's options are the one
                // whose type is runc's or CRI's options. Others (and ones this build cannot
                // read) are skipped, as containerd's own shims look extensions up by type.
                if let Some(any) = extension_any(extension) {
                    if r.options.is_none() && is_runtime_options(&any.type_url) {
                        r.options = Some(any);
                    }
                }
            }
            (9, w) => r.socket_dir = Some(text(w, "socket_dir")?).filter(|d| !d.is_empty()),
            (1..=9, _) => {
                return Err(Decode::Malformed(format!(
                    "field {number} has the wrong wire type"
                )))
            }
            _ => {}
        }
    }
    for (value, what) in [
        (&r.id, "instance id"),
        (&r.namespace, "namespace"),
        (&r.ttrpc_address, "ttrpc address"),
        (&r.grpc_address, "gRPC address"),
    ] {
        if value.is_empty() {
            return Err(Decode::Missing(what));
        }
    }
    Ok(r)
}

/// The `Any` in an `Extension { 1 Any }`.
fn extension_any(extension: &[u8]) -> Option<Any> {
    let fields = parse_fields(extension).ok()?;
    let value = fields.iter().find_map(|(n, w)| match (n, w) {
        (1, Wire::Bytes(any)) => Some(*any),
        _ => None,
    })?;
    as_any(&parse_fields(value).ok()?)
}

fn is_runtime_options(type_url: &str) -> bool {
    type_url.ends_with("containerd.runc.v1.Options")
        || type_url.ends_with("runtimeoptions.v1.Options")
}

fn text(wire: &Wire<'_>, field: &str) -> Result<String, Decode> {
    match wire {
        Wire::Bytes(b) => String::from_utf8(b.to_vec())
            .map_err(|_| Decode::Malformed(format!("{field} is not UTF-8"))),
        _ => Err(Decode::Malformed(format!("{field} is not a string"))),
    }
}

/// A `google.protobuf.Any`: exactly a UTF-8 type URL (1) and optionally a value (2).
fn as_any(fields: &[(u32, Wire<'_>)]) -> Option<Any> {
    let mut any = Any::new();
    let mut has_type = false;
    for (number, wire) in fields {
        match (number, wire) {
            (1, Wire::Bytes(t)) => {
                any.type_url = String::from_utf8(t.to_vec()).ok()?;
                has_type = !any.type_url.is_empty();
            }
            (2, Wire::Bytes(v)) => any.value = v.to_vec(),
            _ => return None,
        }
    }
    has_type.then_some(any)
}

/// The answer to a bootstrap `start`: `BootstrapResult { 1 version, 2 address, 3 protocol }`.
pub fn bootstrap_result(address: &str) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = CodedOutputStream::vec(&mut out);
        // Writing to a Vec cannot fail.
        w.write_int32(1, TASK_API_BOOTSTRAP).expect("encode");
        w.write_string(2, address).expect("encode");
        w.write_string(3, "ttrpc").expect("encode");
        w.flush().expect("encode");
    }
    out
}

/// The runtime options `-info` gets on stdin: an `Any`, or nothing.
pub fn read_info_options(stdin: &[u8]) -> Option<Any> {
    if stdin.is_empty() {
        return None;
    }
    Any::parse_from_bytes(stdin).ok()
}

#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
}

/// Splits a protobuf message into its fields, or says why it is not one.
fn parse_fields(mut bytes: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, String> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes).ok_or("a truncated field key")?;
        let number = u32::try_from(key >> 3).map_err(|_| "a field number out of range")?;
        if number == 0 {
            return Err("field number 0".into());
        }
        let wire = match key & 7 {
            0 => Wire::Varint(varint(&mut bytes).ok_or("a truncated varint")?),
            1 => {
                take(&mut bytes, 8).ok_or("a truncated fixed64")?;
                Wire::Fixed64
            }
            2 => {
                let len = varint(&mut bytes).ok_or("a truncated length")?;
                let len = usize::try_from(len).map_err(|_| "a length out of range")?;
                Wire::Bytes(take(&mut bytes, len).ok_or("a length past the end")?)
            }
            5 => {
                take(&mut bytes, 4).ok_or("a truncated fixed32")?;
                Wire::Fixed32
            }
            other => return Err(format!("wire type {other} in field {number}")),
        };
        fields.push((number, wire));
    }
    Ok(fields)
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(head)
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Legacy => "legacy (containerd 1.6 to 2.2)",
            Protocol::Bootstrap => "bootstrap (containerd 2.3+)",
        })
    }
}

#[cfg(test)]
mod tests;
