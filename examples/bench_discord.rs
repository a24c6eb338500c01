//! Benchmark of the Discord front end: the release `o365-fixbot serve --sandbox` binary against
//! the fake Discord from the tests (REST checked against Discord's OpenAPI description, gateway
//! websocket), with its embedded sandbox tenant behind it.
//!
//! 1. Fifty `/fix-immutable-id` commands dispatched through the gateway at once (three rounds):
//!    p50 / p99 from the dispatch to the interaction response (the ephemeral defer), and to the
//!    finished reply (plan posted, reactions seeded, thread started).
//! 2. Resident memory (VmRSS) of the `serve` process idle after READY, and with 1,000 runs
//!    awaiting approval.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_discord
//! ```

#[path = "../tests/it/fake_discord/mod.rs"]
mod fake_discord;

use fake_discord::{FakeDiscord, Person, APPROVER_ROLE, CHANNEL, GUILD, REQUESTER_ROLE, TOKEN};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROUND: usize = 50;
const ROUNDS: usize = 3;
const AWAITING: usize = 1000;
const USERS: [&str; 4] = [
    "adele@contoso.com",
    "alex@fabrikam.com",
    "megan@contoso.com",
    "o'brien@contoso.com",
];

fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    // target/release/examples/bench_discord → target/release/o365-fixbot
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("o365-fixbot"))
        .expect("target dir")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn config(fake: &FakeDiscord, data: &std::path::Path) -> String {
    let base = o365_fixbot::config::EMBEDDED_DEFAULT
        .replace(
            "data_dir = \"data/sandbox\"",
            &format!("data_dir = {:?}", data.display().to_string()),
        )
        .replace("latency = 20", "latency = 0")
        .replace("graph_read_lag = 300", "graph_read_lag = 0")
        .replace("ordinary_users = 300", "ordinary_users = 20")
        .replace("okta_rate_limit = 600", "okta_rate_limit = 1000000");
    format!(
        "{base}\n[discord]\nguild_ids = [{GUILD}]\nchannel_ids = [{CHANNEL}]\n\
         requester_role_ids = [{REQUESTER_ROLE}]\napprover_role_ids = [{APPROVER_ROLE}]\n\
         api_base = \"{}\"\ncommands_per_minute = 600\ncommand_burst = 100\nmax_open_runs = 5000\n",
        fake.base
    )
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let bin = binary();
    if !bin.exists() {
        eprintln!(
            "{} is missing: run `cargo build --release` first",
            bin.display()
        );
        std::process::exit(2);
    }
    let fake = FakeDiscord::start().await;
    let dir = std::env::temp_dir().join(format!("fixbot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = dir.join("bench.toml");
    std::fs::write(&cfg, config(&fake, &dir.join("data"))).expect("config");
    let child = Command::new(&bin)
        .args([
            "--config",
            cfg.to_str().expect("utf-8 path"),
            "serve",
            "--sandbox",
        ])
        .env("FIXBOT_DISCORD_TOKEN", TOKEN)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .spawn()
        .expect("start serve");
    let serve = Serve(child);
    let pid = serve.0.id();
    fake.wait_ready().await;
    let settle = fake.world(|w| w.requests.len());
    // Idle: after READY and command registration, nothing else in flight.
    let idle = rss_kib(pid);
    println!("serve --sandbox (pid {pid}), release build, embedded sandbox tenant included");
    println!("RSS idle after READY: {:.1} MiB", idle as f64 / 1024.0);
    let _ = settle;

    let mut sent = 0usize;
    let mut all_ack = Vec::new();
    let mut all_done = Vec::new();
    for round in 0..ROUNDS {
        let people: Vec<Person> = (0..ROUND)
            .map(|i| Person::new(10_000 + (sent + i) as u64, "requester", &[REQUESTER_ROLE]))
            .collect();
        let ids: Vec<u64> = people
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let upn = USERS[(sent + i) % USERS.len()];
                fake.slash(
                    p,
                    CHANNEL,
                    "fix-immutable-id",
                    &[("user", upn), ("reason", "bench")],
                )
            })
            .collect();
        sent += ROUND;
        let done = fake
            .wait_for("every reply of the round", Duration::from_secs(120), |w| {
                let all = ids.iter().all(|i| {
                    w.interactions[i]
                        .texts
                        .iter()
                        .any(|t| t.contains("plan posted") || t.contains("could not"))
                });
                all.then(|| {
                    ids.iter()
                        .map(|i| w.interactions[i].clone())
                        .collect::<Vec<_>>()
                })
            })
            .await;
        let finished_at = fake.world(|w| {
            // When each deferred reply got its final text: the last webhook edit for its token.
            ids.iter()
                .map(|i| {
                    let tok = &w.interactions[i].token;
                    w.requests
                        .iter()
                        .rev()
                        .find(|r| r.method == "PATCH" && r.path.contains(tok.as_str()))
                        .map(|r| r.at)
                })
                .collect::<Vec<_>>()
        });
        let mut ack: Vec<Duration> = done.iter().filter_map(|i| i.latency()).collect();
        let mut full: Vec<Duration> = done
            .iter()
            .zip(&finished_at)
            .filter_map(|(i, f)| Some(f.as_ref()?.duration_since(i.dispatched?)))
            .collect();
        ack.sort();
        full.sort();
        let failed = done
            .iter()
            .filter(|i| !i.last_text().contains("plan posted"))
            .count();
        println!(
            "round {}: {ROUND} commands at once → response (defer) p50 {} p99 {} max {}; plan posted p50 {} p99 {}; failures {failed}",
            round + 1,
            ms(pct(&ack, 0.50)),
            ms(pct(&ack, 0.99)),
            ms(*ack.last().unwrap_or(&Duration::ZERO)),
            ms(pct(&full, 0.50)),
            ms(pct(&full, 0.99)),
        );
        all_ack.extend(ack);
        all_done.extend(full);
    }
    all_ack.sort();
    all_done.sort();
    println!(
        "all {} commands: response p50 {} p99 {}; plan posted p50 {} p99 {}",
        all_ack.len(),
        ms(pct(&all_ack, 0.50)),
        ms(pct(&all_ack, 0.99)),
        ms(pct(&all_done, 0.50)),
        ms(pct(&all_done, 0.99)),
    );

    // Fill up to 1,000 runs awaiting approval, 50 at a time.
    let started = Instant::now();
    while sent < AWAITING {
        let n = ROUND.min(AWAITING - sent);
        let ids: Vec<u64> = (0..n)
            .map(|i| {
                let p = Person::new(10_000 + (sent + i) as u64, "requester", &[REQUESTER_ROLE]);
                fake.slash(
                    &p,
                    CHANNEL,
                    "fix-immutable-id",
                    &[("user", USERS[(sent + i) % USERS.len()])],
                )
            })
            .collect();
        sent += n;
        fake.wait_for("a batch of plans", Duration::from_secs(120), |w| {
            ids.iter()
                .all(|i| !w.interactions[i].texts.is_empty())
                .then_some(())
        })
        .await;
    }
    let plans = fake.world(|w| {
        w.messages_in(CHANNEL)
            .iter()
            .filter(|m| m.content.contains("awaiting approval"))
            .count()
    });
    let full = rss_kib(pid);
    println!(
        "{plans} runs awaiting approval (filled in {:.1} s): RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        full as f64 / 1024.0
    );
    let violations = fake.violations();
    println!(
        "REST requests: {}, spec violations: {}",
        fake.world(|w| w.requests.len()),
        violations.len()
    );
    for v in violations.iter().take(5) {
        println!("  {v}");
    }
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}
