//! The example workloads the baselines host. Their crates know only the SDK: each names its
//! services, and the baselines run those same values behind their own transports
//! (`spright-baseline-host <workload> <service>`), adding what only a baseline needs, such as
//! the boutique's protobuf twin.

mod boutique_proto;

use spright_sdk::rpc::Service;
use std::path::Path;

/// One example workload: its spright binary (what chain files name) and its services.
pub struct Workload {
    pub name: &'static str,
    /// The binary that runs its functions on spright.
    pub binary: &'static str,
    pub services: &'static [&'static str],
    service: fn(&str) -> Option<Service>,
    /// What must be in place before any of its services is hosted.
    prepare: fn(),
}

pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "boutique",
        binary: "spright-boutique",
        services: spright_example_boutique::services::NAMES,
        service: spright_example_boutique::services::by_name,
        prepare: boutique_proto::install,
    },
    Workload {
        name: "motion",
        binary: "spright-motion",
        services: spright_example_motion::NAMES,
        service: spright_example_motion::by_name,
        prepare: || {},
    },
    Workload {
        name: "parking",
        binary: "spright-parking",
        services: spright_example_parking::stages::NAMES,
        service: spright_example_parking::stages::by_name,
        prepare: || {},
    },
];

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("no workload {0:?} (one of: {names})", names = names())]
    NoWorkload(String),
    #[error("{workload} has no service {service:?} (one of: {names})", names = .services.join(", "))]
    NoService {
        workload: &'static str,
        service: String,
        services: &'static [&'static str],
    },
}

fn names() -> String {
    WORKLOADS
        .iter()
        .map(|w| w.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Workload {
    pub fn by_name(name: &str) -> Result<&'static Workload, WorkloadError> {
        WORKLOADS
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| WorkloadError::NoWorkload(name.to_owned()))
    }

    /// The workload whose spright binary `command` runs (a name on PATH or a path to it).
    pub fn by_binary(command: &str) -> Option<&'static Workload> {
        let file = Path::new(command).file_name()?;
        WORKLOADS.iter().find(|w| file == w.binary)
    }

    /// Service `name`, ready to be hosted.
    pub fn service(&self, name: &str) -> Result<Service, WorkloadError> {
        let service = (self.service)(name).ok_or_else(|| WorkloadError::NoService {
            workload: self.name,
            service: name.to_owned(),
            services: self.services,
        })?;
        (self.prepare)();
        Ok(service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_service_exists() {
        for w in WORKLOADS {
            for s in w.services {
                assert_eq!(w.service(s).unwrap().name(), *s, "{}", w.name);
            }
            let e = w
                .service("nope")
                .err()
                .expect("no such service")
                .to_string();
            assert!(
                e.starts_with(&format!("{} has no service \"nope\"", w.name)),
                "{e}"
            );
        }
        assert!(Workload::by_name("nope").is_err());
    }

    #[test]
    fn chain_commands_name_workloads_by_their_binary() {
        let name = |c| Workload::by_binary(c).map(|w| w.name);
        assert_eq!(name("spright-boutique"), Some("boutique"));
        assert_eq!(name("/opt/bin/spright-motion"), Some("motion"));
        assert_eq!(name("spright-parking-images"), None);
        assert_eq!(name("spright-baseline-testfn"), None);
    }
}
