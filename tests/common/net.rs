//! Loopback networking for the tests: free ports, plain HTTP requests, Prometheus scrapes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;

/// The Prometheus metrics at `url` (`http://ADDR/metrics`): `name{labels}` -> value.
pub fn scrape(url: &str) -> BTreeMap<String, f64> {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let response = http(addr, "GET", &format!("/{path}"));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("thaw_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// One bodiless HTTP/1.1 request to `addr` (host:port); the whole response, head and body.
pub fn http(addr: &str, method: &str, path: &str) -> String {
    let (head, body) = http_request(addr, method, path, &[]);
    format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body))
}

/// One bodiless HTTP/1.1 request with extra headers; the response head and raw body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, Vec<u8>) {
    http_exchange(addr, method, path, headers, b"")
}

/// `POST` of a JSON `body` to `addr`; the response head and body.
pub fn http_post_json(addr: &str, path: &str, body: &str) -> (String, String) {
    let (head, body) = http_exchange(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// One HTTP/1.1 request with extra headers and a body; the response head and raw body.
fn http_exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let body = response.get(split + 4..).unwrap_or_default().to_vec();
    (head, body)
}

/// A free loopback port (bound, then released for a child to take), never one handed out
/// before in this test binary: the kernel may offer a just-released port again, and two servers
/// of concurrent tests would then race for it (one fails to bind, and its test talks to the
/// other's server until that one stops).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}
