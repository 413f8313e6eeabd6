//! A real S3-compatible server (moto) on loopback, and the objects of a local store.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A real S3-compatible server (moto) on a free loopback port, stopped on drop. With
/// [`S3Server::start_recording`] it logs every request it serves (moto's recorder).
pub struct S3Server {
    child: Child,
    port: u16,
    recording: Option<tempfile::NamedTempFile>,
}

/// One request as moto's recorder logged it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
}

impl S3Server {
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// A server that records every request (see [`S3Server::recorded`]).
    pub fn start_recording() -> Self {
        Self::launch(Some(tempfile::NamedTempFile::new().unwrap()))
    }

    /// Starts moto on a free port and waits until it answers HTTP. A server that exits first
    /// (its port taken in the meantime by another process) is started again on another port.
    fn launch(recording: Option<tempfile::NamedTempFile>) -> Self {
        let mut recording = recording;
        for _attempt in 0..3 {
            let port = free_port();
            let mut command = Command::new("moto_server");
            if let Some(file) = &recording {
                command
                    .env("MOTO_ENABLE_RECORDING", "1")
                    .env("MOTO_RECORDER_FILEPATH", file.path());
            }
            let child = command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "moto_server not found: run .ci/run's setup (pip install 'moto[server]') first",
                );
            let mut server = S3Server {
                child,
                port,
                recording: recording.take(),
            };
            if server.wait_until_answering(Duration::from_secs(60)) {
                return server;
            }
            recording = server.recording.take();
        }
        panic!("moto_server did not start (three tries)");
    }

    /// True once the server answers an HTTP request; false if it exits or the time runs out.
    fn wait_until_answering(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let probe = format!(
                    "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                let mut head = [0u8; 12];
                if stream.write_all(probe.as_bytes()).is_ok()
                    && stream.read_exact(&mut head).is_ok()
                    && head.starts_with(b"HTTP/1.")
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Forgets the requests recorded so far.
    pub fn reset_recording(&self) {
        let status = self.request("POST", "/moto-api/recorder/reset-recording");
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "reset recording: {status}"
        );
    }

    /// The requests recorded since the start or the last reset.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        let file = self.recording.as_ref().expect("started without recording");
        fs::read_to_string(file.path())
            .unwrap()
            .lines()
            .map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).unwrap();
                let url = entry["url"].as_str().unwrap();
                let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
                RecordedRequest {
                    method: entry["method"].as_str().unwrap().to_string(),
                    path,
                    range: entry["headers"]["Range"]
                        .as_str()
                        .or_else(|| entry["headers"]["range"].as_str())
                        .map(str::to_string),
                }
            })
            .collect()
    }

    /// Creates a bucket with a plain HTTP PUT (moto needs no signature for this).
    pub fn create_bucket(&self, bucket: &str) {
        let status = self.request("PUT", &format!("/{bucket}"));
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "create bucket {bucket}: {status}"
        );
    }

    /// Deletes every object under `prefix` whose key ends with `suffix` (through boto3, which
    /// moto brings, so the request is signed as a real client's); returns the deleted keys.
    pub fn delete_objects(&self, bucket: &str, prefix: &str, suffix: &str) -> Vec<String> {
        let script = format!(
            "import boto3\n\
             s3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='testing', aws_secret_access_key='testing', region_name='us-east-1')\n\
             for o in s3.list_objects_v2(Bucket='{bucket}', Prefix='{prefix}').get('Contents', []):\n\
             \x20   if o['Key'].endswith('{suffix}'):\n\
             \x20       s3.delete_object(Bucket='{bucket}', Key=o['Key'])\n\
             \x20       print(o['Key'])\n",
            self.endpoint()
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn request(&self, method: &str, path: &str) -> String {
        http(&format!("127.0.0.1:{}", self.port), method, path)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every object key under `dir` of a local store with the given suffix.
pub fn store_files(store: &Path, dir: &str, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(store.join(dir))
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}
