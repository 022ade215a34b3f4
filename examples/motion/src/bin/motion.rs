//! `spright-motion <sensor|actuator>`: runs one of the motion-detection functions, hosted as
//! `SPRIGHT_HOST` says (spright by default).

use anyhow::bail;

fn main() -> anyhow::Result<()> {
    let service = match std::env::args().nth(1).as_deref() {
        Some("sensor") => spright_example_motion::sensor(),
        Some("actuator") => spright_example_motion::actuator(),
        other => bail!("usage: spright-motion <sensor|actuator> (got {other:?})"),
    };
    spright_baselines::run(service)
}
