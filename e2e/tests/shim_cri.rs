//! The demo chain's functions as pods, created through the CRI API as a kubelet would: a pod
//! sandbox per function with runtime handler `spright` and the SPRIGHT annotations on the pod.

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerResources, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StatusRequest,
    StopContainerRequest, StopPodSandboxRequest, UpdateContainerResourcesRequest,
};
use spright_e2e::containerd::{Containerd, Version};
use spright_e2e::load::{self, Load};
use spright_e2e::{on_every_containerd, ChainSpec, ChainUnderTest};
use std::collections::HashMap;
use std::path::Path;
use tonic::transport::{Channel, Endpoint, Uri};

on_every_containerd!(function_pods_created_through_cri_answer);

async fn cri(socket: &Path) -> RuntimeServiceClient<Channel> {
    let socket = socket.to_owned();
    let channel = Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to containerd's CRI");
    RuntimeServiceClient::new(channel)
}

fn text_for(i: usize) -> Vec<u8> {
    format!("pod {i} sends words to pods and pods send words back {i}").into_bytes()
}

fn function_pods_created_through_cri_answer(version: &Version) {
    let yaml = spright_e2e::demo_chain_yaml(true);
    let chain = ChainUnderTest::start(ChainSpec {
        yaml: &yaml,
        routing: "sockmap",
        args: &[],
    });
    let containerd = Containerd::start(version, &chain.runtime_root);
    containerd.import_for_cri();
    let logs = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt.block_on(cri(&containerd.address));

    // The shipped snippet's runtime, as CRI took it from the merged config.
    let status = rt
        .block_on(client.status(StatusRequest { verbose: true }))
        .unwrap_or_else(|e| panic!("Status on {version}: {e}\n{}", containerd.log()))
        .into_inner();
    let config: serde_json::Value = serde_json::from_str(
        status
            .info
            .get("config")
            .unwrap_or_else(|| panic!("no config in CRI's status on {version}")),
    )
    .expect("CRI's config is JSON");
    let spright = &config["containerd"]["runtimes"]["spright"];
    assert_eq!(
        spright["runtimeType"], "io.containerd.spright.v1",
        "{version}: {config:#}"
    );
    for key in ["PodAnnotations", "ContainerAnnotations"] {
        assert_eq!(
            spright[key],
            serde_json::json!(["spright.io/*"]),
            "{version}: {key} in {spright:#}"
        );
    }
    assert_eq!(config["restrictOOMScoreAdj"], true, "{version}: {config:#}");

    let mut pods = Vec::new();
    for f in ["parse", "transform", "render"] {
        let annotations: HashMap<String, String> = [
            ("spright.io/chain".to_string(), chain.name.clone()),
            ("spright.io/function".to_string(), f.to_string()),
        ]
        .into();
        let sandbox = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: format!("demo-{f}"),
                uid: format!("uid-{f}-{}", std::process::id()),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: format!("demo-{f}"),
            log_directory: logs.path().join(f).to_string_lossy().into_owned(),
            annotations: annotations.clone(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    // An ordinary pod: its own network, PID and IPC namespaces, no privilege.
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Pod as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = rt
            .block_on(client.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox.clone()),
                runtime_handler: "spright".into(),
            }))
            .unwrap_or_else(|e| panic!("RunPodSandbox {f}: {e}\n{}", containerd.log()))
            .into_inner()
            .pod_sandbox_id;
        let container = rt
            .block_on(client.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: f.into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: "spright.local/functions:latest".into(),
                        ..Default::default()
                    }),
                    command: vec![format!("/bin/spright-demo-{f}")],
                    log_path: format!("{f}.log"),
                    linux: Some(LinuxContainerConfig::default()),
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox),
            }))
            .unwrap_or_else(|e| panic!("CreateContainer {f}: {e}\n{}", containerd.log()))
            .into_inner()
            .container_id;
        rt.block_on(client.start_container(StartContainerRequest {
            container_id: container.clone(),
        }))
        .unwrap_or_else(|e| panic!("StartContainer {f}: {e}\n{}", containerd.log()));
        pods.push((f, pod, container));
    }
    for (f, _, _) in &pods {
        chain.wait_instances(f, 1);
    }

    // One shim per pod: each sandbox and its container share it.
    let shims = containerd.shim_processes();
    let spright_shims = shims
        .iter()
        .filter(|(_, args)| args[0].ends_with("containerd-shim-spright-v1"))
        .count();
    assert_eq!(spright_shims, 3, "one shim per pod on {version}: {shims:?}");

    // UpdateContainerResources reaches the container's cgroup.
    let (_, _, parse_container) = &pods[0];
    rt.block_on(
        client.update_container_resources(UpdateContainerResourcesRequest {
            container_id: parse_container.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 200 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
    .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}\n{}", containerd.log()));
    let pid = chain.pids("parse")[0];
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    // cgroup v1 memory controller (this host), else the unified hierarchy.
    let v1 = cgroups
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_owned()));
    let limit = match v1 {
        Some(path) => {
            std::fs::read_to_string(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
        }
        None => {
            let path = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
            std::fs::read_to_string(format!("/sys/fs/cgroup{path}/memory.max"))
        }
    }
    .expect("the container's memory limit");
    assert_eq!(
        limit.trim(),
        (200u64 << 20).to_string(),
        "memory limit after the update"
    );

    let mut l = Load::new(chain.addr, "POST", "/count", text_for);
    l.connections = 8;
    l.requests = 300;
    load::assert_all_answered("pods", &load::run(l), |i| {
        spright_demo_chain::expected_page(&text_for(i))
    });

    for (f, pod, container) in &pods {
        rt.block_on(client.stop_container(StopContainerRequest {
            container_id: container.clone(),
            timeout: 5,
        }))
        .unwrap_or_else(|e| panic!("StopContainer {f}: {e}"));
        rt.block_on(client.remove_container(RemoveContainerRequest {
            container_id: container.clone(),
        }))
        .unwrap_or_else(|e| panic!("RemoveContainer {f}: {e}"));
        rt.block_on(client.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }))
        .unwrap_or_else(|e| panic!("StopPodSandbox {f}: {e}"));
        rt.block_on(client.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }))
        .unwrap_or_else(|e| panic!("RemovePodSandbox {f}: {e}"));
        chain.wait_instances(f, 0);
    }
    chain.wait_pool_idle();
    drop(containerd);
    chain.stop();
}
