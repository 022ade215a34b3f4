//! `spright-boutique <service>`: runs one of the Online Boutique's services, hosted as
//! `SPRIGHT_HOST` says (spright by default).

use anyhow::{bail, Context};
use spright_example_boutique::services;

fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).context(usage())?;
    let Some(service) = services::by_name(&name) else {
        bail!("unknown service {name:?}\n{}", usage());
    };
    spright_baselines::run(service)
}

fn usage() -> String {
    format!(
        "usage: spright-boutique <service>, one of: {}",
        services::NAMES.join(", ")
    )
}
