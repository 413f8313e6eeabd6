//! The peer cache cluster end to end: real `thaw cache-server` processes on loopback, a real
//! S3-compatible server that records every request, real clients (`thaw extract`, `thaw mount`),
//! and misbehaving peers (real processes that serve bad bytes or hang).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

/// A local world with [`cluster_tree`] indexed as `app`.
fn indexed_world() -> (World, PathBuf) {
    let world = World::local();
    let src = cluster_tree(&world);
    world.index("dir", &src, "app", &[]);
    (world, src)
}

/// The environment of a client reading through `peers` with the test token and no disk cache.
fn client_env(peers: &str) -> [(&str, &str); 3] {
    [
        ("THAW_PEERS", peers),
        ("THAW_PEER_TOKEN", PEER_TOKEN),
        ("THAW_NO_DISK_CACHE", "true"),
    ]
}

/// A tree of a few dozen chunks: random (incompressible) and text files.
fn cluster_tree(world: &World) -> PathBuf {
    let src = world.path("src");
    std::fs::create_dir_all(src.join("lib")).unwrap();
    std::fs::write(src.join("weights.bin"), random_bytes(14 << 20, 1)).unwrap();
    std::fs::write(src.join("lib/big.txt"), text_bytes(8 << 20, 2)).unwrap();
    for i in 0..20u64 {
        std::fs::write(
            src.join(format!("lib/small{i}.py")),
            text_bytes(3000 + i as usize * 100, 10 + i),
        )
        .unwrap();
    }
    src
}

/// Distinct chunks of a tag.
fn chunk_count(world: &World, tag: &str) -> u64 {
    let stats: serde_json::Value =
        serde_json::from_str(&world.ok(&["stats", tag, "--json"])).unwrap();
    stats["combined"]["chunks"]
        .as_u64()
        .unwrap_or_else(|| panic!("no chunk count in {stats}"))
}

/// A client command of `world` reading through `peers` ([`client_env`]).
fn client(world: &World, peers: &str) -> std::process::Command {
    let mut cmd = world.thaw();
    cmd.envs(client_env(peers));
    cmd
}

/// The largest chunk of `app` as `server` serves it (id and bytes), through
/// `thaw peers load-test --save-chunks`.
fn largest_chunk_of(world: &World, server: &CacheServerProc) -> (String, Vec<u8>) {
    let saved = world.path("chunks");
    let out = client(world, &server.url)
        .args([
            "peers",
            "load-test",
            "app",
            "--requests",
            "1",
            "--save-chunks",
        ])
        .arg(&saved)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    std::fs::read_dir(&saved)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let id = p.file_name().unwrap().to_string_lossy().into_owned();
            (id, std::fs::read(&p).unwrap())
        })
        .max_by_key(|(_, bytes)| bytes.len())
        .expect("load-test --save-chunks wrote the chunks")
}

fn peers_of(servers: &[&CacheServerProc]) -> String {
    servers
        .iter()
        .map(|s| s.url.clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `n` concurrent `thaw extract` clients into `out0..`, asserting each succeeds and
/// restores `src` exactly.
/// A generous peer timeout: these tests count where chunks come from, and a busy test machine
/// must not turn a slow answer into a fallback read from the store.
fn extract_concurrently(world: &World, peers: &str, tag: &str, src: &Path, n: usize, prefix: &str) {
    let children: Vec<_> = (0..n)
        .map(|i| {
            let dest = world.path(&format!("{prefix}{i}"));
            let child = client(world, peers)
                .env("THAW_PEER_TIMEOUT_MS", "60000")
                .args(["extract", tag, dest.to_str().unwrap(), "--quiet"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (dest, child)
        })
        .collect();
    for (dest, child) in children {
        let out = child.wait_with_output().unwrap();
        assert_no_panic(&out);
        assert!(out.status.success(), "client failed:\n{}", describe(&out));
        assert_same_tree(src, &dest);
    }
}

#[test]
fn a_cluster_reads_each_chunk_from_the_object_store_once() {
    let s3 = S3Server::start_recording();
    let world = World::s3(&s3, "cluster");
    let src = cluster_tree(&world);
    world.index("dir", &src, "app", &[]);
    let chunks = chunk_count(&world, "app");
    assert!(chunks >= 20, "only {chunks} chunks");

    // All clients share one loopback address here; the per-client limit is for distinct
    // workers, and a 503 would send a client to the chunk's successor (a second store read).
    let servers: Vec<CacheServerProc> = (0..3)
        .map(|i| world.cache_server(&format!("peer{i}"), 0, &["--max-per-client", "1024"], &[]))
        .collect();
    let peers = peers_of(&servers.iter().collect::<Vec<_>>());
    s3.reset_recording();

    extract_concurrently(&world, &peers, "app", &src, 6, "out");

    // The object store's own log: every pack read is one chunk's frame, and no frame twice.
    let pack_reads: Vec<RecordedRequest> = s3
        .recorded()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/packs/"))
        .collect();
    let ranges: HashSet<(String, Option<String>)> = pack_reads
        .iter()
        .map(|r| (r.path.clone(), r.range.clone()))
        .collect();
    assert_eq!(
        ranges.len(),
        pack_reads.len(),
        "a frame was read from the object store twice: {pack_reads:#?}"
    );
    assert_eq!(
        pack_reads.len() as u64,
        chunks,
        "one store read per chunk across 6 clients and 3 peers"
    );
    assert!(pack_reads.iter().all(|r| r.range.is_some()));

    // The peers agree: together they fetched each chunk once and served the rest from memory.
    let fetched: f64 = servers
        .iter()
        .map(|s| s.metric("thaw_chunk_tier_hits_total{tier=\"store\"}"))
        .sum();
    assert_eq!(fetched as u64, chunks);
    let served: f64 = servers
        .iter()
        .map(|s| s.metric("thaw_peer_server_requests_total{route=\"chunk\",status=\"200\"}"))
        .sum();
    assert_eq!(
        served as u64,
        6 * chunks,
        "every client got every chunk from a peer"
    );
    for s in &servers {
        assert!(
            s.metric("thaw_chunk_tier_hits_total{tier=\"store\"}") > 0.0,
            "{} owns nothing",
            s.url
        );
    }

    // `thaw peers status` sees the three, with what they hold and own of the tag.
    let out = client(&world, &peers)
        .args(["peers", "status", "--tag", "app", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 3);
    let owned: u64 = rows.iter().map(|r| r["owns"].as_u64().unwrap()).sum();
    let held: u64 = rows.iter().map(|r| r["tag_held"].as_u64().unwrap()).sum();
    assert_eq!((owned, held), (chunks, chunks), "{rows:#?}");
}

#[test]
fn readers_finish_when_the_owner_peer_is_killed_mid_transfer() {
    let (world, src) = indexed_world();
    // A slow object store keeps the transfer going long enough to kill a peer in the middle.
    let slow = [("THAW_STORE_READ_LATENCY_MS", "400")];
    let mut servers: Vec<CacheServerProc> = (0..3)
        .map(|i| world.cache_server(&format!("peer{i}"), 0, &[], &slow))
        .collect();
    let peers = peers_of(&servers.iter().collect::<Vec<_>>());
    let children: Vec<_> = (0..4)
        .map(|i| {
            let dest = world.path(&format!("out{i}"));
            let child = client(&world, &peers)
                .env("THAW_PEER_TIMEOUT_MS", "2000")
                .args(["extract", "app", dest.to_str().unwrap(), "--quiet"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (dest, child)
        })
        .collect();
    // Every store read takes 400 ms: at 300 ms the first chunks are still in flight.
    std::thread::sleep(Duration::from_millis(300));
    let served_before_kill =
        servers[0].metric("thaw_peer_server_requests_total{route=\"chunk\",status=\"200\"}");
    servers[0].kill();
    let mut fell_back = false;
    for (dest, child) in children {
        let out = child.wait_with_output().unwrap();
        assert_no_panic(&out);
        assert!(
            out.status.success(),
            "a reader failed after the peer died:\n{}",
            describe(&out)
        );
        assert_same_tree(&src, &dest);
        fell_back |= String::from_utf8_lossy(&out.stderr).contains("peer failed");
    }
    assert!(
        fell_back,
        "no reader noticed the dead peer (it had served {served_before_kill} chunks): the test did not kill it mid-transfer"
    );
}

#[test]
fn bad_and_hanging_peers_are_skipped_counted_and_the_data_is_right() {
    if !fuse_available("bad_and_hanging_peers_are_skipped_counted_and_the_data_is_right") {
        return;
    }
    let (world, src) = indexed_world();
    let corrupt = FakePeer::start("corrupt");
    let hang = FakePeer::start("hang");
    let good = world.cache_server("good", 0, &[], &[]);
    let peers = format!("http://{},http://{},{}", corrupt.addr, hang.addr, good.url);

    let mut env = client_env(&peers).to_vec();
    env.push(("THAW_PEER_TIMEOUT_MS", "300"));
    let mount = world.mount_with_env(
        "app",
        &world.path("mnt"),
        &["--metrics", "127.0.0.1:0", "--no-prefetch"],
        &env,
    );
    let diff = std::process::Command::new("diff")
        .args(["-r", src.to_str().unwrap(), mount.dir.to_str().unwrap()])
        .output()
        .unwrap();
    let metrics = mount.metrics();
    mount.unmount();
    assert!(
        diff.status.success(),
        "mounted tree differs:\n{}",
        describe(&diff)
    );

    let count = |outcome: &str, addr: &str| -> f64 {
        metrics
            .get(&format!(
                "thaw_peer_client_requests_total{{peer=\"{addr}\",outcome=\"{outcome}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    assert!(count("corrupt", &corrupt.addr) >= 1.0, "{metrics:#?}");
    assert_eq!(count("ok", &corrupt.addr), 0.0, "bad bytes were accepted");
    assert!(count("timeout", &hang.addr) >= 1.0, "{metrics:#?}");
    assert!(count("ok", &good.addr()) >= 1.0, "{metrics:#?}");
    // Back-off: after their first failures the bad peers are skipped, not asked for every chunk.
    let asked_bad = count("corrupt", &corrupt.addr) + count("timeout", &hang.addr);
    let chunks = chunk_count(&world, "app") as f64;
    assert!(
        asked_bad < chunks,
        "bad peers were asked {asked_bad} times for {chunks} chunks: no back-off"
    );
    assert!(metrics["thaw_peer_client_skipped_backing_off_total"] >= 1.0);
    assert_eq!(
        metrics["thaw_fs_read_errors_total"], 0.0,
        "a reader saw a peer's failure"
    );
}

#[test]
fn a_restarted_peer_serves_from_its_disk_cache_and_ranges_and_heads_work() {
    let (world, src) = indexed_world();
    let mut server = world.cache_server("peer", 0, &[], &[]);
    let chunks = chunk_count(&world, "app") as f64;
    extract_concurrently(&world, &server.url, "app", &src, 1, "first");
    assert_eq!(
        server.metric("thaw_chunk_tier_hits_total{tier=\"store\"}"),
        chunks
    );
    server.stop();

    let server = world.cache_server("peer", server.port, &[], &[]);
    extract_concurrently(&world, &server.url, "app", &src, 1, "second");
    assert_eq!(
        server.metric("thaw_chunk_tier_hits_total{tier=\"disk\"}"),
        chunks,
        "every chunk came from the surviving disk cache"
    );
    assert_eq!(
        server.metric("thaw_store_requests_total{op=\"get_range\"}"),
        0.0
    );

    // Ranged GET, HEAD of a held chunk and of an unknown one.
    let (id, bytes) = largest_chunk_of(&world, &server);
    let bearer = format!("Bearer {PEER_TOKEN}");
    let auth = ("Authorization", bearer.as_str());
    let path = format!("/v1/chunks/{id}");
    let (head, body) = http_request(
        &server.addr(),
        "GET",
        &path,
        &[auth, ("Range", "bytes=100-199")],
    );
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(
        head.to_lowercase()
            .contains(&format!("content-range: bytes 100-199/{}", bytes.len())),
        "{head}"
    );
    assert_eq!(body, &bytes[100..200]);
    let (head, _) = http_request(
        &server.addr(),
        "GET",
        &path,
        &[auth, ("Range", "bytes=999999999-")],
    );
    assert!(head.starts_with("HTTP/1.1 416"), "{head}");
    let (head, _) = http_request(&server.addr(), "HEAD", &path, &[auth]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase()
            .contains(&format!("content-length: {}", bytes.len())),
        "{head}"
    );
    let unknown = format!("/v1/chunks/{}", "ab".repeat(32));
    let (head, _) = http_request(&server.addr(), "HEAD", &unknown, &[auth]);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, body) = http_request(&server.addr(), "GET", "/v1/chunks/nothex", &[auth]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("not a chunk id"));
}

#[test]
fn clients_hanging_up_mid_chunk_do_not_kill_the_peer() {
    let (world, _src) = indexed_world();
    let mut server = world.cache_server("peer", 0, &[], &[]);
    // A write to a connection the client closed must be an error, not a fatal SIGPIPE (thaw's
    // short-lived commands keep the default so that `thaw cat ... | head` ends quietly).
    assert!(
        ignores_sigpipe(server.pid()),
        "the cache server dies on SIGPIPE"
    );
    let (big, _) = largest_chunk_of(&world, &server);
    // Pipelined requests for far more than the socket buffers hold, then a hang-up: the peer's
    // next writes hit a closed connection.
    let request = format!(
        "GET /v1/chunks/{big} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PEER_TOKEN}\r\n\r\n"
    );
    for _ in 0..5 {
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        s.write_all(request.repeat(40).as_bytes()).unwrap();
        let mut first = [0u8; 64];
        s.read_exact(&mut first).unwrap();
        drop(s);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        http(&server.addr(), "GET", "/healthz").starts_with("HTTP/1.1 200"),
        "the peer died after clients hung up: {}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    server.stop();
}

#[test]
fn chunk_requests_need_the_token_and_a_refused_client_still_reads_from_the_store() {
    let (world, src) = indexed_world();
    let server = world.cache_server("peer", 0, &[], &[]);
    let unknown = format!("/v1/chunks/{}", "ab".repeat(32));
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong-token-0123456789")],
    ] {
        for method in ["GET", "HEAD"] {
            let (head, _) = http_request(&server.addr(), method, &unknown, &headers);
            assert!(
                head.starts_with("HTTP/1.1 401"),
                "{method} {headers:?}: {head}"
            );
        }
        let (head, _) = http_request(&server.addr(), "GET", "/v1/inventory", &headers);
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    }
    assert!(http(&server.addr(), "GET", "/healthz").starts_with("HTTP/1.1 200"));

    // A client with the wrong token: refused, the reads still succeed from the store, and the
    // peer neither fetched nor kept anything for it.
    let dest = world.path("out");
    let out = client(&world, &server.url)
        .env("THAW_PEER_TOKEN", "wrong-token-0123456789")
        .args(["extract", "app", dest.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_same_tree(&src, &dest);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused our token"),
        "{}",
        describe(&out)
    );
    assert!(server.metric("thaw_peer_server_rejected_total{reason=\"unauthorized\"}") >= 1.0);
    assert_eq!(
        server.metric("thaw_store_requests_total{op=\"get_range\"}"),
        0.0
    );
    assert_eq!(
        server.metric("thaw_chunk_tier_hits_total{tier=\"store\"}"),
        0.0
    );

    // A server will not start open by accident, nor with a weak token.
    let err = world.fails(&["cache-server", "--listen", "127.0.0.1:0"]);
    assert!(
        err.contains("shared token") && err.contains("--no-auth"),
        "{err}"
    );
    let out = world
        .thaw()
        .env("THAW_PEER_TOKEN", "short")
        .args(["cache-server", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        describe(&out).contains("THAW_PEER_TOKEN") && describe(&out).contains("16"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_bounded_load_test_reports_throughput_and_latency() {
    let (world, _src) = indexed_world();
    let a = world.cache_server("a", 0, &[], &[]);
    let b = world.cache_server("b", 0, &[], &[]);
    let out = client(&world, &peers_of(&[&a, &b]))
        .args([
            "peers",
            "load-test",
            "app",
            "--requests",
            "400",
            "--concurrency",
            "8",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("load test: {report}");
    assert_eq!(report["requests"], 400);
    assert_eq!(report["errors"], 0);
    let (p50, p99, max) = (
        report["p50_ms"].as_f64().unwrap(),
        report["p99_ms"].as_f64().unwrap(),
        report["max_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{report}");
    assert!(report["requests_per_second"].as_f64().unwrap() > 0.0);
    // Both peers served their share (the owners), from memory after the warm-up.
    for s in [&a, &b] {
        assert!(s.metric("thaw_chunk_tier_hits_total{tier=\"memory\"}") > 0.0);
    }
}

#[test]
fn a_peer_file_is_followed_while_a_mount_runs() {
    if !fuse_available("a_peer_file_is_followed_while_a_mount_runs") {
        return;
    }
    let (world, src) = indexed_world();
    let a = world.cache_server("a", 0, &[], &[]);
    let b = world.cache_server("b", 0, &[], &[]);
    let peers_file = world.path("peers");
    std::fs::write(&peers_file, format!("# cluster\n{}\n", a.url)).unwrap();
    let peers = format!("@{}", peers_file.display());
    let mut env = client_env(&peers).to_vec();
    env.push(("THAW_PEER_REFRESH_SECS", "1"));
    let mount = world.mount_with_env("app", &world.path("mnt"), &["--no-prefetch"], &env);
    let read = |name: &str| std::fs::read(mount.dir.join(name)).unwrap();
    assert_eq!(
        read("lib/small0.py"),
        std::fs::read(src.join("lib/small0.py")).unwrap()
    );
    assert_eq!(
        b.metric("thaw_peer_server_requests_total{route=\"chunk\",status=\"200\"}"),
        0.0
    );

    std::fs::write(&peers_file, format!("{}\n{}\n", a.url, b.url)).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        read("weights.bin"),
        std::fs::read(src.join("weights.bin")).unwrap()
    );
    mount.unmount();
    let served_by_b = b.metric("thaw_peer_server_requests_total{route=\"chunk\",status=\"200\"}");
    assert!(
        served_by_b > 0.0,
        "the peer added to the file was never asked"
    );
}

#[test]
fn a_carried_over_prefetch_is_served_by_the_peers_not_the_store() {
    if !fuse_available("a_carried_over_prefetch_is_served_by_the_peers_not_the_store") {
        return;
    }
    let (world, src) = indexed_world();
    let mnt = world.path("mnt");
    // Version 1's start-up, recorded.
    let first = world.mount("app", &mnt, &["--no-disk-cache"]);
    for name in ["lib/small1.py", "lib/small3.py", "lib/big.txt"] {
        std::fs::read(mnt.join(name)).unwrap();
    }
    assert!(first.unmount().contains("trace saved"));
    // Version 2 rewrites one of those files; its chunks are new.
    std::fs::write(src.join("lib/small3.py"), text_bytes(4000, 99)).unwrap();
    world.index("dir", &src, "app", &[]);
    let a = world.cache_server("a", 0, &[], &[]);
    let b = world.cache_server("b", 0, &[], &[]);
    let peers = peers_of(&[&a, &b]);
    extract_concurrently(&world, &peers, "app", &src, 1, "warm");

    // A new node: no disk cache, no trace of version 2; the prefetch of version 1's trace asks
    // each chunk's owner peer, and the object store is never read.
    let mut env = client_env(&peers).to_vec();
    env.push(("THAW_PEER_TIMEOUT_MS", "60000"));
    let mount = world.mount_with_env(
        "app",
        &mnt,
        &[
            "--metrics",
            "127.0.0.1:0",
            "--fetch-all-below",
            "0",
            "--no-fetch-on-open",
        ],
        &env,
    );
    wait_for_status(&world, &mnt, "the carried-over prefetch", |s| {
        settled(s, "trace")
    });
    let status = mount_status(&world, &mnt);
    assert_eq!(
        status["prefetch_sources"][0]["relation"], "previous version 1 of tag app",
        "{status:#}"
    );
    assert!(status["peer_bytes"].as_u64() > Some(0), "{status:#}");
    for name in ["lib/small1.py", "lib/small3.py", "lib/big.txt"] {
        assert_eq!(
            std::fs::read(mnt.join(name)).unwrap(),
            std::fs::read(src.join(name)).unwrap()
        );
    }
    assert_eq!(
        mount.metric("thaw_store_requests_total{op=\"get_range\"}"),
        0.0,
        "{:?}",
        mount.metrics()
    );
    mount.unmount();
}
