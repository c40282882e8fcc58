//! How fast the management API reads a big journal: one module with 100,000 journal files, the
//! real router over a real socket, `GET /api/modules/{name}/events?limit=20` and friends.
//!
//! ```sh
//! cargo run --release -p kai --example api_events_bench            # 100,000 files
//! cargo run --release -p kai --example api_events_bench -- 20000   # another count
//! ```
//!
//! Prints, per request, the fastest, median, 95th percentile and slowest answer, measured at the
//! client (connect, send, read the whole answer): the first request after a start (10 fresh
//! servers), then 50 of each kind (after 5 warm-up requests), then 50 with a new journal file
//! arriving before each. The files sit in the page cache, as on a server that keeps running.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kai::api::{ApiOptions, ApiState, ApiTokens};
use kai::config::{Config, SettingsArgs};
use kai::daemon::Daemon;
use kai::engine::Engine;
use kai::runner::ProcessRunner;
use kai_core::{JournalEntry, JournalStatus};
use serde_json::json;

const ROUNDS: usize = 50;
const WARMUP: usize = 5;

fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let tmp = tempfile::Builder::new()
        .prefix("kai-api-bench-")
        .tempdir()?;
    let data = tmp.path().join("data");
    let module_dir = data.join("modules/bench");
    std::fs::create_dir_all(module_dir.join("events"))?;
    std::fs::write(
        module_dir.join("module.yaml"),
        "name: bench\ndescription: a module with a long journal\nrun: [\"/bin/true\"]\n",
    )?;

    let started = Instant::now();
    // The newest entry is a minute old, so that `since=1d` takes the last 2,880.
    let base = Utc::now() - chrono::Duration::seconds(count as i64 * 30 + 60);
    for i in 0..count {
        let status = match i % 50 {
            0 => JournalStatus::Error,
            1 => JournalStatus::Skipped,
            _ => JournalStatus::Done,
        };
        let entry = JournalEntry {
            run_id: format!("r_{i:026}"),
            // Two runs a minute, so that names sort by time and some share a second.
            timestamp: base + chrono::Duration::seconds((i as i64) * 30),
            module: "bench".into(),
            trigger: "webhook:pull_request:synchronize".into(),
            delivery_id: Some(format!("d-{i}")),
            entity: format!("octo/repo#{}", i % 500),
            chat_id: Some(4242),
            status,
            summary: format!("Reviewed octo/repo#{}: {} warnings", i % 500, i % 7),
            duration_seconds: 12.5,
            attempt: 1,
            details: json!({ "cost_usd": 0.02, "findings": i % 7 }),
            error: (status == JournalStatus::Error).then(|| "exit code 1".into()),
            stderr_tail: None,
            retry: false,
            question: None,
        };
        let path = module_dir.join("events").join(entry.file_name(1));
        std::fs::write(path, serde_json::to_vec_pretty(&entry)?)?;
    }
    eprintln!(
        "wrote {count} journal files in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let config = Config::resolve(&SettingsArgs {
        data_dir: Some(data.clone()),
        ..Default::default()
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let daemon = runtime.block_on(async {
        anyhow::Ok(Daemon::new(Arc::new(Engine::open(
            config,
            Arc::new(ProcessRunner),
        )?)))
    })?;
    // A fresh API (and so an empty journal cache) on its own port, as after `kai serve` starts.
    let serve = || -> anyhow::Result<SocketAddr> {
        let daemon = daemon.clone();
        runtime.block_on(async move {
            let api = ApiState::new(
                daemon.clone(),
                ApiTokens::new("bench-admin-token", "bench-chat-token"),
                ApiOptions::default(),
            );
            let app = kai::http::app(daemon, api);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(async move { axum::serve(listener, app).await });
            anyhow::Ok(addr)
        })
    };

    println!(
        "GET over HTTP, one module with {count} journal files; {ROUNDS} requests each after {WARMUP} warm-up"
    );
    println!(
        "{:<70} {:>8} {:>8} {:>8} {:>8}",
        "request", "min", "median", "p95", "max"
    );
    let report = |label: &str, times: &mut Vec<Duration>| {
        times.sort();
        let n = times.len();
        let ms = |d: Duration| format!("{:.1}ms", d.as_secs_f64() * 1000.0);
        println!(
            "{:<70} {:>8} {:>8} {:>8} {:>8}",
            label,
            ms(times[0]),
            ms(times[n / 2]),
            ms(times[(n * 95 / 100).min(n - 1)]),
            ms(times[n - 1])
        );
    };
    let timed = |addr: SocketAddr, path: &str| -> anyhow::Result<Duration> {
        let t = Instant::now();
        let (status, body) = get(addr, path)?;
        let took = t.elapsed();
        anyhow::ensure!(status == 200, "{path}: {status} {body}");
        Ok(took)
    };

    let events = module_dir.join("events");
    let first = "/api/modules/bench/events?limit=20";
    // The first request after a start reads the directory's names once.
    let mut times = Vec::new();
    for _ in 0..10 {
        let addr = serve()?;
        times.push(timed(addr, first)?);
    }
    report(&format!("first after start {first}"), &mut times);

    let addr = serve()?;
    for path in [
        "/api/modules/bench/events?limit=20",
        "/api/modules/bench/events?limit=20&status=error",
        "/api/modules/bench/events?limit=20&entity=octo/repo%2342",
        "/api/modules/bench/events?limit=20&since=1d",
        "/api/modules/bench",
        "/api/modules",
    ] {
        let mut times = Vec::with_capacity(ROUNDS);
        for round in 0..WARMUP + ROUNDS {
            let took = timed(addr, path)?;
            if round >= WARMUP {
                times.push(took);
            }
        }
        report(&format!("then {path}"), &mut times);
    }
    // A run ends just before each request: a new journal file, renamed in as kai writes it.
    let mut times = Vec::with_capacity(ROUNDS);
    for round in 0..WARMUP + ROUNDS {
        let now = Utc::now() + chrono::Duration::seconds(round as i64);
        let name = format!(
            "{}_octo-repo_1.json",
            &now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)[..19]
        );
        let tmp_file = tmp.path().join("new.json");
        std::fs::write(&tmp_file, std::fs::read(first_file(&events)?)?)?;
        std::fs::rename(&tmp_file, events.join(&name))?;
        let took = timed(addr, first)?;
        if round >= WARMUP {
            times.push(took);
        }
    }
    report(&format!("after a new journal file {first}"), &mut times);
    Ok(())
}

fn first_file(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .ok_or_else(|| anyhow::anyhow!("no journal file"))
}

fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: kai\r\nAuthorization: Bearer bench-admin-token\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((status, body))
}
