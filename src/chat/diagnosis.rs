//! A diagnosis as people read it: a plain-text table for the terminal, and a shorter,
//! sanitized version that fits one Discord message.

use super::render::sanitize;
use crate::pipeline::diagnose::{Diagnosis, Fix, IdSource};

/// Discord rejects messages over 2,000 characters.
pub const DISCORD_LIMIT: usize = 2000;

fn opt(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("—").to_owned()
}

/// The rows of the side-by-side: field, Entra, Okta. Values are raw; callers sanitize.
fn rows(d: &Diagnosis) -> Vec<(&'static str, String, String)> {
    let e = d.entra.as_ref();
    let o = d.okta.as_ref();
    let a = o.and_then(|o| o.app_user.as_ref());
    let missing = |present: bool| if present { "—" } else { "(not found)" }.to_owned();
    let ent = |f: &dyn Fn(&crate::pipeline::diagnose::EntraSide) -> String| {
        e.map_or_else(|| missing(false), f)
    };
    let app = |f: &dyn Fn(&crate::pipeline::diagnose::AppSide) -> String| {
        a.map_or_else(
            || {
                if o.is_some() {
                    "(not assigned)".to_owned()
                } else {
                    missing(false)
                }
            },
            f,
        )
    };
    vec![
        (
            "user",
            ent(&|e| e.upn.clone()),
            o.map_or_else(|| missing(false), |o| o.login.clone()),
        ),
        (
            "domain",
            ent(&|e| {
                format!(
                    "{} ({})",
                    e.domain,
                    e.authentication_type.as_deref().unwrap_or("not in tenant")
                )
            }),
            String::new(),
        ),
        (
            "status",
            ent(&|e| match e.account_enabled {
                Some(true) => "enabled".into(),
                Some(false) => "disabled".into(),
                None => "—".into(),
            }),
            o.map_or_else(|| missing(false), |o| o.status.clone()),
        ),
        (
            "ImmutableID",
            ent(&|e| opt(e.immutable_id.as_deref())),
            app(&|a| opt(a.immutable_id.as_deref())),
        ),
        (
            "ID source",
            ent(&|e| {
                if e.sync_enabled {
                    "on-premises AD (synced)".into()
                } else {
                    "cloud (not synced)".into()
                }
            }),
            // Only an app user holds a value whose source means anything.
            app(&|_| match &d.id_source {
                // Okta's articles map AD-sourced users' immutableId from the AD objectGUID,
                // which Okta exposes as externalId: name that source when the expression uses it.
                IdSource::Mapped { expression } if expression.contains("externalId") => {
                    format!("mapping `{expression}` (AD externalId)")
                }
                IdSource::Mapped { expression } => format!("mapping `{expression}`"),
                IdSource::SetByHand => "set by hand (not mapped)".into(),
            }),
        ),
        (
            "assignment",
            ent(&|e| {
                if e.roles.is_empty() {
                    "no directory roles".into()
                } else {
                    format!("roles: {}", e.roles.join(", "))
                }
            }),
            app(&|a| {
                let mut s = format!("scope {}, {}", a.scope, a.status);
                if let Some(sync) = &a.sync_state {
                    s.push_str(&format!(", sync {sync}"));
                }
                if let Some(g) = o.filter(|o| !o.granting_groups.is_empty()) {
                    s.push_str(&format!(", via {}", g.granting_groups.join(", ")));
                }
                s
            }),
        ),
        (
            "object id / externalId",
            ent(&|e| e.object_id.clone()),
            app(&|a| opt(a.external_id.as_deref())),
        ),
        (
            "licenses",
            ent(&|e| format!("{} assigned", e.assigned_licenses)),
            app(&|a| {
                if a.licenses.is_empty() {
                    "—".into()
                } else {
                    a.licenses.join(", ")
                }
            }),
        ),
    ]
}

fn fix_line(d: &Diagnosis) -> String {
    match &d.fix {
        Fix::Nothing => "nothing to do".into(),
        Fix::EntraOnly { value } => format!("Entra-only repair to Okta's value {value}"),
        Fix::Full => "the full repair (/fix-immutable-id)".into(),
        Fix::Outside => "outside the bot".into(),
    }
}

/// A plain-text table for the CLI and the console. Values from the directories are sanitized
/// too: a display name or profile value must not reorder the terminal's text.
pub fn diagnosis_text(d: &Diagnosis) -> String {
    let rows: Vec<(String, String, String)> = rows(d)
        .into_iter()
        .map(|(k, e, o)| (k.to_owned(), sanitize(&e, 120), sanitize(&o, 120)))
        .collect();
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows
        .iter()
        .map(|r| r.1.chars().count())
        .chain(std::iter::once(5))
        .max()
        .unwrap_or(5);
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    let mut out = format!("Diagnosis of {} (read-only)\n", sanitize(&d.upn, 200));
    out.push_str(&format!("{}  {}  Okta\n", pad("", w0), pad("Entra", w1)));
    for (k, e, o) in &rows {
        // Trimmed: a row with an empty Okta cell must not end in padding.
        out.push_str(format!("{}  {}  {}", pad(k, w0), pad(e, w1), o).trim_end());
        out.push('\n');
    }
    out.push_str(&format!("Verdict: {}\n", d.verdict.label()));
    out.push_str(&format!("Fix: {}\n", fix_line(d)));
    out.push_str(&format!("Why: {}", sanitize(&d.why, 600)));
    out
}

/// The same for Discord: one line per field (tables do not survive proportional fonts),
/// every value sanitized, and the whole within one message.
pub fn diagnosis_discord(d: &Diagnosis) -> String {
    let mut out = format!("🩺 Diagnosis of {} (read-only)\n", sanitize(&d.upn, 120));
    for (k, e, o) in rows(d) {
        let line = if o.is_empty() {
            format!("**{k}** Entra: {}\n", sanitize(&e, 160))
        } else {
            format!(
                "**{k}** Entra: {} · Okta: {}\n",
                sanitize(&e, 160),
                sanitize(&o, 200)
            )
        };
        out.push_str(&line);
    }
    out.push_str(&format!(
        "**Verdict:** {}\n**Fix:** {}\n{}",
        d.verdict.label(),
        sanitize(&fix_line(d), 120),
        sanitize(&d.why, 700)
    ));
    if out.chars().count() > DISCORD_LIMIT {
        out = out.chars().take(DISCORD_LIMIT - 1).collect::<String>() + "…";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::diagnose::{AppSide, EntraSide, OktaSide, Verdict};

    /// Directory values are text someone else typed: a licence name can carry a mention, a
    /// masked link or a bidi override, and be long.
    fn hostile() -> Diagnosis {
        let evil = format!(
            "@everyone [x](https://evil) \u{202E}kcab{}",
            "A".repeat(3000)
        );
        Diagnosis {
            upn: "megan@contoso.com".into(),
            entra: Some(EntraSide {
                upn: "megan@contoso.com".into(),
                object_id: evil.clone(),
                domain: "contoso.com".into(),
                authentication_type: Some("Federated".into()),
                immutable_id: Some("zHX2NueB9U6o4l2UDtkEdQ==".into()),
                sync_enabled: false,
                account_enabled: Some(true),
                assigned_licenses: 1,
                roles: vec![evil.clone()],
            }),
            okta: Some(OktaSide {
                login: evil.clone(),
                status: "ACTIVE".into(),
                app_user: Some(AppSide {
                    scope: "USER".into(),
                    status: "PROVISIONED".into(),
                    sync_state: None,
                    external_id: Some(evil.clone()),
                    immutable_id: Some(evil.clone()),
                    licenses: vec![evil.clone(); 20],
                }),
                granting_groups: vec![evil.clone()],
            }),
            id_source: IdSource::Mapped {
                expression: evil.clone(),
            },
            verdict: Verdict::Differ,
            fix: Fix::Full,
            why: evil,
        }
    }

    #[test]
    fn the_discord_version_is_one_safe_message() {
        let text = diagnosis_discord(&hostile());
        assert!(text.chars().count() <= DISCORD_LIMIT, "{}", text.len());
        assert!(!text.contains("@everyone"), "no ping");
        assert!(!text.contains("](http"), "no masked link");
        assert!(!text.contains('\u{202E}'), "no bidi override");
    }

    #[test]
    fn the_text_version_strips_invisible_characters() {
        let text = diagnosis_text(&hostile());
        assert!(!text.contains('\u{202E}'));
        assert!(text.contains("Verdict: Entra and Okta hold different ImmutableIDs"));
    }
}
