//! The gRPC-style launch (like the original Online Boutique): every function a gRPC server
//! that knows its peers' addresses; outside requests go straight to the entry function's
//! HTTP listener, with no gateway.

use super::process::{stop_all, Proc};
use super::{announce_ready, commands, ports, wait_ports, LaunchError, Options, StopSignal};
use spright_core::chain::Chain;
use std::time::Duration;

/// Runs the chain until SIGTERM or SIGINT.
pub async fn run(options: &Options) -> Result<(), LaunchError> {
    let mut stop = StopSignal::install()?;
    if options.listen.port() == 0 {
        return Err(LaunchError::NoPort(options.listen));
    }
    let chain = Chain::load(&options.chain)?;
    let entry = entry_function(&chain)?;
    let commands = commands(&chain)?;
    // Held until the launch ends, so that no other launcher takes them meanwhile.
    let claimed = ports::claim_free(chain.functions.len())?;
    let ports = claimed.numbers();
    let peers = chain
        .functions
        .iter()
        .zip(ports)
        .map(|(f, port)| format!("{}=127.0.0.1:{port}", f.name))
        .collect::<Vec<_>>()
        .join(",");

    let mut procs = Vec::with_capacity(chain.functions.len());
    let mut addrs = Vec::with_capacity(chain.functions.len() + 1);
    for (i, (f, (program, args))) in chain.functions.iter().zip(commands).enumerate() {
        let listen = format!("127.0.0.1:{}", ports[i]);
        let mut env: Vec<(String, String)> = f.env.clone().into_iter().collect();
        env.extend([
            ("SPRIGHT_HOST".into(), "grpc".into()),
            ("SPRIGHT_LISTEN".into(), listen.clone()),
            ("SPRIGHT_PEERS".into(), peers.clone()),
            (
                spright_core::env::THREADS.into(),
                options.threads.to_string(),
            ),
            (
                spright_core::env::TIMEOUT_MS.into(),
                chain.timeout_ms.to_string(),
            ),
        ]);
        if i == entry {
            env.push(("SPRIGHT_HTTP_LISTEN".into(), options.listen.to_string()));
        }
        let what = format!("function {}", f.name);
        match Proc::spawn(what.clone(), &program, &args, env) {
            Ok(p) => procs.push(p),
            Err(e) => {
                stop_all(procs).await;
                return Err(e);
            }
        }
        addrs.push((what, listen.parse().expect("a loopback address parses")));
    }
    let entry_name = &chain.functions[entry].name;
    addrs.push((
        format!("function {entry_name}'s HTTP entry"),
        options.listen,
    ));

    let ready = tokio::select! {
        r = wait_ports(&mut procs, &addrs, options.ready_timeout) => r.map(|()| true),
        () = stop.wait() => Ok(false),
    };
    if !matches!(ready, Ok(true)) {
        stop_all(procs).await;
        return ready.map(|_| eprintln!("stopped before the chain was ready"));
    }
    announce_ready(options.listen);

    loop {
        tokio::select! {
            () = stop.wait() => break,
            () = tokio::time::sleep(Duration::from_millis(250)) => {
                // Not restarted: the gRPC baseline runs a fixed set, and a death is a bug.
                for exit in procs.iter_mut().filter_map(Proc::exited) {
                    eprintln!("{exit}");
                }
            }
        }
    }
    stop_all(procs).await;
    Ok(())
}

/// The index of the one function every route enters at.
fn entry_function(chain: &Chain) -> Result<usize, LaunchError> {
    let mut entry: Option<(usize, u16)> = None;
    for (index, r) in chain.routes.iter().enumerate() {
        let unsupported = |problem: String| LaunchError::Unsupported {
            index,
            route: format!("{} {}", r.method.as_deref().unwrap_or("any method"), r.path),
            problem,
        };
        if r.sequence.len() != 1 {
            return Err(unsupported(format!(
                "a sequence of {} functions; the gRPC baseline runs only RPC-style routes",
                r.sequence.len()
            )));
        }
        match entry {
            None => entry = Some((index, r.sequence[0])),
            Some((first, id)) if id != r.sequence[0] => {
                let name = |id| chain.name_of(spright_core::ids::FnId(id)).to_owned();
                return Err(unsupported(format!(
                    "enters at {} but routes[{first}] at {}; the gRPC baseline has one entry function",
                    name(r.sequence[0]),
                    name(id)
                )));
            }
            Some(_) => {}
        }
    }
    let (_, id) = entry.expect("a validated chain has a route");
    Ok(chain
        .functions
        .iter()
        .position(|f| f.id == id)
        .expect("routes name the chain's functions"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(routes: &str) -> Chain {
        let text = format!(
            "chain: t\npool: {{ buffers: 8, buffer_size: 4KiB }}\n\
             functions: [{{ name: a, id: 1 }}, {{ name: b, id: 2 }}]\nroutes:\n{routes}"
        );
        Chain::parse(&text, "test").unwrap()
    }

    #[test]
    fn one_entry_function_only() {
        let c =
            chain("  - { path: /x, function: b }\n  - { method: GET, path: /y, function: b }\n");
        assert_eq!(entry_function(&c).unwrap(), 1);
        let c =
            chain("  - { path: /x, function: a }\n  - { method: GET, path: /y, function: b }\n");
        let e = entry_function(&c).unwrap_err().to_string();
        assert!(e.starts_with("routes[1] (GET /y): enters at b"), "{e}");
        let c = chain("  - { path: /x, sequence: [a, b] }\n");
        let e = entry_function(&c).unwrap_err().to_string();
        assert!(
            e.starts_with("routes[0] (any method /x): a sequence of 2"),
            "{e}"
        );
    }
}
