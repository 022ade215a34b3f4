//! `spright-boutique <service>`: runs one of the Online Boutique's services on spright.

use anyhow::{bail, Context};
use spright_example_boutique::services;

fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).context(usage())?;
    let Some(service) = services::by_name(&name) else {
        bail!("unknown service {name:?}\n{}", usage());
    };
    spright_sdk::run(service).with_context(|| format!("function {name}"))
}

fn usage() -> String {
    format!(
        "usage: spright-boutique <service>, one of: {}",
        services::NAMES.join(", ")
    )
}
