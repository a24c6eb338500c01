//! What people read about a bulk repair: the plan (counts, the first rows, the full table as
//! CSV), one progress line with a bar and an ETA, and the summary with every user's outcome.

use super::render::sanitize;
use crate::domain::RunState;
use crate::pipeline::batch::{BatchPlan, BatchProgress, BatchSummary};
use crate::pipeline::RepairMode;
use crate::store::BatchRow;
use std::time::Duration;

/// Rows of the plan shown in the message itself; the CSV holds them all.
pub const INLINE_ROWS: usize = 10;

pub fn plan_message(b: &BatchPlan, ttl: Duration) -> String {
    let full = b
        .plans
        .iter()
        .filter(|p| p.mode == RepairMode::Full)
        .count();
    let entra_only = b.plans.len() - full;
    let mut s = format!(
        "📝 Bulk repair plan (batch {}) for {} users — react ✅ to approve all of it, ❌ to reject\n",
        b.id.short(),
        b.plans.len() + b.refused.len()
    );
    s.push_str(&format!(
        "   {} full repair · {} Entra-only · {} refused\n",
        full,
        entra_only,
        b.refused.len()
    ));
    if full > 0 {
        s.push_str(
            "   Okta provisioning is paused once for the batch, from its first user to its last.\n",
        );
    }
    for p in b.plans.iter().take(INLINE_ROWS) {
        let mode = match p.mode {
            RepairMode::Full => "full",
            RepairMode::EntraOnly => "Entra-only",
        };
        s.push_str(&format!(
            "   • {} — {mode}, new ImmutableID {}\n",
            p.upn, p.new_immutable_id
        ));
    }
    if b.plans.len() > INLINE_ROWS {
        s.push_str(&format!(
            "   … and {} more (all rows in the CSV)\n",
            b.plans.len() - INLINE_ROWS
        ));
    }
    for r in b.refused.iter().take(INLINE_ROWS) {
        s.push_str(&format!(
            "   ⛔ {} — {}\n",
            sanitize(&r.upn, 120),
            sanitize(&r.why, 200)
        ));
    }
    if b.refused.len() > INLINE_ROWS {
        s.push_str(&format!(
            "   ⛔ … and {} more refused (all in the CSV)\n",
            b.refused.len() - INLINE_ROWS
        ));
    }
    if let Some(reason) = &b.reason {
        s.push_str(&format!("   Reason: {}\n", sanitize(reason, 300)));
    }
    s.push_str(&format!(
        "   Expires in {} min. Requested by {}.",
        ttl.as_secs().div_ceil(60),
        sanitize(&b.requester.name, 64)
    ));
    s
}

/// `37/100 ▓▓▓▓░░░░░░ ✅ 35 · ↩ 1 · ⚠ 1 · ⏭ 0 · ETA 40 s`
pub fn progress_line(p: &BatchProgress, elapsed: Duration) -> String {
    const WIDTH: usize = 20;
    let filled = (p.finished * WIDTH).checked_div(p.total).unwrap_or(WIDTH);
    let bar: String = "▓".repeat(filled) + &"░".repeat(WIDTH - filled);
    let eta = if p.finished == 0 || p.finished >= p.total {
        String::new()
    } else {
        let per = elapsed.as_secs_f64() / p.finished as f64;
        format!(" · ETA {:.0} s", per * (p.total - p.finished) as f64)
    };
    format!(
        "{}/{} {bar} ✅ {} · ↩ {} · ⚠ {} · ⏭ {}{eta}",
        p.finished, p.total, p.repaired, p.rolled_back, p.attention, p.skipped
    )
}

pub fn summary_message(s: &BatchSummary) -> String {
    let p = &s.progress;
    let head = if p.attention > 0 {
        "⚠ bulk repair finished — some users need a person"
    } else if p.repaired == p.total {
        "🎉 bulk repair done"
    } else {
        "bulk repair finished"
    };
    let mut out = format!(
        "{head} in {:.1} s: ✅ {} repaired · ↩ {} rolled back · ⚠ {} need attention · ⏭ {} skipped or cancelled · ⛔ {} refused at plan time. Provisioning was paused {:.1} s.\n",
        s.duration_ms as f64 / 1000.0,
        p.repaired,
        p.rolled_back,
        p.attention,
        p.skipped,
        s.refused.len(),
        s.paused_ms as f64 / 1000.0,
    );
    for r in s
        .results
        .iter()
        .filter(|r| r.state != RunState::Succeeded)
        .take(INLINE_ROWS)
    {
        out.push_str(&format!(
            "   • {} — {}: {}\n",
            r.upn,
            r.state.as_str(),
            sanitize(&r.message, 240)
        ));
    }
    out.push_str("   Every user's outcome is in the CSV.");
    out
}

/// One line for `/fix-status`: the batch and its counts, read from its users' runs.
pub fn status_line(row: &BatchRow, p: &BatchProgress) -> String {
    format!(
        "batch {} {} · {} users: ✅ {} · ↩ {} · ⚠ {} · ⏭ {} · ⛔ {} refused (by {})",
        row.id.get(..8).unwrap_or(&row.id),
        row.state.as_str(),
        p.total,
        p.repaired,
        p.rolled_back,
        p.attention,
        p.skipped,
        row.refused.len(),
        sanitize(&row.requester_name, 64)
    )
}

/// The batch's rows for `/fix-status <batch>`: every user, its state and the first words of its
/// outcome; then the users refused at plan time.
pub fn status_rows(s: &BatchSummary) -> Vec<String> {
    let mut out: Vec<String> = s
        .results
        .iter()
        .map(|r| {
            format!(
                "{} {} {} — {}",
                r.run.get(..8).unwrap_or(&r.run),
                sanitize(&r.upn, 100),
                r.state.as_str(),
                sanitize(&r.message, 160)
            )
        })
        .collect();
    out.extend(
        s.refused
            .iter()
            .map(|r| format!("⛔ {} — {}", sanitize(&r.upn, 100), sanitize(&r.why, 160))),
    );
    out
}

/// RFC 4180 field: quoted when it holds a comma, quote or line break; a leading `=+-@` is
/// prefixed with `'` so a spreadsheet does not run it as a formula.
fn field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn row(fields: &[&str]) -> String {
    fields
        .iter()
        .map(|f| field(f))
        .collect::<Vec<_>>()
        .join(",")
        + "\r\n"
}

pub fn plan_csv(b: &BatchPlan) -> String {
    let mut out = row(&[
        "upn",
        "verdict",
        "mode",
        "entra_immutable_id",
        "okta_immutable_id",
        "new_immutable_id",
        "why",
        "run",
    ]);
    for p in &b.plans {
        let mode = match p.mode {
            RepairMode::Full => "full",
            RepairMode::EntraOnly => "entra-only",
        };
        out.push_str(&row(&[
            p.upn.as_str(),
            "repair",
            mode,
            p.entra_immutable_id_before.as_deref().unwrap_or(""),
            p.okta_immutable_id_before().unwrap_or(""),
            p.new_immutable_id.as_str(),
            &p.mode_why,
            &p.run.to_string(),
        ]));
    }
    for r in &b.refused {
        out.push_str(&row(&[&r.upn, "refused", "", "", "", "", &r.why, ""]));
    }
    out
}

pub fn outcome_csv(s: &BatchSummary) -> String {
    let mut out = row(&[
        "upn",
        "outcome",
        "entra_immutable_id",
        "okta_immutable_id",
        "message",
        "run",
        "request_ids",
    ]);
    for r in &s.results {
        out.push_str(&row(&[
            &r.upn,
            r.state.as_str(),
            r.entra_immutable_id.as_deref().unwrap_or(""),
            r.okta_immutable_id.as_deref().unwrap_or(""),
            &r.message,
            &r.run,
            &r.request_ids.join(" "),
        ]));
    }
    for r in &s.refused {
        out.push_str(&row(&[&r.upn, "refused", "", "", &r.why, "", ""]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_counts_and_estimates() {
        let p = BatchProgress {
            total: 100,
            finished: 37,
            repaired: 35,
            rolled_back: 1,
            attention: 1,
            skipped: 0,
        };
        let line = progress_line(&p, Duration::from_secs(37));
        assert!(
            line.starts_with("37/100 ▓▓▓▓▓▓▓░░░░░░░░░░░░░ ✅ 35 · ↩ 1 · ⚠ 1"),
            "{line}"
        );
        assert!(line.ends_with("ETA 63 s"), "{line}");
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(row(&["x", "y"]), "x,y\r\n");
    }
}
