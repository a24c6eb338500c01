//! `o365-fixbot demo`: the sandbox tenant plus the console front end, telling the whole story.

use crate::approval::ApprovalPolicy;
use crate::chat::console::Console;
use crate::config::Config;
use crate::directory::graph::GraphClient;
use crate::directory::okta::OktaClient;
use crate::pipeline::Engine;
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::store::Store;
use anyhow::Context;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

/// The built-in story, in the console's event grammar.
pub const STORY: &str = r#"# Okta pushes Adele's profile to Office 365 and the push fails. The watch reads the System
# Log, diagnoses her and posts a card in the ops channel, before anyone opens a ticket.
sandbox: push adele@contoso.com
watch: poll
alice: /fix-status
# A requester asks; the wrong people's approvals do not count; an approver approves.
alice: /fix-immutable-id user:adele@contoso.com reason:INC-4711 can't sign in
alice: react ✅
mallory: react ✅
bob: react ✅
# A user synced from on-premises AD is refused at plan time.
alice: /fix-immutable-id user:lynne@contoso.com reason:INC-4712
# A managed-domain user: no UPN moves.
carol: /fix-immutable-id user:alex@fabrikam.com
bob: react ✅
# A refusal mid-pipeline: Graph refuses the new ImmutableID, and the UPN move is undone.
sandbox: fail graph.update_user 2 403 Authorization_RequestDenied
alice: /fix-immutable-id user:megan@contoso.com reason:INC-4713
bob: react ✅
# The full repair (mode:full: a new value in both systems). No answer from Okta to the
# reassign: it may have happened, so it is sent again.
sandbox: fail okta.assign 1 500 E0000009
alice: /fix-immutable-id user:o'brien@contoso.com mode:full
bob: react ✅
# A diagnosis offers its fix; 🔧 plans it for a second person's approval.
carol: /diagnose user:dana@contoso.com
carol: react 🔧
bob: react ✅
# Many users at once: one plan (refused users listed), one approval, one provisioning window.
carol: /fix-immutable-id users:user0001@contoso.com, user0002@contoso.com, lynne@contoso.com, user0003@contoso.com mode:full reason:cut-over
bob: react ✅
# The repair closed the watch's finding, and Adele is healthy now.
alice: /fix-status
alice: /diagnose user:adele@contoso.com
"#;

pub fn sandbox_options(config: &Config, bind: SocketAddr) -> SandboxOptions {
    SandboxOptions {
        bind,
        latency: config.sandbox.latency,
        graph_read_lag: config.sandbox.graph_read_lag,
        ordinary_users: config.sandbox.ordinary_users,
        okta_rate_limit: config.sandbox.okta_rate_limit,
        mapping: config.sandbox.mapping,
        ..SandboxOptions::default()
    }
}

/// An engine wired to a running sandbox, with its state in `data_dir`.
pub fn sandbox_engine(
    config: &Config,
    sandbox: &Sandbox,
    data_dir: &Path,
) -> anyhow::Result<Engine> {
    let store = Store::open(data_dir)?;
    let graph = GraphClient::new(sandbox.graph_config(config.http.clone()))?;
    let okta = OktaClient::new(sandbox.okta_config(config.http.clone()))?;
    Ok(Engine::new(graph, okta, store, config.repair.clone())
        .observed_by(crate::ops::metrics::observer()))
}

/// Runs `script` (or the built-in story) against a fresh sandbox and prints the final state.
pub async fn run(
    config: &Config,
    script: Option<&[u8]>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let sandbox = Sandbox::start(sandbox_options(
        config,
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ))
    .await
    .context("could not start the sandbox tenant")?;
    let data_dir = std::env::temp_dir().join(format!(
        "o365-fixbot-demo-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let engine = sandbox_engine(config, &sandbox, &data_dir)?;
    writeln!(
        out,
        "o365-fixbot demo: sandbox tenant at {} (Graph) and {} (Okta); state in {}\n",
        sandbox.urls.graph,
        sandbox.urls.okta,
        data_dir.display()
    )?;
    let mut buf = Vec::new();
    {
        let watch = crate::watch::Watch::new(engine.clone(), &config.watch);
        let mut console = Console::new(
            engine,
            ApprovalPolicy::from(&config.approval),
            config.console.people.clone(),
            Some(&sandbox),
            &mut buf,
        )
        .with_watch(watch);
        console.run_bytes(script.unwrap_or(STORY.as_bytes())).await;
    }
    out.write_all(&buf)?;
    writeln!(out, "\nFinal state of the sandbox tenant:")?;
    for upn in [
        "adele@contoso.com",
        "alex@fabrikam.com",
        "megan@contoso.com",
        "o'brien@contoso.com",
        "lynne@contoso.com",
    ] {
        let entra = sandbox.entra_user(upn);
        let okta_id = sandbox.okta_user_id(upn);
        let app = okta_id.as_deref().and_then(|id| sandbox.okta_app_user(id));
        writeln!(
            out,
            "  {upn:<22} Entra UPN {:<24} ImmutableID {:<26} Okta app ImmutableID {}",
            entra
                .as_ref()
                .map(|u| u.user_principal_name.as_str())
                .unwrap_or("<missing>"),
            entra
                .as_ref()
                .and_then(|u| u.on_premises_immutable_id.as_deref())
                .unwrap_or("<none>"),
            app.as_ref()
                .and_then(|a| a.immutable_id())
                .unwrap_or("<not assigned>"),
        )?;
    }
    writeln!(
        out,
        "  Okta provisioning: {}",
        crate::pipeline::capabilities::describe(&sandbox.provisioning_capabilities())
    )?;
    writeln!(
        out,
        "  Users deprovisioned in Office 365: {}",
        sandbox.deprovisions().len()
    )?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
