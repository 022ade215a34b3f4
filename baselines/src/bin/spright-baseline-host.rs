//! `spright-baseline-host <workload> <service>`: one service of an example workload, hosted as
//! `SPRIGHT_HOST` says (the launchers set `http` or `grpc`). The workloads' own binaries run
//! the same services on spright.

use anyhow::Context;
use spright_baselines::workloads::Workload;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(workload), Some(service)) = (args.next(), args.next()) else {
        let workloads: Vec<&str> = spright_baselines::workloads::WORKLOADS
            .iter()
            .map(|w| w.name)
            .collect();
        anyhow::bail!(
            "usage: spright-baseline-host <workload> <service>, workload one of: {}",
            workloads.join(", ")
        );
    };
    let service = Workload::by_name(&workload)
        .and_then(|w| w.service(&service))
        .context("spright-baseline-host")?;
    spright_baselines::run(service)
}
