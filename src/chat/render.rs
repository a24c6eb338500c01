//! Messages people read: the plan, each step, the outcome. Plain text that is safe to post in
//! chat: user-supplied text is length-capped and cannot break out of code formatting or ping.

use crate::approval::Ignored;
use crate::directory::okta::CarryOver;
use crate::domain::strip_invisible;
use crate::pipeline::plan::NewIdSource;
use crate::pipeline::{Phase, Plan, RunOutcome, RunSummary, StepKind, StepOutcome, StepReport};
use crate::store::JournalEntry;
use serde_json::Value;
use std::time::Duration;

/// Text from a person, made safe to echo: no mentions, no code-fence escapes, no invisible
/// characters that reorder or hide text, no masked links, bounded length.
pub fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out: String = strip_invisible(text)
        .chars()
        .map(|c| match c {
            '`' => '\'',
            c => c,
        })
        .collect::<String>();
    out = defuse_mentions(&out);
    // `[text](url)` shows `text` while linking elsewhere; a space between the brackets and the
    // parenthesis makes Discord show both literally. Invisible characters are already gone, so
    // none can sit between `]` and `(` to slip past this.
    out = out.replace("](", "] (");
    if out.chars().count() > max_chars {
        out = out.chars().take(max_chars).collect::<String>() + "…";
    }
    out
}

/// `@everyone`, `@here` and `<@…>` (users, `<@!…>`, roles `<@&…>`) with the `@` swapped for a
/// full-width `＠`, which Discord neither pings nor renders as a mention. A zero-width space would
/// do the same but is itself an invisible character; other `@`s (e-mail addresses, UPNs) stay.
fn defuse_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        let rest = &text[i + c.len_utf8()..];
        let starts = |word: &str| {
            rest.get(..word.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(word))
        };
        let mention = c == '@' && (prev == Some('<') || starts("everyone") || starts("here"));
        out.push(if mention { '\u{FF20}' } else { c });
        prev = Some(c);
    }
    out
}

pub fn plan_message(plan: &Plan, ttl: Duration) -> String {
    let mut s = format!(
        "📝 Repair plan for {} (run {}) — react ✅ to approve, ❌ to reject\n",
        plan.upn,
        plan.run.short()
    );
    let domain_kind = if plan.federated {
        "federated"
    } else {
        "managed"
    };
    s.push_str(&format!(
        "   Entra: object {}, {} ({} domain {}), ImmutableID: {}\n",
        plan.entra_id,
        plan.upn,
        domain_kind,
        plan.upn.domain(),
        plan.entra_immutable_id_before
            .as_deref()
            .unwrap_or("<none>")
    ));
    s.push_str(&format!(
        "   Okta:  {} ({}), assigned directly to Microsoft Office 365, app ImmutableID {}\n",
        plan.okta_user_id,
        plan.okta_login,
        plan.okta_immutable_id_before().unwrap_or("<none>")
    ));
    let source = match &plan.new_id_source {
        NewIdSource::Generated => "generated, unique in the tenant".to_owned(),
        NewIdSource::GivenByRequester => "as given, unique in the tenant".to_owned(),
        NewIdSource::OktaValue => "the value Okta already sends, unique in the tenant".to_owned(),
        NewIdSource::OktaMapping { expression, .. } => {
            format!("the value Okta's mapping `{expression}` sends")
        }
    };
    s.push_str(&format!(
        "   New ImmutableID: {} ({source})\n",
        plan.new_immutable_id
    ));
    if !plan.mode_why.is_empty() {
        s.push_str(&format!("   Mode: {}\n", plan.mode_why));
    }
    if let Some(c) = &plan.carry_over {
        s.push_str(&carry_over_lines(c));
    }
    let steps: Vec<String> = StepKind::ALL
        .iter()
        .filter(|k| plan.federated || !matches!(k, StepKind::UpnToTemporary | StepKind::UpnBack))
        .filter(|k| plan.mode == crate::pipeline::RepairMode::Full || k.number() <= 4)
        .map(|k| match k {
            StepKind::UpnToTemporary => format!(
                "UPN→{}",
                plan.temporary_upn
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
            k => k.title().to_owned(),
        })
        .collect();
    s.push_str(&format!("   Steps: {}\n", steps.join(" → ")));
    for note in &plan.notes {
        s.push_str(&format!("   Note: {note}\n"));
    }
    if let Some(reason) = &plan.reason {
        s.push_str(&format!("   Reason: {}\n", sanitize(reason, 300)));
    }
    s.push_str(&format!(
        "   Expires in {} min. Requested by {}.",
        ttl.as_secs().div_ceil(60),
        sanitize(&plan.requester.name, 64)
    ));
    s
}

/// Longest rendering of one carried value: an app profile holds what an admin typed.
const MAX_VALUE: usize = 200;

/// What the reassignment carries over (licenses and roles, as Okta holds them) and what it leaves
/// to Okta.
fn carry_over_lines(c: &CarryOver) -> String {
    let mut s = String::new();
    if c.entitlements.is_empty() {
        s.push_str("   Licenses and roles: Okta's app profile defines none, so Okta does not manage them and the reassignment cannot strip them\n");
    } else {
        let held: Vec<String> = c
            .entitlements
            .iter()
            .map(|(k, v)| {
                let shown = match v {
                    Value::Null => "<none>".to_owned(),
                    Value::Array(a) if a.is_empty() => "<none>".to_owned(),
                    Value::Array(a) => a
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| x.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    Value::String(x) => x.clone(),
                    other => other.to_string(),
                };
                format!("{k}: {}", sanitize(&shown, MAX_VALUE))
            })
            .collect();
        s.push_str(&format!(
            "   Carried over to the reassignment: {}\n",
            held.join("; ")
        ));
    }
    let mut left = Vec::new();
    if !c.mapped.is_empty() {
        left.push(format!("{} (mapped)", c.mapped.join(", ")));
    }
    if !c.read_only.is_empty() {
        left.push(format!("{} (read-only)", c.read_only.join(", ")));
    }
    if !left.is_empty() {
        s.push_str(&format!(
            "   Left to Okta: {}\n",
            sanitize(&left.join("; "), MAX_VALUE)
        ));
    }
    s
}

pub fn step_line(r: &StepReport) -> String {
    let n = r.step.number();
    let ids = if r.request_ids.is_empty() {
        String::new()
    } else {
        format!(" · request-id {}", r.request_ids.join(", "))
    };
    let ms = r.duration.as_millis();
    let prefix = match r.phase {
        Phase::Forward => String::new(),
        Phase::Compensation => "↩ undo ".into(),
        Phase::RollForward => "⏩ roll forward ".into(),
    };
    match &r.outcome {
        StepOutcome::Done => format!(
            "✅ {prefix}{n}/9 {} · {} → {} · {ms} ms{ids}",
            r.step.title(),
            r.before,
            r.after
        ),
        StepOutcome::Skipped(why) => format!("⏭ {n}/9 {} · skipped: {why}", r.step.title()),
        StepOutcome::Lagging(note) => {
            format!(
                "⏳ {prefix}{n}/9 {} · {note} · {ms} ms{ids}",
                r.step.title()
            )
        }
        StepOutcome::Failed { code, message } => format!(
            "❌ {prefix}{n}/9 {} failed · {}{message} · {ms} ms{ids}",
            r.step.title(),
            code.as_deref()
                .map(|c| format!("[{c}] "))
                .unwrap_or_default()
        ),
        StepOutcome::NeedsHuman(what) => format!("🚨 {prefix}{n}/9 {} · {what}", r.step.title()),
    }
}

/// The summary's last line. The engine's message already says what each system holds and how
/// provisioning was left (computed once, from the journal and the final reads); this only adds
/// the outcome's mark, the time, and the audit head (so the chat keeps a copy of it that
/// `audit verify --expect-head` can check the log against).
pub fn summary_line(s: &RunSummary) -> String {
    let secs = s.duration.as_secs_f64();
    let line = match s.outcome {
        RunOutcome::Repaired | RunOutcome::RepairedAfterRollForward => {
            format!("🎉 done in {secs:.1} s: {}", s.message)
        }
        RunOutcome::RolledBack => format!("↩ failed and rolled back in {secs:.1} s: {}", s.message),
        RunOutcome::Diverged => format!("⚠ stopped in {secs:.1} s: {}", s.message),
        RunOutcome::NeedsAttention => format!("🚨 {}", s.message),
        RunOutcome::Stale => format!("🔁 {}", s.message),
        RunOutcome::NotExecuted => format!("⛔ {}", s.message),
        RunOutcome::Parked => format!("⏸ {}", s.message),
    };
    match &s.audit_head {
        Some(head) => format!("{line} · audit head {head}"),
        None => line,
    }
}

/// Where a plan stands, shown under the plan message and updated as it moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanState {
    /// `expires_unix`: seconds since the epoch (rendered by Discord as a relative time).
    Awaiting {
        expires_unix: i64,
        have: u32,
        need: u32,
    },
    Running {
        approved_by: Vec<String>,
    },
    Finished {
        outcome: RunOutcome,
        approved_by: Vec<String>,
    },
    Rejected {
        by: String,
    },
    Expired,
    Cancelled {
        by: String,
    },
    /// The run could not be set up (e.g. the thread could not be created).
    Abandoned {
        why: String,
    },
}

/// The one-line state shown under a plan. Names are sanitized here.
pub fn state_line(state: &PlanState) -> String {
    let names = |v: &[String]| {
        v.iter()
            .map(|n| sanitize(n, 64))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let body = match state {
        PlanState::Awaiting {
            expires_unix,
            have,
            need,
        } => format!("⏳ awaiting approval ({have}/{need}) · expires <t:{expires_unix}:R>"),
        PlanState::Running { approved_by } => {
            format!("▶ approved by {} — running", names(approved_by))
        }
        PlanState::Finished {
            outcome,
            approved_by,
        } => {
            let what = match outcome {
                RunOutcome::Repaired => "🎉 done",
                RunOutcome::RepairedAfterRollForward => "🎉 done after rolling forward",
                RunOutcome::RolledBack => "↩ failed and rolled back",
                RunOutcome::Diverged => "⚠ failed; Entra and Okta differ (see thread)",
                RunOutcome::NeedsAttention => "🚨 failed; a human must act (see thread)",
                RunOutcome::Stale => {
                    "🔁 stale: the user changed since the plan; run the command again"
                }
                RunOutcome::NotExecuted => "⛔ not executed",
                RunOutcome::Parked => "⏸ parked while the bot restarts",
            };
            format!("{what} · approved by {}", names(approved_by))
        }
        PlanState::Rejected { by } => format!("❌ rejected by {}", sanitize(by, 64)),
        PlanState::Expired => "⌛ expired before approval; nothing was changed".to_owned(),
        PlanState::Cancelled { by } => format!("🛑 cancelled by {}", sanitize(by, 64)),
        PlanState::Abandoned { why } => format!("⛔ abandoned: {}", sanitize(why, 200)),
    };
    format!("State: {body}")
}

pub fn ignored_line(who: &str, reason: Ignored) -> String {
    format!(
        "ℹ {}'s reaction does not count: {}.",
        sanitize(who, 64),
        reason.explain()
    )
}

/// One journalled write for `/fix-status <run>`: step, API, outcome, and both request ids, the
/// one the bot sent (`client-request-id`, journalled before the call) and the service's own
/// (`request-id`, `X-Okta-Request-Id`, from its answer), so either side can be traced.
pub fn journal_line(j: &JournalEntry) -> String {
    let id = |label: &str, v: &Option<String>| {
        v.as_deref()
            .map(|r| format!(" · {label} {}", sanitize(r, 64)))
            .unwrap_or_default()
    };
    format!(
        "step {} · {} · {}{}{}{}",
        sanitize(&j.step, 16),
        sanitize(&j.api, 64),
        sanitize(j.outcome.as_deref().unwrap_or("no outcome recorded"), 64),
        j.error_code
            .as_deref()
            .map(|c| format!(" [{}]", sanitize(c, 64)))
            .unwrap_or_default(),
        id("client-request-id", &j.client_request_id),
        id("request-id", &j.request_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_defuses_mentions_and_code() {
        let s = sanitize("hi @everyone ```x``` <@123>", 100);
        assert!(!s.contains("@everyone"));
        assert!(!s.contains('`'));
        assert!(!s.contains("<@1"));
        assert_eq!(sanitize(&"a".repeat(5000), 10).chars().count(), 11);
    }

    #[test]
    fn the_summary_line_ends_with_the_audit_head_when_there_is_one() {
        let mut s = RunSummary {
            run: crate::domain::RunId::new(),
            upn: "a@contoso.com".into(),
            outcome: RunOutcome::Repaired,
            entra_immutable_id: None,
            okta_immutable_id: None,
            provisioning: crate::pipeline::ProvisioningState::Untouched,
            failed_step: None,
            message: "Repaired".into(),
            duration: Duration::from_millis(1500),
            audit_head: None,
        };
        assert_eq!(summary_line(&s), "🎉 done in 1.5 s: Repaired");
        s.audit_head = Some("7:0123456789abcdef".into());
        assert_eq!(
            summary_line(&s),
            "🎉 done in 1.5 s: Repaired · audit head 7:0123456789abcdef"
        );
    }

    #[test]
    fn sanitize_strips_format_characters_so_text_cannot_be_reordered() {
        let s = sanitize("INC-1 \u{202E}evitucexe yb devorppa\u{202C}", 300);
        assert_eq!(s, "INC-1 evitucexe yb devorppa");
        let every = "a\u{00AD}b\u{200B}\u{200D}\u{2066}c\u{2069}\u{2060}\u{FEFF}\u{E0041}d";
        assert_eq!(sanitize(every, 100), "abcd");
        assert!(!sanitize("x @everyone <@1>", 100)
            .chars()
            .any(crate::domain::is_format_char));
    }

    #[test]
    fn sanitize_defuses_masked_links() {
        let s = sanitize("see [the runbook](https://evil.example/x) now", 300);
        assert!(!s.contains("]("), "{s}");
        assert!(
            s.contains("https://evil.example/x"),
            "the real target stays visible: {s}"
        );
        // An invisible character between `]` and `(` does not smuggle the link through.
        assert!(!sanitize("[a]\u{200B}(https://e.example)", 100).contains("]("));
    }

    #[test]
    fn sanitize_keeps_email_addresses_readable() {
        assert_eq!(sanitize("adele@contoso.com", 100), "adele@contoso.com");
        assert_eq!(
            sanitize("@Here and @everyone", 100),
            "＠Here and ＠everyone"
        );
    }
}
