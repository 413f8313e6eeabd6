//! TLS between peers and clients: a cache server serving HTTPS with a certificate from a test
//! CA, clients that trust that CA (and read through it), clients that trust another CA or
//! present no certificate to a server that requires one (refused, the read falls back to the
//! store), and a fixed TLS name for peers dialled by address.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::common::*;

/// PEM files of a test CA and what it issued.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    /// A server certificate for `thaw-peer.test` only (no IP address).
    named_cert: PathBuf,
    named_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Writes a leaf for `names` issued by `issuer` as `stem.pem` and `stem-key.pem`.
fn leaf(
    dir: &Path,
    stem: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, stem);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}-key.pem")),
    );
    fs::write(&cert_path, cert.pem()).unwrap();
    fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn pki(dir: &Path) -> Pki {
    fs::create_dir_all(dir).unwrap();
    let (authority, other) = (new_ca("thaw test CA"), new_ca("someone else's CA"));
    let (ca_path, other_path) = (dir.join("ca.pem"), dir.join("other-ca.pem"));
    fs::write(&ca_path, authority.pem()).unwrap();
    fs::write(&other_path, other.pem()).unwrap();
    let server = ExtendedKeyUsagePurpose::ServerAuth;
    let (server_cert, server_key) = leaf(
        dir,
        "server",
        &["thaw-peer.test", "127.0.0.1"],
        server.clone(),
        &authority,
    );
    let (named_cert, named_key) = leaf(dir, "named", &["thaw-peer.test"], server, &authority);
    let (client_cert, client_key) = leaf(
        dir,
        "client",
        &["worker-1.test"],
        ExtendedKeyUsagePurpose::ClientAuth,
        &authority,
    );
    Pki {
        ca: ca_path,
        other_ca: other_path,
        server_cert,
        server_key,
        named_cert,
        named_key,
        client_cert,
        client_key,
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `thaw peers status --tag app --json` from a client with `env`: the one peer's row (the
/// command exits 1 when a peer is down, and lists it all the same).
fn peer_row(w: &World, url: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let out = w
        .thaw()
        .env("THAW_PEERS", url)
        .env("THAW_PEER_TOKEN", PEER_TOKEN)
        .envs(env.iter().copied())
        .args(["peers", "status", "--tag", "app", "--json"])
        .output()
        .unwrap();
    let rows: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)));
    let up = rows[0]["up"] == true;
    assert_eq!(out.status.success(), up, "{}", describe(&out));
    rows.as_array().unwrap()[0].clone()
}

/// Extracts `app` reading through the peer at `url` with `env`; checks the tree.
fn extract_through(w: &World, src: &Path, url: &str, env: &[(&str, &str)], dest: &str) {
    let dest = w.path(dest);
    let out = w
        .thaw()
        .env("THAW_PEERS", url)
        .env("THAW_PEER_TOKEN", PEER_TOKEN)
        .env("THAW_NO_DISK_CACHE", "true")
        .envs(env.iter().copied())
        .args(["extract", "app", s(&dest)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_same_tree(src, &dest);
}

/// A world with `app` indexed and a test PKI.
fn world_with_pki() -> (World, PathBuf, Pki) {
    let w = World::local();
    let src = w.rich_src();
    w.index("dir", &src, "app", &[]);
    let pki = pki(&w.path("pki"));
    (w, src, pki)
}

/// A cache server serving HTTPS with `cert` and `key`, and `extra` options.
fn tls_server(w: &World, name: &str, cert: &Path, key: &Path, extra: &[&str]) -> CacheServerProc {
    let mut args = vec!["--tls-cert", s(cert), "--tls-key", s(key)];
    args.extend_from_slice(extra);
    w.cache_server(name, 0, &args, &[])
}

#[test]
fn peers_over_tls_serve_clients_that_trust_their_ca_and_refuse_the_rest() {
    let (w, src, pki) = world_with_pki();
    let server = tls_server(&w, "tls", &pki.server_cert, &pki.server_key, &[]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );

    // A client trusting the CA reads through the peer: the peer ends up holding the tree.
    let trusted = [("THAW_PEER_CA_FILE", s(&pki.ca))];
    extract_through(&w, &src, &server.url, &trusted, "dest1");
    let row = peer_row(&w, &server.url, &trusted);
    assert_eq!(row["up"], true, "{row}");
    assert_eq!(row["tag_held"], row["tag_chunks"], "{row}");

    // Another CA, or no CA at all (the system's roots): refused by the client's handshake,
    // with the reason named; the read itself still succeeds from the store.
    for env in [vec![("THAW_PEER_CA_FILE", s(&pki.other_ca))], vec![]] {
        let row = peer_row(&w, &server.url, &env);
        assert_eq!(row["up"], false, "{row}");
        let error = row["error"].as_str().unwrap();
        assert!(error.to_lowercase().contains("certificate"), "{error}");
        extract_through(&w, &src, &server.url, &env, "dest-refused");
        fs::remove_dir_all(w.path("dest-refused")).unwrap();
    }
    // Plain HTTP to a TLS port gets nowhere either.
    let plain = server.url.replace("https://", "http://");
    assert_eq!(peer_row(&w, &plain, &[])["up"], false);

    // Half a client identity is a configuration error, named.
    let out = w
        .thaw()
        .env("THAW_PEERS", &server.url)
        .env("THAW_PEER_CERT_FILE", s(&pki.client_cert))
        .args(["peers", "status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        describe(&out).contains("THAW_PEER_KEY_FILE"),
        "{}",
        describe(&out)
    );
    // An HTTPS server stops cleanly on SIGTERM, keep-alive connections and all.
    let mut server = server;
    server.stop();
}

#[test]
fn mutual_tls_admits_only_clients_with_a_certificate_from_its_ca() {
    let (w, src, pki) = world_with_pki();
    // Client certificates instead of the token: the server needs no token to start.
    let server = tls_server(
        &w,
        "mtls",
        &pki.server_cert,
        &pki.server_key,
        &["--client-ca", s(&pki.ca)],
    );
    let ca = ("THAW_PEER_CA_FILE", s(&pki.ca));
    let without = peer_row(&w, &server.url, &[ca]);
    assert_eq!(without["up"], false, "{without}");
    let error = without["error"].as_str().unwrap().to_lowercase();
    assert!(error.contains("certificate"), "{error}");
    let with = [
        ca,
        ("THAW_PEER_CERT_FILE", s(&pki.client_cert)),
        ("THAW_PEER_KEY_FILE", s(&pki.client_key)),
    ];
    extract_through(&w, &src, &server.url, &with, "dest");
    let row = peer_row(&w, &server.url, &with);
    assert_eq!(row["up"], true, "{row}");
    assert_eq!(row["tag_held"], row["tag_chunks"], "{row}");
    // A certificate from another CA is refused like none.
    let dir = w.path("pki-other");
    fs::create_dir_all(&dir).unwrap();
    let stranger = new_ca("a stranger");
    let (cert, key) = leaf(
        &dir,
        "stranger",
        &["x.test"],
        ExtendedKeyUsagePurpose::ClientAuth,
        &stranger,
    );
    let row = peer_row(
        &w,
        &server.url,
        &[
            ca,
            ("THAW_PEER_CERT_FILE", s(&cert)),
            ("THAW_PEER_KEY_FILE", s(&key)),
        ],
    );
    assert_eq!(row["up"], false, "{row}");
}

#[test]
fn a_fixed_tls_name_verifies_peers_dialled_by_address() {
    let (w, src, pki) = world_with_pki();
    // The certificate names thaw-peer.test only, as a DaemonSet's shared certificate would.
    let server = tls_server(&w, "named", &pki.named_cert, &pki.named_key, &[]);
    let ca = ("THAW_PEER_CA_FILE", s(&pki.ca));
    let by_address = peer_row(&w, &server.url, &[ca]);
    assert_eq!(by_address["up"], false, "{by_address}");
    let error = by_address["error"].as_str().unwrap();
    assert!(error.contains("not valid for name"), "{error}");
    let named = [ca, ("THAW_PEER_TLS_NAME", "thaw-peer.test")];
    extract_through(&w, &src, &server.url, &named, "dest");
    assert_eq!(peer_row(&w, &server.url, &named)["up"], true);
    // The name is checked, not just present: another name is refused.
    let wrong = peer_row(&w, &server.url, &[ca, ("THAW_PEER_TLS_NAME", "other.test")]);
    assert_eq!(wrong["up"], false, "{wrong}");
}
