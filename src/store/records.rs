//! The step journal as the engine reads it: each record's verdict (`ok`, `refused`, `unknown`)
//! and what the call answered, beside the intent rows `journal_intent` writes before a call.

use super::{audit, now_ms, parse_json, Store};
use rusqlite::{params, OptionalExtension};
use serde_json::Value;

/// One journal row with its outcome and result.
#[derive(Debug, Clone)]
pub struct StepRow {
    pub id: i64,
    pub step: String,
    pub api: String,
    pub intended: Value,
    pub intent_at_ms: i64,
    /// `ok`, `refused`, `unknown`; an older version's `failed`; `None` while in flight.
    pub outcome: Option<String>,
    pub error_code: Option<String>,
    pub request_id: Option<String>,
    pub result: Value,
}

impl Store {
    /// Records a write's outcome: its verdict, the service's error code and request id, and the
    /// part of its answer later decisions need.
    pub fn journal_verdict(
        &self,
        entry: i64,
        verdict: &str,
        error_code: Option<&str>,
        request_id: Option<&str>,
        result: &Value,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        self.tx(|c| {
            c.execute(
                "UPDATE journal SET outcome = ?1, error_code = ?2, request_id = ?3, outcome_at_ms = ?4,
                        result_json = ?5
                 WHERE id = ?6",
                params![verdict, error_code, request_id, now, result.to_string(), entry],
            )?;
            let run: Option<String> = c
                .query_row("SELECT run_id FROM journal WHERE id = ?1", params![entry], |r| r.get(0))
                .optional()?;
            audit::append(
                c,
                run.as_deref(),
                "write-outcome",
                None,
                &serde_json::json!({"journal": entry, "outcome": verdict, "error_code": error_code,
                                    "request_id": request_id}),
            )
        })
    }

    /// Records a read or a marker, with its outcome, in one row: nothing to make durable first,
    /// since a read that was never recorded is simply made again.
    #[allow(clippy::too_many_arguments)]
    pub fn journal_check(
        &self,
        run_id: &str,
        step: &str,
        api: &str,
        object: &str,
        verdict: &str,
        error_code: Option<&str>,
        request_id: Option<&str>,
        result: &Value,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        self.tx(|c| {
            c.execute(
                "INSERT INTO journal (run_id, step, api, object, before_json, intended_json, intent_at_ms,
                                      outcome, error_code, request_id, outcome_at_ms, result_json)
                 VALUES (?1, ?2, ?3, ?4, 'null', 'null', ?5, ?6, ?7, ?8, ?5, ?9)",
                params![run_id, step, api, object, now, verdict, error_code, request_id, result.to_string()],
            )?;
            Ok(())
        })
    }

    /// Every row of a run's journal, oldest first, with results.
    pub fn journal_rows(&self, run_id: &str) -> anyhow::Result<Vec<StepRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, step, api, intended_json, intent_at_ms, outcome, error_code, request_id,
                        result_json
                 FROM journal WHERE run_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map(params![run_id], |r| {
                Ok(StepRow {
                    id: r.get(0)?,
                    step: r.get(1)?,
                    api: r.get(2)?,
                    intended: parse_json(r.get::<_, String>(3)?),
                    intent_at_ms: r.get(4)?,
                    outcome: r.get(5)?,
                    error_code: r.get(6)?,
                    request_id: r.get(7)?,
                    result: r
                        .get::<_, Option<String>>(8)?
                        .map(parse_json)
                        .unwrap_or(Value::Null),
                })
            })?;
            rows.collect()
        })
    }
}
