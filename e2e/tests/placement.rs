//! cpu_placement: adaptive (the default): the chain's processes gather on one CPU while they
//! use little and spread over their CPUs when the load grows.

mod common;

use spright_e2e::load::{self, Load};
use spright_test_support::wait_for;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The CPUs each thread of `pid` may run on (`Cpus_allowed_list` of /proc/<pid>/task/*/status).
fn thread_cpus(pid: u32) -> Vec<Vec<usize>> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            let list = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                .trim()
                .to_owned();
            Some(parse_cpu_list(&list))
        })
        .collect()
}

fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// Every thread of the chain's processes, with the CPUs it may use.
fn chain_threads(chain: &spright_e2e::ChainUnderTest) -> Vec<Vec<usize>> {
    let pids: Vec<u32> = ["gateway", "front", "back"]
        .iter()
        .flat_map(|f| chain.pids(f))
        .collect();
    assert_eq!(
        pids.len(),
        3,
        "gateway, front and back each registered once"
    );
    pids.into_iter().flat_map(thread_cpus).collect()
}

fn gathered(chain: &spright_e2e::ChainUnderTest) -> Option<usize> {
    let threads = chain_threads(chain);
    let first = threads.first()?.clone();
    (first.len() == 1 && threads.iter().all(|t| *t == first)).then_some(first[0])
}

#[test]
fn an_idle_chain_gathers_on_one_cpu_and_spreads_under_load() {
    let mine = thread_cpus(std::process::id())[0].clone();
    if mine.len() < 2 {
        eprintln!("skipping: this process may use only CPU {mine:?}, nothing to gather or spread");
        return;
    }
    // Poll mode's processes each spin on a CPU of their own: placement leaves them alone.
    let modes: Vec<_> = common::modes("an_idle_chain_gathers_on_one_cpu_and_spreads_under_load")
        .into_iter()
        .filter(|m| *m != "poll")
        .collect();
    for routing in modes {
        let chain = common::start(common::TESTFN_YAML, routing, &[]);
        let cpu = wait_for(
            "the idle chain to gather on one CPU",
            Duration::from_secs(40),
            || gathered(&chain),
        );
        assert!(
            mine.contains(&cpu),
            "{routing}: gathered on CPU {cpu}, not one of {mine:?}"
        );

        // Load from 8 connections keeps the gathered CPU busy: the chain spreads again, over
        // every CPU its threads had (this test's own, as they inherited them).
        let stop = Arc::new(AtomicBool::new(false));
        let mut l = Load::new(chain.addr, "POST", "/pipe/echo", |i| {
            format!("{i}").into_bytes()
        });
        l.connections = 8;
        l.requests = usize::MAX;
        l.until = Some(stop.clone());
        let running = std::thread::spawn(move || load::run(l));
        wait_for(
            "the loaded chain to spread",
            Duration::from_secs(30),
            || {
                let threads = chain_threads(&chain);
                threads.iter().all(|t| *t == mine).then_some(())
            },
        );
        stop.store(true, Ordering::Relaxed);
        let outcomes = running.join().unwrap();
        assert!(!outcomes.is_empty(), "{routing}: no request was made");
        for (i, o) in &outcomes {
            assert_eq!(o.status, 200, "{routing}: request {i}");
            assert_eq!(o.body, format!("{i}").as_bytes(), "{routing}: request {i}");
        }

        // Quiet again: gathered again.
        wait_for("the chain to gather again", Duration::from_secs(40), || {
            gathered(&chain)
        });
        chain.wait_pool_idle();
        chain.stop();
    }
}
