//! Chat benchmark: the Telegram side of the real `kai serve` (release build), against the fake
//! Bot API of `crates/fake-telegram` served in this process on loopback.
//!
//! ```sh
//! cargo build --release -p kai -p kai-bench && target/release/chat [--quick]
//! ```
//!
//! It starts the fake, then `kai serve` on a free loopback port with a fresh data directory,
//! the owner's private chat and a forum as the notify chat, pacing 0, and measures in one run:
//! - command round trip: the owner writes `/status`; time until the bot's reply is in the
//!   private chat (long poll returns, the update is handled, the reply goes through the
//!   outbox, `sendMessage`);
//! - answer to resume: a module pauses with a question; the owner presses its first button;
//!   time until the resume run has touched its file (and, beside it, invoke to question);
//! - outbox throughput: a `notify: all` module invoked N times through the management API;
//!   time from the first invoke to the N-th announcement in the forum;
//! - the floor, interleaved with the first two: a bare HTTP request to the fake (`getMe`, a new
//!   connection each time) and spawn + wait of `/bin/true`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_telegram::{FakeTelegram, User};
use kai_bench::{cpu_model, git_commit, load_average, Daemon};
use serde_json::{json, Value};

const OWNER: i64 = 1001;
const FORUM: i64 = -100_123_456;
const ADMIN: &str = "admin-token-of-the-chat-bench-0123456789";
/// How long any single wait may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(30);
/// Polling step of the waits that are timed.
const STEP: Duration = Duration::from_micros(250);
/// Rounds the interleaved measurements are split into.
const ROUNDS: usize = 10;
/// Connections the outbox burst's invokes are sent on at once.
const SENDERS: usize = 4;

fn start(data: &Path, tg: &FakeTelegram) -> Daemon {
    Daemon::start(
        data,
        &[
            ("KAI_TELEGRAM_TOKEN", fake_telegram::TOKEN.to_owned()),
            ("KAI_TELEGRAM_API_URL", tg.url()),
            ("KAI_ALLOWED_USERS", OWNER.to_string()),
            ("KAI_NOTIFY_CHAT", FORUM.to_string()),
            ("KAI_TELEGRAM_PACING", "0s".into()),
            ("KAI_API_TOKEN", ADMIN.into()),
        ],
    )
}

/// One HTTP/1.1 request on a new connection (`Connection: close`); the status and the body.
fn http(addr: &str, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream.set_nodelay(true).expect("nodelay");
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("request sent");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("answer read");
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `POST /api/modules/{module}/invoke` for `entity`; the run id.
fn invoke(addr: &str, module: &str, entity: &str) -> String {
    let (status, body) = http(
        addr,
        "POST",
        &format!("/api/modules/{module}/invoke"),
        Some(ADMIN),
        &json!({ "entity": entity }).to_string(),
    );
    assert_eq!(status, 202, "invoke {module} {entity}: {body}");
    let v: Value = serde_json::from_str(&body).expect("a JSON answer");
    v["run_id"].as_str().expect("a run id").to_owned()
}

/// Polls `what` every `step` until it gives something; panics after [`PATIENCE`].
fn wait_for<T>(what: &str, step: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "waited {}s for {what}",
            PATIENCE.as_secs()
        );
        std::thread::sleep(step);
    }
}

fn write_module(data: &Path, name: &str, manifest_rest: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = data.join("modules").join(name);
    std::fs::create_dir_all(&dir).expect("module dir");
    let script_path = dir.join("m.sh");
    std::fs::write(&script_path, script).expect("script written");
    std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755))
        .expect("executable");
    std::fs::write(
        dir.join("module.yaml"),
        format!("name: {name}\ndescription: a module of the chat bench\nrun: [\"./m.sh\"]\n{manifest_rest}"),
    )
    .expect("manifest written");
}

/// The question message of `run_id` in the forum: its id, once it has its buttons.
fn question_message(tg: &FakeTelegram, run_id: &str) -> Option<i64> {
    let data = format!("q:{run_id}:0");
    tg.messages(FORUM).into_iter().rev().find_map(|m| {
        let markup = m.reply_markup.as_ref()?;
        markup.to_string().contains(&data).then_some(m.message_id)
    })
}

#[derive(Default)]
struct Series(Vec<Duration>);

impl Series {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    fn sorted(&self) -> Vec<Duration> {
        let mut s = self.0.clone();
        s.sort();
        s
    }
    fn row(&self, what: &str) -> String {
        let s = self.sorted();
        let p = |q: f64| {
            if s.is_empty() {
                Duration::ZERO
            } else {
                s[((s.len() - 1) as f64 * q).round() as usize]
            }
        };
        let total: Duration = s.iter().sum();
        let rate = if total.is_zero() {
            0.0
        } else {
            s.len() as f64 / total.as_secs_f64()
        };
        format!(
            "| {what} | {} | {} | {} | {} | {rate:.0}/s |",
            s.len(),
            ms(p(0.5)),
            ms(p(0.99)),
            ms(*s.last().unwrap_or(&Duration::ZERO))
        )
    }
    fn median(&self) -> Duration {
        let s = self.sorted();
        s.get(s.len() / 2).copied().unwrap_or_default()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// The floor: one `getMe` to the fake over a new connection.
fn floor_http(tg_addr: &str) -> Duration {
    let t = Instant::now();
    let (status, body) = http(
        tg_addr,
        "POST",
        &format!("/bot{}/getMe", fake_telegram::TOKEN),
        None,
        "{}",
    );
    let d = t.elapsed();
    assert_eq!(status, 200, "getMe: {body}");
    d
}

/// The floor: spawn and wait of `/bin/true`.
fn floor_spawn() -> Duration {
    let t = Instant::now();
    let status = Command::new("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("/bin/true runs");
    let d = t.elapsed();
    assert!(status.success());
    d
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n_status, n_burst, n_ask, n_floor) = if quick {
        (20, 50, 10, 200)
    } else {
        (200, 500, 100, 200)
    };
    let bench_started = Instant::now();
    let load_before = load_average();

    // Dropped last: the daemon and the fake go first.
    let data = tempfile::tempdir().expect("temp dir");
    let marks = data.path().join("marks");
    std::fs::create_dir_all(&marks).expect("marks dir");
    write_module(
        data.path(),
        "burst",
        "notify: all\nconcurrency: 4\n",
        "#!/bin/sh\ncat >/dev/null\necho '{\"status\":\"done\",\"summary\":\"x\"}'\n",
    );
    // A normal run pauses with a question; the resume run appends a line to
    // `marks/resumed-<paused run id>` (the first `run_id` after its own in the context is the
    // trigger payload's: the paused run) and ends `done`. Shell built-ins only.
    write_module(
        data.path(),
        "asker",
        "notify: none\nconcurrency: 4\n",
        &format!(
            r#"#!/bin/sh
ctx=$(cat)
case "$ctx" in
*'"type":"resume"'*)
  rest=${{ctx#*\"run_id\":\"$KAI_RUN_ID\"}}
  rest=${{rest#*\"run_id\":\"}}
  echo x >> "{marks}/resumed-${{rest%%\"*}}"
  echo '{{"status":"done","summary":"resumed"}}'
  ;;
*)
  echo '{{"status":"paused","summary":"q","question":{{"text":"go?","options":["yes","no"]}}}}'
  ;;
esac
"#,
            marks = marks.display()
        ),
    );

    let tg = FakeTelegram::start();
    let tg_addr = tg.url().trim_start_matches("http://").to_owned();
    let owner: User = FakeTelegram::user(OWNER, "Olive", "olive");
    tg.add_private_chat(&owner);
    tg.add_forum(FORUM, "kai");
    let daemon = start(data.path(), &tg);

    // Warm-up: the poller is up (a first /status answered), the forum known, the burst
    // module's topic created, one question asked and answered.
    tg.send_text(OWNER, &owner, "/status", None, None);
    wait_for("the first /status reply", Duration::from_millis(5), || {
        (tg.messages(OWNER).len() == 1).then_some(())
    });
    invoke(&daemon.addr, "burst", "warm-up");
    wait_for("the first announcement", Duration::from_millis(5), || {
        tg.messages(FORUM)
            .iter()
            .any(|m| m.text.contains("warm-up"))
            .then_some(())
    });
    let run = invoke(&daemon.addr, "asker", "warm-up");
    let q = wait_for("the first question", Duration::from_millis(5), || {
        question_message(&tg, &run)
    });
    tg.press_button(FORUM, q, &owner, &format!("q:{run}:0"));
    let mark = |run: &str| marks.join(format!("resumed-{run}"));
    wait_for("the first resume", Duration::from_millis(5), || {
        mark(&run).exists().then_some(())
    });

    let mut http_floor = Series::default();
    let mut spawn_floor = Series::default();
    let mut status_rt = Series::default();
    let mut ask = Series::default();
    let mut resume = Series::default();
    let mut asked_runs = vec![run];

    for round in 0..ROUNDS {
        let part = |n: usize| n / ROUNDS + usize::from(round < n % ROUNDS);
        for _ in 0..part(n_floor) {
            http_floor.push(floor_http(&tg_addr));
            spawn_floor.push(floor_spawn());
        }
        for _ in 0..part(n_status) {
            let before = tg.messages(OWNER).len();
            let t = Instant::now();
            tg.send_text(OWNER, &owner, "/status", None, None);
            wait_for("a /status reply", STEP, || {
                (tg.messages(OWNER).len() > before).then_some(())
            });
            status_rt.push(t.elapsed());
        }
        for i in 0..part(n_ask) {
            let entity = format!("ask-{round}-{i}");
            let t = Instant::now();
            let run = invoke(&daemon.addr, "asker", &entity);
            let q = wait_for("a question", STEP, || question_message(&tg, &run));
            ask.push(t.elapsed());
            let t = Instant::now();
            tg.press_button(FORUM, q, &owner, &format!("q:{run}:0"));
            let file = mark(&run);
            wait_for("a resume", STEP, || file.exists().then_some(()));
            resume.push(t.elapsed());
            // The question's message shows the answer before the next one is asked.
            wait_for("the answered question", Duration::from_millis(1), || {
                tg.messages(FORUM)
                    .iter()
                    .any(|m| m.message_id == q && m.edited)
                    .then_some(())
            });
            asked_runs.push(run);
        }
    }

    // Outbox throughput: N invokes as fast as they are accepted, then wait for the N-th
    // announcement in the forum.
    let announced = |tg: &FakeTelegram| {
        tg.messages(FORUM)
            .iter()
            .filter(|m| m.text.contains("burst-"))
            .count()
    };
    // 4 connections at once, so that the daemon, not the bench's sequential requests, sets
    // the pace.
    let t = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|k| {
            let addr = daemon.addr.clone();
            std::thread::spawn(move || {
                let mut accept = Series::default();
                for i in (k..n_burst).step_by(SENDERS) {
                    let one = Instant::now();
                    invoke(&addr, "burst", &format!("burst-{i:05}"));
                    accept.push(one.elapsed());
                }
                accept
            })
        })
        .collect();
    let mut accept = Series::default();
    for s in senders {
        accept.0.extend(s.join().expect("sender").0);
    }
    let invoked = t.elapsed();
    wait_for("every announcement", Duration::from_millis(2), || {
        (announced(&tg) >= n_burst).then_some(())
    });
    let burst = t.elapsed();

    // Let anything late or repeated arrive, then check: one reply per /status, one
    // announcement per run, one resume per question.
    std::thread::sleep(Duration::from_secs(2));
    let mut problems = Vec::new();
    let replies = tg.messages(OWNER).len();
    if replies != n_status + 1 {
        problems.push(format!(
            "{replies} replies in the owner's chat for {} /status",
            n_status + 1
        ));
    }
    let mut per_entity: BTreeMap<String, usize> = BTreeMap::new();
    for m in tg.messages(FORUM) {
        if let Some(e) = m
            .text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .find(|w| w.starts_with("burst-"))
        {
            *per_entity.entry(e.to_owned()).or_default() += 1;
        }
    }
    let missing = (0..n_burst)
        .filter(|i| !per_entity.contains_key(&format!("burst-{i:05}")))
        .count();
    let repeated = per_entity.values().filter(|&&c| c > 1).count();
    if missing > 0 || repeated > 0 || per_entity.len() != n_burst {
        problems.push(format!(
            "announcements: {missing} missing, {repeated} more than once, {} entities seen for {n_burst}",
            per_entity.len()
        ));
    }
    let resumes_wrong = asked_runs
        .iter()
        .filter(|r| {
            std::fs::read_to_string(mark(r))
                .map(|s| s.lines().count() != 1)
                .unwrap_or(true)
        })
        .count();
    if resumes_wrong > 0 {
        problems.push(format!(
            "{resumes_wrong} of {} questions not resumed exactly once",
            asked_runs.len()
        ));
    }
    let daemon_rss = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let load_after = load_average();
    let complaints = daemon.complaints.lock().expect("log lines").clone();

    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("## Chat (kai serve, release build, fake Telegram on loopback)\n");
    println!("| machine | |");
    println!("|---|---|");
    println!("| cpu | {nproc} × {} |", cpu_model());
    println!("| kai commit | {} |", git_commit());
    println!(
        "| command | `chat{}` |",
        if quick { " --quick" } else { "" }
    );
    println!("| pacing | `KAI_TELEGRAM_PACING=0s` |");
    println!();
    println!("| what | n | p50 ms | p99 ms | max ms | 1/mean |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "{}",
        http_floor.row("floor: HTTP round trip to the fake (`getMe`, new connection)")
    );
    println!("{}", spawn_floor.row("floor: spawn + wait `/bin/true`"));
    println!(
        "{}",
        status_rt.row("**`/status` round trip** (owner writes → reply in the chat)")
    );
    println!("{}", ask.row("invoke → question with buttons in the forum"));
    println!(
        "{}",
        resume.row("**answer to resume** (button pressed → resume run's file exists)")
    );
    println!(
        "{}",
        accept.row("invoke accepted (`POST /api/modules/burst/invoke` → 202), during the burst, 4 connections")
    );
    println!();
    println!(
        "Outbox throughput: {n_burst} invokes of a `notify: all` module (concurrency 4), sent on {SENDERS} connections at once, accepted in {:.0} ms; the {n_burst}-th announcement in the forum after {:.0} ms: **{:.0} messages/s** (runs and announcements together).",
        invoked.as_secs_f64() * 1000.0,
        burst.as_secs_f64() * 1000.0,
        n_burst as f64 / burst.as_secs_f64()
    );
    println!();
    println!(
        "`/status` round trip over the HTTP floor: {} ms at the median (for two HTTP round trips with the fake and the ledger's commits).",
        ms(status_rt.median().saturating_sub(http_floor.median() * 2))
    );
    println!(
        "Daemon memory at the end (VmRSS): {:.1} MB.",
        daemon_rss as f64 / 1024.0
    );
    println!("Load average (1, 5, 15 min) before: {load_before}; after: {load_after}.");
    if problems.is_empty() {
        println!("Checks: every /status answered once, every announcement once, every question resumed once.");
    } else {
        for p in &problems {
            println!("PROBLEM: {p}");
        }
    }
    println!("Daemon log lines at WARN or ERROR: {}.", complaints.len());
    for line in complaints.iter().take(10) {
        println!("    {line}");
    }
    println!(
        "Total bench time: {:.0} s.",
        bench_started.elapsed().as_secs_f64()
    );
    drop(daemon);
    drop(tg);
    drop(data);
    if !problems.is_empty() {
        std::process::exit(1);
    }
}
