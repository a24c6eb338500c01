//! Benchmark of the Discord front end: the release `o365-fixbot serve --sandbox` binary against
//! the fake Discord from the tests (REST checked against Discord's OpenAPI description and, by
//! default, held to Discord's rate limits; gateway websocket), with its embedded sandbox tenant
//! behind it. Every repair is for its own sandbox ordinary user (`user0001@contoso.com` …).
//!
//! 0. Resident memory (VmRSS) of the `serve` process idle after READY.
//! 1. One repair, counted (Discord's limits on): one requester asks, an approver reacts ✅ as
//!    soon as the plan is set up, then the bench waits for the summary in the run's thread, the
//!    plan message's final state and one quiet second. Prints every REST request the repair
//!    cost, from the command's answer to the final plan edit, by route template; the 429s seen;
//!    and the times from dispatch to answer and plan, and from approval to summary.
//! 2. Thirty concurrent repairs (limits on): thirty requesters at once, each plan approved as
//!    soon as it is set up, until every summary and final plan state is in. Prints wall time,
//!    requests per repair (total ÷ 30, and the range for one repair: requests on its plan and
//!    thread, its interaction's requests and the plan's own post), the fake's 429s by route,
//!    and p50 / p99 from approval to summary and to the final plan state.
//! 3. Command latency (limits on): fifty `/fix-immutable-id` at once. p50 / p99 / max from the
//!    dispatch to the interaction response (type 4, ephemeral), and p50 / p99 / max from the
//!    dispatch to the plan message being posted — at Discord's five posts per five seconds per
//!    channel these spread over about fifty seconds by design.
//! 4. Memory with 1,000 runs awaiting approval. Posting 1,000 plans in one channel under the
//!    per-channel limit would take 1,000 s, so the fake's rate limits are switched off for this
//!    section (`w.limits.enabled = false`), and the output says so.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_discord
//! ```

#[path = "../tests/it/fake_discord/mod.rs"]
mod fake_discord;

use fake_discord::{
    FakeDiscord, Person, Req, World, APPROVER_ROLE, BOT_ID, CHANNEL, GUILD, REQUESTER_ROLE, TOKEN,
};
use o365_fixbot::sandbox::scenario::ordinary_upn;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ordinary users in the sandbox: one per repair in sections 1–3, reused in section 4.
const USERS: usize = 200;
const CONCURRENT: usize = 30;
const COMMANDS: usize = 50;
const AWAITING: usize = 1000;
const BATCH: usize = 50;
/// Silence that ends a section: the coalesced edits are done.
const QUIET: Duration = Duration::from_secs(1);

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

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// "p50 … p99 … max …" of some durations.
fn spread(mut v: Vec<Duration>, fmt: fn(Duration) -> String) -> String {
    v.sort();
    format!(
        "p50 {} · p99 {} · max {} (n = {})",
        fmt(pct(&v, 0.50)),
        fmt(pct(&v, 0.99)),
        fmt(v.last().copied().unwrap_or_default()),
        v.len()
    )
}

fn config(fake: &FakeDiscord, data: &std::path::Path) -> String {
    let base = o365_fixbot::config::EMBEDDED_DEFAULT
        .replace(
            "data_dir = \"data/sandbox\"",
            &format!("data_dir = {:?}", data.display().to_string()),
        )
        .replace("latency = 20", "latency = 0")
        .replace("graph_read_lag = 300", "graph_read_lag = 0")
        .replace("ordinary_users = 300", &format!("ordinary_users = {USERS}"))
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

// --- reading the fake's world ----------------------------------------------------------------

/// Requests that are part of a repair: not the gateway URL lookup, not command registration.
fn counted(r: &Req) -> bool {
    let registration = r.method == "PUT" && r.template.ends_with("/commands");
    !r.template.starts_with("/gateway") && !registration
}

fn route(method: &str, template: &str) -> String {
    format!("{method} {template}")
}

fn content(r: &Req) -> &str {
    r.body
        .as_ref()
        .and_then(|b| b["content"].as_str())
        .unwrap_or("")
}

/// The counted requests from index `from` on.
fn requests_since(fake: &FakeDiscord, from: usize) -> Vec<Req> {
    fake.world(|w| {
        w.requests[from..]
            .iter()
            .filter(|r| counted(r))
            .cloned()
            .collect()
    })
}

fn by_route(reqs: &[Req]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in reqs {
        *out.entry(route(&r.method, &r.template)).or_default() += 1;
    }
    out
}

/// 429s given from index `from` of `w.rate_limited` on, by route template and bucket kind.
fn limited_since(fake: &FakeDiscord, from: usize) -> BTreeMap<String, usize> {
    fake.world(|w| {
        let mut out = BTreeMap::new();
        for (template, channel) in &w.rate_limited[from..] {
            let bucket = match *channel {
                0 => "global".to_owned(),
                CHANNEL => "the channel".to_owned(),
                c if w.threads.contains_key(&c) => "a run's thread".to_owned(),
                c => format!("channel {c}"),
            };
            *out.entry(format!("{template} ({bucket})")).or_default() += 1;
        }
        out
    })
}

fn print_table(title: &str, rows: &BTreeMap<String, usize>) {
    println!("  {title}");
    if rows.is_empty() {
        println!("    (none)");
    }
    for (k, n) in rows {
        println!("    {n:>5}  {k}");
    }
}

/// The plan message for `upn`, once the bot has started setting it up (its own ✅ is on it, so
/// the run's slot exists and an approval is counted).
fn plan_ready(w: &World, upn: &str) -> Option<u64> {
    w.messages
        .values()
        .find(|m| {
            m.channel == CHANNEL && m.content.contains("Repair plan for") && m.content.contains(upn)
        })
        .map(|m| m.id)
        .filter(|id| w.reactions.contains(&(*id, "✅".to_owned(), BOT_ID)))
}

/// The state line of a plan message.
fn state_of(content: &str) -> &str {
    content.rsplit("State:").next().unwrap_or("")
}

fn final_state(w: &World, plan: u64) -> bool {
    w.messages.get(&plan).is_some_and(|m| {
        let s = state_of(&m.content);
        m.content.contains("State:") && !s.contains("awaiting approval") && !s.contains("running")
    })
}

fn summary_in(w: &World, plan: u64) -> Option<String> {
    w.messages
        .values()
        .find(|m| m.channel == plan && m.content.contains("· requested by"))
        .map(|m| m.content.clone())
}

/// When the last request matching `f` arrived (the accepted one: a 429 is followed by a retry).
fn last_at(w: &World, f: impl Fn(&Req) -> bool) -> Option<Instant> {
    w.requests.iter().rev().find(|r| f(r)).map(|r| r.at)
}

fn is_plan_post(r: &Req, upn: &str) -> bool {
    r.method == "POST"
        && r.path == format!("/channels/{CHANNEL}/messages")
        && content(r).contains("Repair plan for")
        && content(r).contains(upn)
}

/// Waits until no request has arrived for [`QUIET`] (at most `limit`).
async fn quiet(fake: &FakeDiscord, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let last = fake.world(|w| w.requests.last().map(|r| r.at));
        let since = last.map_or(QUIET, |t| t.elapsed());
        if since >= QUIET {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(QUIET - since + Duration::from_millis(10)).await;
    }
}

// --- driving repairs -------------------------------------------------------------------------

struct Repair {
    upn: String,
    interaction: u64,
    plan: Option<u64>,
    approved_at: Option<Instant>,
}

/// Figures of one finished repair, read from the fake's request log.
struct Timing {
    answered: Option<Duration>,
    plan_posted: Option<Duration>,
    to_summary: Option<Duration>,
    to_final_plan: Option<Duration>,
    done: bool,
}

/// Dispatches one `/fix-immutable-id` per user, each from its own requester, all at once.
fn ask(fake: &FakeDiscord, next_person: &mut u64, users: &[usize]) -> Vec<Repair> {
    users
        .iter()
        .map(|&n| {
            let upn = ordinary_upn(n);
            let who = Person::new(*next_person, "requester", &[REQUESTER_ROLE]);
            *next_person += 1;
            let interaction = fake.slash(
                &who,
                CHANNEL,
                "fix-immutable-id",
                &[("user", &upn), ("reason", "bench")],
            );
            Repair {
                upn,
                interaction,
                plan: None,
                approved_at: None,
            }
        })
        .collect()
}

/// Approves each plan as soon as it is set up, until every summary and final plan state is in.
async fn drive(fake: &FakeDiscord, approver: &Person, repairs: &mut [Repair], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let step = fake
            .wait_for(
                "a plan to approve, or every summary and final plan state",
                left,
                |w| {
                    let ready: Vec<(usize, u64)> = repairs
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.approved_at.is_none())
                        .filter_map(|(i, r)| plan_ready(w, &r.upn).map(|p| (i, p)))
                        .collect();
                    if !ready.is_empty() {
                        return Some(Some(ready));
                    }
                    let all = repairs.iter().all(|r| {
                        r.plan
                            .is_some_and(|p| summary_in(w, p).is_some() && final_state(w, p))
                    });
                    all.then_some(None)
                },
            )
            .await;
        let Some(ready) = step else { return };
        for (i, plan) in ready {
            repairs[i].plan = Some(plan);
            repairs[i].approved_at = Some(Instant::now());
            fake.react(approver, CHANNEL, plan, "✅");
        }
    }
}

fn timing(fake: &FakeDiscord, r: &Repair) -> Timing {
    let plan = r.plan.expect("approved");
    let approved = r.approved_at.expect("approved");
    fake.world(|w| {
        let i = &w.interactions[&r.interaction];
        let dispatched = i.dispatched.expect("dispatched");
        let thread = format!("/channels/{plan}/messages");
        let plan_path = format!("/channels/{CHANNEL}/messages/{plan}");
        let summary = last_at(w, |q| {
            q.method == "POST" && q.path == thread && content(q).contains("· requested by")
        });
        let final_edit = last_at(w, |q| q.method == "PATCH" && q.path == plan_path);
        Timing {
            answered: i.latency(),
            plan_posted: last_at(w, |q| is_plan_post(q, &r.upn)).map(|t| t - dispatched),
            to_summary: summary.map(|t| t - approved),
            to_final_plan: final_edit.map(|t| t - approved),
            done: summary_in(w, plan).is_some_and(|s| s.contains("🎉 done")),
        }
    })
}

/// Requests one repair cost: on its plan message and thread, its interaction, its plan's post.
fn per_repair(fake: &FakeDiscord, r: &Repair) -> usize {
    let plan = r.plan.expect("approved");
    let posts = fake.world(|w| {
        w.requests
            .iter()
            .filter(|q| is_plan_post(q, &r.upn))
            .count()
    });
    fake.requests_touching(plan) + fake.interaction_requests(r.interaction) + posts
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
    quiet(&fake, Duration::from_secs(10)).await;
    let limits = fake.world(|w| w.limits.clone());
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("serve --sandbox (pid {pid}), {build} build, embedded sandbox tenant ({USERS} ordinary users) in the same process");
    println!(
        "fake Discord limits: {} (POST messages {}/{:?} per channel, PATCH messages {}/{:?} per channel, reactions {}/{:?} per channel, threads {}/{:?}, global {}/{:?})",
        if limits.enabled { "on" } else { "off" },
        limits.create_message.count,
        limits.create_message.per,
        limits.edit_message.count,
        limits.edit_message.per,
        limits.reaction.count,
        limits.reaction.per,
        limits.create_thread.count,
        limits.create_thread.per,
        limits.global.count,
        limits.global.per,
    );

    // --- 0. idle memory ----------------------------------------------------------------------
    let idle = rss_kib(pid);
    println!();
    println!("== 0. memory, idle");
    println!("  RSS idle after READY: {:.1} MiB", idle as f64 / 1024.0);

    let approver = Person::new(5_000, "approver", &[APPROVER_ROLE]);
    let mut next_person = 10_000u64;
    let mut next_user = 1usize;
    let mut take_users = |n: usize| {
        let v: Vec<usize> = (next_user..next_user + n).collect();
        next_user += n;
        v
    };

    // --- 1. one repair, counted --------------------------------------------------------------
    println!();
    println!("== 1. one repair, counted (limits on)");
    let from = fake.world(|w| w.requests.len());
    let rl_from = fake.rate_limited_count();
    let mut one = ask(&fake, &mut next_person, &take_users(1));
    drive(&fake, &approver, &mut one, Duration::from_secs(60)).await;
    let settled = quiet(&fake, Duration::from_secs(30)).await;
    let reqs = requests_since(&fake, from);
    let t = timing(&fake, &one[0]);
    println!(
        "  {} ({}), plan message {}",
        one[0].upn,
        if t.done {
            "🎉 done"
        } else {
            "NOT done — see the summary"
        },
        one[0].plan.unwrap_or(0)
    );
    println!(
        "  REST requests for the repair, command answer to final plan edit: {}{}",
        reqs.len(),
        if settled {
            ""
        } else {
            " (requests still arriving after 30 s)"
        }
    );
    print_table("by route:", &by_route(&reqs));
    println!(
        "  cross-check: requests_touching(plan) {} + interaction_requests {} + plan posts {} = {}",
        fake.requests_touching(one[0].plan.unwrap_or(0)),
        fake.interaction_requests(one[0].interaction),
        fake.world(|w| w.requests[from..]
            .iter()
            .filter(|q| is_plan_post(q, &one[0].upn))
            .count()),
        per_repair(&fake, &one[0]),
    );
    let limited = limited_since(&fake, rl_from);
    println!("  429s seen: {}", fake.rate_limited_count() - rl_from);
    if !limited.is_empty() {
        print_table("429s by route:", &limited);
    }
    let opt = |d: Option<Duration>, f: fn(Duration) -> String| d.map_or("—".to_owned(), f);
    println!(
        "  dispatch → interaction response {} · dispatch → plan posted {}",
        opt(t.answered, ms),
        opt(t.plan_posted, ms)
    );
    println!(
        "  approval → summary in the thread {} · approval → final plan edit {}",
        opt(t.to_summary, secs),
        opt(t.to_final_plan, secs)
    );

    // --- 2. thirty concurrent repairs --------------------------------------------------------
    println!();
    println!("== 2. {CONCURRENT} concurrent repairs (limits on)");
    let from = fake.world(|w| w.requests.len());
    let rl_from = fake.rate_limited_count();
    let started = Instant::now();
    let mut many = ask(&fake, &mut next_person, &take_users(CONCURRENT));
    drive(&fake, &approver, &mut many, Duration::from_secs(300)).await;
    let wall = started.elapsed();
    let settled = quiet(&fake, Duration::from_secs(30)).await;
    let reqs = requests_since(&fake, from);
    let timings: Vec<Timing> = many.iter().map(|r| timing(&fake, r)).collect();
    let per: Vec<usize> = many.iter().map(|r| per_repair(&fake, r)).collect();
    println!(
        "  wall time, dispatch to the last summary and final plan state: {} ({} of {CONCURRENT} 🎉 done)",
        secs(wall),
        timings.iter().filter(|t| t.done).count()
    );
    println!(
        "  REST requests: {} in all{} → {:.1} per repair; one repair (plan + thread + interaction + plan post): min {} · max {}",
        reqs.len(),
        if settled { "" } else { " (still arriving after 30 s)" },
        reqs.len() as f64 / CONCURRENT as f64,
        per.iter().min().copied().unwrap_or(0),
        per.iter().max().copied().unwrap_or(0),
    );
    print_table("by route (all 30):", &by_route(&reqs));
    let limited = limited_since(&fake, rl_from);
    println!(
        "  429s seen (fake's count): {}",
        fake.rate_limited_count() - rl_from
    );
    if !limited.is_empty() {
        print_table("429s by route:", &limited);
    }
    println!(
        "  approval → summary: {}",
        spread(timings.iter().filter_map(|t| t.to_summary).collect(), secs)
    );
    println!(
        "  approval → final plan edit: {}",
        spread(
            timings.iter().filter_map(|t| t.to_final_plan).collect(),
            secs
        )
    );
    println!(
        "  dispatch → plan posted: {}",
        spread(timings.iter().filter_map(|t| t.plan_posted).collect(), secs)
    );

    // --- 3. command latency ------------------------------------------------------------------
    println!();
    println!("== 3. command latency: {COMMANDS} commands at once (limits on)");
    let from = fake.world(|w| w.requests.len());
    let rl_from = fake.rate_limited_count();
    let started = Instant::now();
    let asked = ask(&fake, &mut next_person, &take_users(COMMANDS));
    fake.wait_for(
        "every plan posted and set up",
        Duration::from_secs(240),
        |w| {
            asked
                .iter()
                .all(|r| {
                    plan_ready(w, &r.upn).is_some_and(|p| {
                        w.threads.contains_key(&p)
                            && w.reactions.contains(&(p, "❌".to_owned(), BOT_ID))
                    })
                })
                .then_some(())
        },
    )
    .await;
    let all_set_up = started.elapsed();
    quiet(&fake, Duration::from_secs(30)).await;
    let (answers, kinds, posted, attempts) = fake.world(|w| {
        let mut answers = Vec::new();
        let mut kinds = BTreeMap::<String, usize>::new();
        let mut posted = Vec::new();
        let mut attempts = 0;
        for r in &asked {
            let i = &w.interactions[&r.interaction];
            answers.extend(i.latency());
            *kinds.entry(format!("{:?}", i.response)).or_default() += 1;
            let d = i.dispatched.expect("dispatched");
            posted.extend(last_at(w, |q| is_plan_post(q, &r.upn)).map(|t| t - d));
            attempts += w.requests[from..]
                .iter()
                .filter(|q| is_plan_post(q, &r.upn))
                .count();
        }
        (answers, kinds, posted, attempts)
    });
    println!("  dispatch → interaction response: {}", spread(answers, ms));
    println!("  responses (type, flags): {kinds:?}");
    println!("  dispatch → plan message posted: {}", spread(posted, secs));
    println!(
        "    ({COMMANDS} plans in one channel at Discord's 5 posts per 5 s per channel: the posts are paced over ~{COMMANDS} s by design; {attempts} plan POSTs for {COMMANDS} plans)"
    );
    println!(
        "  every plan posted with ✅ ❌ and thread after {}; REST requests {}; 429s {}",
        secs(all_set_up),
        requests_since(&fake, from).len(),
        fake.rate_limited_count() - rl_from
    );
    let limited = limited_since(&fake, rl_from);
    if !limited.is_empty() {
        print_table("429s by route:", &limited);
    }

    // --- 4. memory with 1,000 runs awaiting approval -----------------------------------------
    println!();
    println!("== 4. memory with {AWAITING} runs awaiting approval");
    println!(
        "  the fake's rate limits are SWITCHED OFF for this section (w.limits.enabled = false): {AWAITING} plans in one channel at 5 posts per 5 s would take ~{AWAITING} s"
    );
    fake.world_mut(|w| w.limits.enabled = false);
    let awaiting = |w: &World| {
        w.messages
            .values()
            .filter(|m| m.channel == CHANNEL && state_of(&m.content).contains("awaiting approval"))
            .count()
    };
    let mut have = fake.world(awaiting);
    let started = Instant::now();
    let mut cycle = next_user;
    while have < AWAITING {
        let n = BATCH.min(AWAITING - have);
        let users: Vec<usize> = (0..n)
            .map(|_| {
                if cycle > USERS {
                    cycle = next_user;
                }
                cycle += 1;
                cycle - 1
            })
            .collect();
        let threads = fake.world(|w| w.threads.len()) + n;
        ask(&fake, &mut next_person, &users);
        fake.wait_for("a batch of plans set up", Duration::from_secs(120), |w| {
            (w.threads.len() >= threads).then_some(())
        })
        .await;
        have = fake.world(awaiting);
    }
    let filled = started.elapsed();
    quiet(&fake, Duration::from_secs(30)).await;
    let full = rss_kib(pid);
    println!(
        "  {have} runs awaiting approval (filled in {}): RSS {:.1} MiB (idle {:.1} MiB, +{:.1} KiB per run awaiting)",
        secs(filled),
        full as f64 / 1024.0,
        idle as f64 / 1024.0,
        (full.saturating_sub(idle)) as f64 / have.max(1) as f64
    );

    // --- totals ------------------------------------------------------------------------------
    println!();
    let violations = fake.violations();
    println!(
        "totals: REST requests {}, 429s {}, spec violations {}",
        fake.world(|w| w.requests.len()),
        fake.rate_limited_count(),
        violations.len()
    );
    for v in violations.iter().take(10) {
        println!("  {v}");
    }
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}
