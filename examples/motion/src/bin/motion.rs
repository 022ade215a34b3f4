//! `spright-motion <sensor|actuator>`: runs one of the motion-detection functions on spright.

use anyhow::{bail, Context};
use spright_example_motion::{by_name, NAMES};

fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1);
    let Some(service) = name.as_deref().and_then(by_name) else {
        bail!("usage: spright-motion <{}> (got {name:?})", NAMES.join("|"));
    };
    spright_sdk::run(service).with_context(|| format!("function {}", name.unwrap_or_default()))
}
