//! `/fix-status`: the runs awaiting approval, running and recent, and the watch's open findings;
//! or one run with its journal; a bulk repair is one line with its counts (its users are not
//! listed one by one), or its rows on request. All from the store, so it survives restarts.

use super::bot::Bot;
use crate::chat::batch_render::{status_line, status_rows};
use crate::chat::render::{journal_line, sanitize};
use crate::domain::RunState;
use std::collections::HashSet;

/// Recent batches shown by `/fix-status`.
const RECENT_BATCHES: u32 = 5;
/// A batch's rows shown by `/fix-status run:<batch>` (the outcome CSV in its thread has all).
const BATCH_ROWS: usize = 25;

pub(super) fn short_id(id: &str) -> &str {
    &id[..8.min(id.len())]
}

impl Bot {
    pub(super) fn status(&self, run: Option<&str>) -> String {
        match run {
            Some(r) => self.status_of(r),
            None => self.status_all(),
        }
    }

    /// Everything from the store, so it survives restarts.
    fn status_all(&self) -> String {
        let store = self.engine.store();
        let ttl_ms = self.policy.ttl.as_millis() as i64;
        let mut out = String::new();
        // A batch is one line; its users' runs are left out of the lists below.
        let mut members = HashSet::new();
        let batches = store.recent_batches(RECENT_BATCHES).unwrap_or_else(|e| {
            tracing::error!(error = %format!("{e:#}"), "could not read recent batches");
            Vec::new()
        });
        if !batches.is_empty() {
            out.push_str("**Bulk repairs**\n");
        }
        for b in &batches {
            if let Ok(p) = self.engine.batch_progress(b) {
                out.push_str(&format!("• {}\n", status_line(b, &p)));
            }
            members.extend(b.members.iter().cloned());
        }
        match store.runs_in_state(RunState::AwaitingApproval) {
            Ok(rows) => {
                let rows: Vec<_> = rows
                    .into_iter()
                    .filter(|r| !members.contains(&r.id))
                    .collect();
                out.push_str(&format!("**Awaiting approval ({})**\n", rows.len()));
                for r in rows.iter().take(10) {
                    out.push_str(&format!(
                        "• `{}` {} · by {} · expires <t:{}:R>\n",
                        short_id(&r.id),
                        sanitize(&r.upn, 100),
                        sanitize(&r.requester_name, 64),
                        (r.created_at_ms + ttl_ms + 999) / 1000
                    ));
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not read runs awaiting approval");
                out.push_str("(runs awaiting approval could not be read)\n");
            }
        }
        let running: anyhow::Result<Vec<_>> = [RunState::Approved, RunState::Running]
            .into_iter()
            .map(|s| store.runs_in_state(s))
            .collect::<anyhow::Result<Vec<_>>>()
            .map(|v| v.into_iter().flatten().collect());
        match running {
            Ok(rows) => {
                let rows: Vec<_> = rows
                    .into_iter()
                    .filter(|r| !members.contains(&r.id))
                    .collect();
                out.push_str(&format!("**Running ({})**\n", rows.len()));
                for r in rows.iter().take(10) {
                    let by = store
                        .approvers(&r.id)
                        .map(|v| v.into_iter().map(|(_, n)| n).collect::<Vec<_>>())
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "• `{}` {} · by {} · approved by {} · since <t:{}:R>\n",
                        short_id(&r.id),
                        sanitize(&r.upn, 100),
                        sanitize(&r.requester_name, 64),
                        sanitize(&by.join(", "), 128),
                        r.updated_at_ms / 1000
                    ));
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not read running runs");
                out.push_str("(running runs could not be read)\n");
            }
        }
        match store.recent_runs(10 + members.len() as u32) {
            Ok(rows) => {
                out.push_str("**Recent**\n");
                for r in rows
                    .into_iter()
                    .filter(|r| !members.contains(&r.id))
                    .take(10)
                {
                    out.push_str(&format!(
                        "• `{}` {} · {} · by {}\n",
                        short_id(&r.id),
                        sanitize(&r.upn, 100),
                        r.state.as_str().replace('_', " "),
                        sanitize(&r.requester_name, 64)
                    ));
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not read recent runs");
                out.push_str("(recent runs could not be read)\n");
            }
        }
        out.push_str(&self.open_findings());
        out
    }

    /// The watch's open findings: users whose provisioning failed and who still need a person.
    fn open_findings(&self) -> String {
        match self.engine.store().watch_open_findings() {
            Ok(rows) => {
                let mut out = format!("**Open watch findings ({})**\n", rows.len());
                for f in rows.iter().take(10) {
                    out.push_str(&format!(
                        "• {} · {} · since <t:{}:R> · fix: {}\n",
                        sanitize(&f.upn, 100),
                        f.verdict,
                        f.opened_at_ms / 1000,
                        sanitize(&f.fix, 100)
                    ));
                }
                if rows.len() > 10 {
                    out.push_str(&format!("… and {} more\n", rows.len() - 10));
                }
                out
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not read the watch findings");
                "(the watch findings could not be read)\n".into()
            }
        }
    }

    fn status_of(&self, run: &str) -> String {
        let key = run.trim().to_ascii_lowercase();
        if key.len() < 4 || !key.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return "⛔ give a run id, or at least its first 4 characters.".into();
        }
        if let Some(text) = self.status_of_batch(&key) {
            return text;
        }
        let rows = match self.engine.store().runs_by_prefix(&key) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "could not read runs");
                return "⚠ could not read the store; try again.".into();
            }
        };
        let row = match rows.as_slice() {
            [one] => one,
            [] => return format!("no run starts with `{key}`."),
            many => {
                return format!(
                    "{} runs start with `{key}`; give more characters.",
                    many.len()
                )
            }
        };
        let mut out = format!(
            "**Run `{}`** {} · {} · requested by {}\n",
            short_id(&row.id),
            sanitize(&row.upn, 100),
            row.state.as_str().replace('_', " "),
            sanitize(&row.requester_name, 64)
        );
        if let Ok(by) = self.engine.store().approvers(&row.id) {
            if !by.is_empty() {
                let names: Vec<String> = by.into_iter().map(|(_, n)| n).collect();
                out.push_str(&format!(
                    "Approved by {}\n",
                    sanitize(&names.join(", "), 256)
                ));
            }
        }
        match self.engine.store().journal(&row.id) {
            Ok(entries) if entries.is_empty() => out.push_str("No writes were made.\n"),
            Ok(entries) => {
                for j in entries.iter().take(30) {
                    out.push_str(&format!("• {}\n", journal_line(j)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read the journal");
                out.push_str("(the journal could not be read)\n");
            }
        }
        out
    }

    /// A batch's line and its rows; `None` when no batch starts with `key`.
    fn status_of_batch(&self, key: &str) -> Option<String> {
        let rows = self.engine.store().batches_by_prefix(key).ok()?;
        let row = match rows.as_slice() {
            [] => return None,
            [one] => one,
            many => {
                return Some(format!(
                    "{} batches start with `{key}`; give more characters.",
                    many.len()
                ))
            }
        };
        let s = match self.engine.batch_summary(row, 0, std::time::Duration::ZERO) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not read a batch");
                return Some("⚠ could not read the store; try again.".into());
            }
        };
        let mut out = format!("**{}**\n", status_line(row, &s.progress));
        let lines = status_rows(&s);
        for l in lines.iter().take(BATCH_ROWS) {
            out.push_str(&format!("• {l}\n"));
        }
        if lines.len() > BATCH_ROWS {
            out.push_str(&format!(
                "… and {} more (every user is in the outcome CSV in the batch's thread)\n",
                lines.len() - BATCH_ROWS
            ));
        }
        Some(super::post::fit(&out))
    }
}
