//! Ingest benchmark: how fast the real `kai serve` (release build) acknowledges signed GitHub
//! deliveries on loopback, with the durable inbox on and modules running.
//!
//! ```sh
//! cargo build --release -p kai -p kai-bench && target/release/ingest [--quick]
//! ```
//!
//! It starts `kai serve` on a free port with a module that takes every `pull_request` event
//! (the compiled no-op module, concurrency 4), then measures, in one run:
//! - the daemon's idle memory (VmRSS) after start-up;
//! - sustained throughput: 8 keep-alive connections sending distinct signed deliveries as fast
//!   as the daemon answers, for 10 s; every answer must be 202;
//! - acknowledgement latency at a steady 200 deliveries/s for 10 s, while the runs the first
//!   phase queued are still being worked off (p50, p99, max).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use kai_bench::{bin_dir, Daemon};
use sha2::Sha256;

const SECRET: &str = "ingest-bench-secret";
const FIXTURE: &str =
    include_str!("../../../kai/tests/fixtures/github/pull_request.synchronize.json");

fn start(data: &Path) -> Daemon {
    Daemon::start(data, &[("KAI_GITHUB_WEBHOOK_SECRET", SECRET.into())])
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Signed bodies prepared before the clock starts, so that the load generator spends its
/// share of the two cores on sending, not on signing: 64 pull requests, hence 64 entities.
fn bodies() -> Arc<Vec<(String, String)>> {
    let prepared = (0..64)
        .map(|n| {
            let body = FIXTURE.replace("\"number\": 2,", &format!("\"number\": {},", n + 1000));
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key");
            mac.update(body.as_bytes());
            (body, hex::encode(mac.finalize().into_bytes()))
        })
        .collect();
    Arc::new(prepared)
}

/// One keep-alive connection that sends signed deliveries.
struct Sender {
    stream: BufReader<TcpStream>,
    addr: String,
    bodies: Arc<Vec<(String, String)>>,
}

impl Sender {
    fn connect(addr: &str, bodies: Arc<Vec<(String, String)>>) -> Sender {
        let stream = TcpStream::connect(addr).expect("connects");
        stream.set_nodelay(true).expect("nodelay");
        Sender {
            stream: BufReader::new(stream),
            addr: addr.to_owned(),
            bodies,
        }
    }

    /// Sends one delivery; returns the status code.
    fn send(&mut self, id: u64) -> u16 {
        let (body, sig) = &self.bodies[(id % self.bodies.len() as u64) as usize];
        let request = format!(
            "POST /webhook/github HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nX-GitHub-Event: pull_request\r\nX-GitHub-Delivery: bench-{id}\r\nX-Hub-Signature-256: sha256={sig}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(request.as_bytes()).expect("request written");
        s.write_all(body.as_bytes()).expect("body written");
        let mut status_line = String::new();
        self.stream
            .read_line(&mut status_line)
            .expect("status line");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).expect("header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut rest = vec![0u8; length];
        self.stream.read_exact(&mut rest).expect("body");
        status
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let phase = if quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    let data = tempfile::tempdir().expect("temp dir");
    let module = data.path().join("modules/bench");
    std::fs::create_dir_all(&module).expect("module dir");
    let noop = bin_dir().join("noop-module");
    assert!(
        noop.exists(),
        "{} is missing: cargo build --release -p kai-bench",
        noop.display()
    );
    std::fs::write(
        module.join("module.yaml"),
        format!(
            "name: bench\ndescription: takes every pull_request\nrun: [\"{}\"]\ntriggers:\n  - webhook: github\n    event: pull_request\nentity: \"{{repository.full_name}}#{{pull_request.number}}\"\nconcurrency: 4\nnotify: none\n",
            noop.display()
        ),
    )
    .expect("manifest written");

    let daemon = start(data.path());
    let bodies = bodies();
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_kib(daemon.child.id());

    // Phase 1: sustained throughput.
    let next_id = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (addr, next_id, stop, accepted, refused) = (
                daemon.addr.clone(),
                next_id.clone(),
                stop.clone(),
                accepted.clone(),
                refused.clone(),
            );
            let bodies = bodies.clone();
            std::thread::spawn(move || {
                let mut sender = Sender::connect(&addr, bodies);
                while !stop.load(Ordering::Relaxed) {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    if sender.send(id) == 202 {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(phase);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let elapsed = started.elapsed();
    let accepted = accepted.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    let rate = accepted as f64 / elapsed.as_secs_f64();
    let busy_rss = rss_kib(daemon.child.id());

    // Phase 2: latency at a steady 200/s, with the backlog of runs from phase 1 running.
    let mut sender = Sender::connect(&daemon.addr, bodies.clone());
    let interval = Duration::from_millis(5);
    let mut latencies = Vec::new();
    let mut bad = 0;
    let begin = Instant::now();
    let mut due = begin;
    while begin.elapsed() < phase {
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        }
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        if sender.send(id) != 202 {
            bad += 1;
        }
        latencies.push(t.elapsed());
        due += interval;
    }
    latencies.sort();
    let journal_files = std::fs::read_dir(module.join("events"))
        .map(|d| d.count())
        .unwrap_or(0);

    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("## Ingest (kai serve, release build, loopback)\n");
    println!(
        "machine: {nproc} cores; phase length {}s; payload {} bytes (pull_request.synchronize)\n",
        phase.as_secs(),
        FIXTURE.len()
    );
    println!("| measure | result | target |");
    println!("|---|---|---|");
    println!(
        "| idle memory (VmRSS after start) | {:.1} MB | ≤ 30 MB |",
        idle_rss as f64 / 1024.0
    );
    println!("| sustained signed deliveries/s (8 connections) | {rate:.0}/s ({accepted} accepted, {refused} not 202) | ≥ 2,000/s |");
    println!(
        "| ack latency at 200/s, p50 | {} | |",
        ms(percentile(&latencies, 0.50))
    );
    println!(
        "| ack latency at 200/s, p99 | {} | ≤ 10 ms |",
        ms(percentile(&latencies, 0.99))
    );
    println!(
        "| ack latency at 200/s, max | {} ({} requests, {bad} not 202) | |",
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        latencies.len()
    );
    println!(
        "| memory after the load (VmRSS) | {:.1} MB | |",
        busy_rss as f64 / 1024.0
    );
    println!("| runs journaled by the end | {journal_files} | |");
}
