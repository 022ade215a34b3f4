//! `spright-parking <detection|search|index|charging>`: runs one of the parking functions on
//! spright.

use anyhow::{bail, Context};
use spright_example_parking::stages::{by_name, NAMES};

fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1);
    let Some(service) = name.as_deref().and_then(by_name) else {
        bail!(
            "usage: spright-parking <{}> (got {name:?})",
            NAMES.join("|")
        );
    };
    spright_sdk::run(service).with_context(|| format!("function {}", name.unwrap_or_default()))
}
