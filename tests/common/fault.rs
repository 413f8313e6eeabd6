//! A fault-injecting HTTP proxy for the end-to-end tests: it forwards each request to an
//! upstream (moto, a cache server) and, for requests whose request line contains a chosen
//! string, injects a chosen fault a chosen number of times: an error status without forwarding,
//! a connection reset or a clean close halfway through the body, a flipped body byte, or a
//! stall before the answer. Every connection serves one request (`Connection: close` both
//! ways), so a fault never leaks into the next request.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status, forwarding nothing.
    Status(u16),
    /// Send the head and half the body, then reset the connection (RST).
    ResetMidBody,
    /// Send the head (with the full length) and half the body, then close cleanly.
    Truncate,
    /// Flip one byte in the middle of the body.
    FlipByte,
    /// Wait this long before answering.
    Stall(Duration),
}

#[derive(Default)]
struct Plan {
    fault: Option<Fault>,
    matching: String,
    remaining: usize,
    injected: usize,
}

/// The proxy, stopped on drop.
pub struct FaultProxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    plan: Arc<Mutex<Plan>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let plan = Arc::new(Mutex::new(Plan::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (upstream, thread_plan, thread_stop) =
            (upstream.to_string(), plan.clone(), stop.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if thread_stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (upstream, plan) = (upstream.clone(), thread_plan.clone());
                thread::spawn(move || {
                    let _ = serve(client, &upstream, &plan);
                });
            }
        });
        FaultProxy { addr, plan, stop }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Injects `fault` into the next `times` requests whose request line contains `matching`
    /// (`usize::MAX`: all of them).
    pub fn inject(&self, fault: Fault, matching: &str, times: usize) {
        let mut plan = self.plan.lock().unwrap();
        *plan = Plan {
            fault: Some(fault),
            matching: matching.to_string(),
            remaining: times,
            injected: 0,
        };
    }

    /// Stops injecting; returns how many faults were injected.
    pub fn clear(&self) -> usize {
        let mut plan = self.plan.lock().unwrap();
        let injected = plan.injected;
        *plan = Plan::default();
        injected
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Reads one HTTP message head (through the blank line) and then `Content-Length` bytes of body.
fn read_request(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length = header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = data[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Ok((head, body))
}

/// A header's value (case-insensitive name).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `head` with its Connection and Keep-Alive headers replaced by `Connection: close`.
fn closing(head: &str) -> String {
    let mut lines: Vec<&str> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| {
            let name = l.split(':').next().unwrap_or("").trim();
            !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("keep-alive")
        })
        .collect();
    lines.push("Connection: close");
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

/// The fault for a request line, counting it.
fn fault_for(plan: &Mutex<Plan>, request_line: &str) -> Option<Fault> {
    let mut plan = plan.lock().unwrap();
    let fault = plan.fault?;
    if plan.remaining == 0 || !request_line.contains(&plan.matching) {
        return None;
    }
    plan.remaining = plan.remaining.saturating_sub(1);
    plan.injected += 1;
    Some(fault)
}

/// Closes `stream` with a reset instead of a clean close.
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this function owns, with a correctly sized linger value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

fn serve(mut client: TcpStream, upstream: &str, plan: &Mutex<Plan>) -> std::io::Result<()> {
    let (head, body) = read_request(&mut client)?;
    let request_line = head.lines().next().unwrap_or("").to_string();
    let fault = fault_for(plan, &request_line);
    if let Some(Fault::Status(code)) = fault {
        let answer =
            format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return client.write_all(answer.as_bytes());
    }
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(closing(&head).as_bytes())?;
    server.write_all(&body)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    let (answer_head, answer_body) = response.split_at(split);
    let answer_head = closing(&String::from_utf8_lossy(answer_head));
    let mut answer_body = answer_body.to_vec();
    match fault {
        Some(Fault::Stall(wait)) => thread::sleep(wait),
        Some(Fault::FlipByte) if !answer_body.is_empty() => {
            let middle = answer_body.len() / 2;
            answer_body[middle] ^= 0xff;
        }
        _ => {}
    }
    client.write_all(answer_head.as_bytes())?;
    match fault {
        Some(Fault::ResetMidBody) => {
            client.write_all(&answer_body[..answer_body.len() / 2])?;
            client.flush()?;
            reset(client);
            Ok(())
        }
        Some(Fault::Truncate) => client.write_all(&answer_body[..answer_body.len() / 2]),
        _ => client.write_all(&answer_body),
    }
}
