//! `spright-parking <detection|search|index|charging>`: runs one of the parking functions,
//! hosted as `SPRIGHT_HOST` says (spright by default).

use anyhow::bail;
use spright_example_parking::stages;

fn main() -> anyhow::Result<()> {
    let service = match std::env::args().nth(1).as_deref() {
        Some("detection") => stages::detection(),
        Some("search") => stages::search(),
        Some("index") => stages::index(),
        Some("charging") => stages::charging(),
        other => bail!("usage: spright-parking <detection|search|index|charging> (got {other:?})"),
    };
    spright_baselines::run(service)
}
