//! `thaw bench utilisation`: the shipped bursty trace replayed for several cold-start times.

mod common;

use std::fs;
use std::path::Path;

use common::*;

fn trace() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/traces/bursty.csv")
        .display()
        .to_string()
}

/// `bench utilisation --coldstart-json COLDSTART --trace TRACE EXTRA...`
fn utilisation<'a>(coldstart: &'a Path, trace: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "bench",
        "utilisation",
        "--coldstart-json",
        coldstart.to_str().unwrap(),
        "--trace",
        trace,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn faster_cold_starts_give_higher_utilisation_and_shorter_waits() {
    let w = World::local();
    let coldstart = w.path("coldstart.json");
    fs::write(
        &coldstart,
        r#"{"paths": [{"name": "naive", "ready_seconds": 33.1}, {"name": "lazy", "ready_seconds": 1.5}, {"name": "snapshot", "ready_seconds": 0.4}]}"#,
    )
    .unwrap();
    let trace = trace();
    let out = w.ok(&utilisation(
        &coldstart,
        &trace,
        &["--idle-timeout", "10", "--json"],
    ));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let requests = fs::read_to_string(&trace).unwrap().lines().count() - 1;
    assert_eq!(json["requests"], requests);
    let paths = json["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 3);
    let busy = paths[0]["gpu_seconds_busy"].as_f64().unwrap();
    for pair in paths.windows(2) {
        let (slow, fast) = (&pair[0], &pair[1]);
        assert!(
            fast["utilisation"].as_f64() > slow["utilisation"].as_f64(),
            "{json}"
        );
        assert!(
            fast["p99_delay"].as_f64() < slow["p99_delay"].as_f64(),
            "{json}"
        );
        // The same work, whatever the cold start.
        assert!((fast["gpu_seconds_busy"].as_f64().unwrap() - busy).abs() < 1e-6);
    }
    for p in paths {
        let utilisation = p["utilisation"].as_f64().unwrap();
        assert!(utilisation > 0.0 && utilisation < 1.0, "{p}");
        // Nobody waits longer than a cold start when replicas are unlimited.
        let ready = p["ready_seconds"].as_f64().unwrap();
        assert!(p["max_delay"].as_f64().unwrap() <= ready + 1e-6, "{p}");
    }

    let table = w.ok(&utilisation(&coldstart, &trace, &[]));
    assert!(
        table.contains("utilisation") && table.contains("snapshot"),
        "{table}"
    );
}

#[test]
fn bad_traces_and_results_are_refused_naming_file_and_line() {
    let w = World::local();
    let coldstart = w.path("coldstart.json");
    fs::write(
        &coldstart,
        r#"{"paths": [{"name": "x", "ready_seconds": 1}]}"#,
    )
    .unwrap();
    let bad_trace = w.path("bad.csv");
    let bad = bad_trace.to_str().unwrap();
    fs::write(&bad_trace, "arrival_s,service_s\n1.0,2.0\n3.0,-1\n").unwrap();
    let err = w.fails(&utilisation(&coldstart, bad, &[]));
    assert!(err.contains("bad.csv: line 3"), "{err}");
    fs::write(&bad_trace, "time,duration\n1,2\n").unwrap();
    let err = w.fails(&utilisation(&coldstart, bad, &[]));
    assert!(err.contains("arrival_s,service_s"), "{err}");
    fs::write(&coldstart, r#"{"paths": [{"name": "x"}]}"#).unwrap();
    let err = w.fails(&utilisation(&coldstart, &trace(), &[]));
    assert!(err.contains("paths[0].ready_seconds"), "{err}");
}
