//! `thaw plan buffer|place|serve` as a user runs them: the buffer plan on the shipped trace and
//! offers, a placement over a real cache server's live inventory, and the kube-scheduler
//! extender answering kube-scheduler's JSON over HTTP.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};

use crate::common::*;

fn shipped(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(name)
        .display()
        .to_string()
}

#[test]
fn the_buffer_plan_holds_gpus_for_the_bursts_and_names_an_infeasible_window() {
    let w = World::local();
    let (trace, offers) = (
        shipped("benches/traces/bursty.csv"),
        shipped("benches/offers.csv"),
    );
    let out = w.ok(&[
        "plan",
        "buffer",
        "--trace",
        &trace,
        "--offers",
        &offers,
        "--cold-start",
        "1.8",
        "--json",
    ]);
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let windows = plan["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 60, "an hour of 60 s windows");
    let total = |w: &serde_json::Value| -> u64 {
        w["held"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    // Every window holds what it needs; the four bursts (300, 1200, 2100, 3000 s) hold many.
    for window in windows {
        assert!(
            total(window) >= window["needed"].as_u64().unwrap(),
            "{window}"
        );
    }
    for burst in [5, 20, 35, 50] {
        assert!(total(&windows[burst]) >= 5, "{}", windows[burst]);
        assert!(total(&windows[burst + 2]) <= 2, "{}", windows[burst + 2]);
    }
    assert!(plan["cost"].as_f64().unwrap() >= plan["lp_bound"].as_f64().unwrap() - 1e-6);
    let table = w.ok(&[
        "plan",
        "buffer",
        "--trace",
        &trace,
        "--offers",
        &offers,
        "--cold-start",
        "1.8",
    ]);
    assert!(
        table.contains("buffer") && table.contains("h100@cloud-a"),
        "{table}"
    );

    // Demand above every offer: the window and the shortfall are named.
    let small = w.path("small.csv");
    fs::write(
        &small,
        "kind,region,price_per_hour,available,boot_s\nh100,a,2,3,60\n",
    )
    .unwrap();
    let err = w.fails(&[
        "plan",
        "buffer",
        "--trace",
        &trace,
        "--offers",
        small.to_str().unwrap(),
        "--cold-start",
        "1",
    ]);
    assert!(
        err.contains("infeasible: window 5 (300..360 s)") && err.contains("short by"),
        "{err}"
    );
    fs::write(
        &small,
        "kind,region,price_per_hour,available,boot_s\nh100,a,2,three,60\n",
    )
    .unwrap();
    let err = w.fails(&[
        "plan",
        "buffer",
        "--trace",
        &trace,
        "--offers",
        small.to_str().unwrap(),
        "--cold-start",
        "1",
    ]);
    assert!(
        err.contains("small.csv: line 2") && err.contains("available"),
        "{err}"
    );
}

#[test]
fn a_forecast_plans_like_a_trace_and_bad_nodes_files_name_the_field() {
    let w = World::local();
    let offers = shipped("benches/offers.csv");
    let forecast = w.path("forecast.csv");
    // Two quiet windows around a burst of 600 requests; a replica serves 1 request/s.
    fs::write(&forecast, "window_start_s,requests\n0,30\n60,600\n120,30\n").unwrap();
    let forecast = forecast.to_str().unwrap();
    let err = w.fails(&[
        "plan",
        "buffer",
        "--forecast",
        forecast,
        "--offers",
        &offers,
        "--cold-start",
        "2",
    ]);
    assert!(err.contains("--throughput"), "{err}");
    let out = w.ok(&[
        "plan",
        "buffer",
        "--forecast",
        forecast,
        "--offers",
        &offers,
        "--cold-start",
        "2",
        "--throughput",
        "1",
        "--json",
    ]);
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let needed: Vec<u64> = plan["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["needed"].as_u64().unwrap())
        .collect();
    // Q_0.99(Poisson(600)) = 658: 658 requests at 60 a GPU-window is 11 GPUs; 30 -> 1.
    assert_eq!(needed, vec![1, 11, 1], "{plan}");

    let nodes = w.path("nodes.json");
    fs::write(
        &nodes,
        r#"{"nodes": [{"name": "a", "free_gpus": "eight"}]}"#,
    )
    .unwrap();
    let replicas = w.path("replicas.json");
    fs::write(&replicas, r#"{"replicas": [{"name": "r"}]}"#).unwrap();
    let err = w.fails(&[
        "plan",
        "place",
        "--replicas",
        replicas.to_str().unwrap(),
        "--nodes",
        nodes.to_str().unwrap(),
    ]);
    assert!(
        err.contains("nodes.json") && err.contains("nodes[0].free_gpus"),
        "{err}"
    );
}

#[test]
fn the_planned_buffer_beats_no_buffer_on_p99_and_a_large_fixed_one_on_utilisation() {
    let w = World::local();
    let coldstart = w.path("coldstart.json");
    fs::write(
        &coldstart,
        r#"{"paths": [{"name": "naive", "ready_seconds": 14.6}, {"name": "thaw-snapshot", "ready_seconds": 1.8}]}"#,
    )
    .unwrap();
    let out = w.ok(&[
        "bench",
        "utilisation",
        "--coldstart-json",
        coldstart.to_str().unwrap(),
        "--trace",
        &shipped("benches/traces/bursty.csv"),
        "--plan-from",
        &shipped("benches/traces/bursty-history.csv"),
        "--offers",
        &shipped("benches/offers.csv"),
        "--idle-timeout",
        "10",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = json["paths"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "two paths x three buffers");
    for path in ["naive", "thaw-snapshot"] {
        let row = |policy: &str| {
            rows.iter()
                .find(|r| r["name"] == path && r["policy"].as_str().unwrap().starts_with(policy))
                .unwrap_or_else(|| panic!("{path} {policy} in {json}"))
        };
        let (none, fixed, planned) = (row("none"), row("fixed"), row("planned"));
        let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
        assert!(
            f(planned, "p99_delay") < f(none, "p99_delay"),
            "{planned} {none}"
        );
        assert!(
            f(planned, "utilisation") > f(fixed, "utilisation"),
            "{planned} {fixed}"
        );
        assert!(f(planned, "cost") < f(fixed, "cost"), "{planned} {fixed}");
        // The same work under every policy.
        assert!((f(planned, "gpu_seconds_busy") - f(none, "gpu_seconds_busy")).abs() < 1e-6);
    }
}

/// A `thaw plan serve` process, killed on drop.
struct Extender {
    child: Child,
    addr: String,
}

impl Drop for Extender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn extender(w: &World, nodes: &Path, extra: &[&str]) -> Extender {
    let mut child = w
        .thaw()
        .env("THAW_PEER_TOKEN", PEER_TOKEN)
        .args([
            "plan",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--nodes",
            nodes.to_str().unwrap(),
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    let mut byte = [0u8; 1];
    while stderr.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    let addr = line
        .strip_prefix("extender listening on http://")
        .unwrap_or_else(|| panic!("extender did not start: {line:?}"))
        .to_string();
    Extender { child, addr }
}

/// kube-scheduler's ExtenderArgs for a pod with `annotations` and `image` over `nodes`.
fn extender_args(annotations: serde_json::Value, image: &str, nodes: &[&str]) -> String {
    serde_json::json!({
        "pod": {
            "metadata": {"name": "p", "namespace": "default", "annotations": annotations},
            "spec": {"containers": [{"name": "server", "image": image}]}
        },
        "nodes": {"items": nodes.iter().map(|n| serde_json::json!({
            "metadata": {"name": n}, "status": {"allocatable": {"nvidia.com/gpu": "8"}}
        })).collect::<Vec<_>>()}
    })
    .to_string()
}

#[test]
fn placement_and_the_extender_follow_a_live_cache_server_inventory() {
    let w = World::local();
    let src = w.rich_src();
    w.index("dir", &src, "app", &[]);
    // A cache server that has served the whole of `app` once.
    let server = w.cache_server("peer", 0, &[], &[]);
    let dest = w.path("dest");
    let mut extract = w.thaw();
    extract
        .envs([
            ("THAW_PEERS", server.url.as_str()),
            ("THAW_PEER_TOKEN", PEER_TOKEN),
            ("THAW_NO_DISK_CACHE", "true"),
        ])
        .args(["extract", "app", dest.to_str().unwrap()]);
    assert!(extract.output().unwrap().status.success());
    let nodes = w.path("nodes.json");
    fs::write(
        &nodes,
        serde_json::json!({"nodes": [
            {"name": "cold", "free_gpus": 8, "inventory": {"chunks_held": 0, "bytes_held": 0, "tags": []}},
            {"name": "warm", "free_gpus": 1, "peer": server.url},
            {"name": "unreported", "free_gpus": 8},
        ]})
        .to_string(),
    )
    .unwrap();
    let replicas = w.path("replicas.json");
    fs::write(
        &replicas,
        r#"{"replicas": [{"name": "r1", "image": "app"}, {"name": "r2", "image": "app"}, {"name": "r3", "image": "unknown"}]}"#,
    )
    .unwrap();
    let out = w
        .thaw()
        .env("THAW_PEER_TOKEN", PEER_TOKEN)
        .args([
            "plan",
            "place",
            "--replicas",
            replicas.to_str().unwrap(),
            "--nodes",
            nodes.to_str().unwrap(),
            "--compare",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let out = String::from_utf8(out.stdout).unwrap();
    let placements: serde_json::Value = serde_json::from_str(&out).unwrap();
    let lp = &placements[0];
    assert_eq!(lp["method"], "lp");
    let on_warm: Vec<&serde_json::Value> = lp["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["node"] == "warm")
        .collect();
    // The warm node has one GPU: one replica of app goes there and fetches nothing.
    assert_eq!(on_warm.len(), 1, "{lp}");
    assert!(
        on_warm[0]["replica"] == "r1" || on_warm[0]["replica"] == "r2",
        "{lp}"
    );
    assert_eq!(on_warm[0]["fetch"]["peer_bytes"], 0);
    assert_eq!(on_warm[0]["fetch"]["store_bytes"], 0);
    assert!(on_warm[0]["fetch"]["local_bytes"].as_u64().unwrap() > 0);
    assert_eq!(lp["unknown_tags"], serde_json::json!(["unknown"]));
    let least = &placements[2];
    assert!(
        least["mean_seconds"].as_f64() >= lp["mean_seconds"].as_f64(),
        "{placements}"
    );

    let ext = extender(&w, &nodes, &["--require-thaw"]);
    let all = ["cold", "warm", "unreported"];
    let (head, body) = http_post_json(
        &ext.addr,
        "/prioritize",
        &extender_args(
            serde_json::json!({"thaw.dev/image": "app"}),
            "registry/app:1",
            &all,
        ),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let scores: serde_json::Value = serde_json::from_str(&body).unwrap();
    let score = |host: &str| {
        scores
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["host"] == host)
            .unwrap()["score"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(score("warm"), 10, "{scores}");
    // Elsewhere app comes from the warm peer at five times the store's speed: 10 * 0.8.
    assert_eq!(score("cold"), 8, "{scores}");
    assert_eq!(score("unreported"), 8, "{scores}");
    // A container image that is a tag counts without the annotation.
    let (_, body) = http_post_json(
        &ext.addr,
        "/prioritize",
        &extender_args(serde_json::json!({}), "app", &all),
    );
    assert!(body.contains(r#"{"host":"warm","score":10}"#), "{body}");
    // A pod thaw does not know: neutral everywhere, and no node filtered.
    let unknown = extender_args(serde_json::json!({}), "docker.io/library/nginx:1", &all);
    let (_, body) = http_post_json(&ext.addr, "/prioritize", &unknown);
    let scores: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        scores.as_array().unwrap().iter().all(|s| s["score"] == 0),
        "{scores}"
    );
    let (_, body) = http_post_json(&ext.addr, "/filter", &unknown);
    let filtered: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        filtered["nodes"]["items"].as_array().unwrap().len(),
        3,
        "{filtered}"
    );
    // Thaw's pod with --require-thaw: the node no cache server reported on is filtered out,
    // with the reason; node names (a node-cache-capable extender) work the same way.
    let (_, body) = http_post_json(
        &ext.addr,
        "/filter",
        &extender_args(serde_json::json!({"thaw.dev/image": "app"}), "x", &all),
    );
    let filtered: serde_json::Value = serde_json::from_str(&body).unwrap();
    let kept: Vec<&str> = filtered["nodes"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(kept, vec!["cold", "warm"], "{filtered}");
    assert!(filtered["failedNodes"]["unreported"]
        .as_str()
        .unwrap()
        .contains("no thaw cache server"));
    assert_eq!(filtered["error"], "");
    let by_name = serde_json::json!({"Pod": {"metadata": {"annotations": {"thaw.dev/image": "app"}}}, "NodeNames": all}).to_string();
    let (_, body) = http_post_json(&ext.addr, "/filter", &by_name);
    let filtered: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        filtered["nodenames"],
        serde_json::json!(["cold", "warm"]),
        "{filtered}"
    );
    // Not extender arguments: a 400 naming what is wrong.
    let (head, body) = http_post_json(&ext.addr, "/prioritize", r#"{"nodes": 3}"#);
    assert!(
        head.starts_with("HTTP/1.1 400") && body.contains("not extender arguments"),
        "{head} {body}"
    );
    let metrics = scrape(&format!("http://{}/metrics", ext.addr));
    assert!(
        metrics
            .keys()
            .any(|k| k.starts_with("thaw_extender_requests")),
        "{metrics:?}"
    );
}
