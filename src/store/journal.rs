//! The write-ahead step journal: an intent row committed before each write, then its verdict
//! (`ok`, `refused`, `unknown`) and what the call answered; the reads recovery and the engine use.

use super::{audit, now_ms, parse_json, JournalEntry, Store};
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
    pub client_request_id: Option<String>,
    pub result: Value,
}

impl Store {
    /// Records what is about to be written. Committed (and synced) before the API call is made.
    pub fn journal_intent(
        &self,
        run_id: &str,
        step: &str,
        api: &str,
        object: &str,
        before: &Value,
        intended: &Value,
    ) -> anyhow::Result<i64> {
        self.journal_intent_traced(run_id, step, api, object, before, intended, None)
    }

    /// [`Store::journal_intent`] with the id the request will carry (`client-request-id`), so a
    /// write whose answer never arrives can still be traced by the service.
    #[allow(clippy::too_many_arguments)]
    pub fn journal_intent_traced(
        &self,
        run_id: &str,
        step: &str,
        api: &str,
        object: &str,
        before: &Value,
        intended: &Value,
        client_request_id: Option<&str>,
    ) -> anyhow::Result<i64> {
        let now = now_ms();
        self.tx(|c| {
            c.execute(
                "INSERT INTO journal (run_id, step, api, object, before_json, intended_json, intent_at_ms,
                                      client_request_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![run_id, step, api, object, before.to_string(), intended.to_string(), now,
                        client_request_id],
            )?;
            let id = c.last_insert_rowid();
            let mut data = serde_json::json!({"journal": id, "step": step, "api": api, "object": object,
                                              "before": before, "intended": intended});
            if let Some(crid) = client_request_id {
                data["client_request_id"] = Value::String(crid.to_owned());
            }
            audit::append(c, Some(run_id), "write-intent", None, &data)?;
            Ok(id)
        })
    }

    pub fn journal_outcome(
        &self,
        entry: i64,
        ok: bool,
        error_code: Option<&str>,
        request_id: Option<&str>,
    ) -> anyhow::Result<()> {
        let outcome = if ok { "ok" } else { "failed" };
        self.journal_verdict(entry, outcome, error_code, request_id, &Value::Null)
    }

    pub fn journal(&self, run_id: &str) -> anyhow::Result<Vec<JournalEntry>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, run_id, step, api, object, before_json, intended_json, intent_at_ms,
                        outcome, error_code, request_id, client_request_id
                 FROM journal WHERE run_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map(params![run_id], |r| {
                Ok(JournalEntry {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    step: r.get(2)?,
                    api: r.get(3)?,
                    object: r.get(4)?,
                    before: parse_json(r.get::<_, String>(5)?),
                    intended: parse_json(r.get::<_, String>(6)?),
                    intent_at_ms: r.get(7)?,
                    outcome: r.get(8)?,
                    error_code: r.get(9)?,
                    request_id: r.get(10)?,
                    client_request_id: r.get(11)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Marks a dead process's unrecorded outcomes as `unknown`; recovery settles them by
    /// re-sending the write or its inverse, journalled as new entries. Returns how many.
    pub fn journal_mark_unknown(&self, run_id: &str) -> anyhow::Result<usize> {
        let now = now_ms();
        self.tx(|c| {
            let n = c.execute(
                "UPDATE journal SET outcome = 'unknown', error_code = 'process-died', outcome_at_ms = ?1
                 WHERE run_id = ?2 AND outcome IS NULL",
                params![now, run_id],
            )?;
            if n > 0 {
                audit::append(c, Some(run_id), "write-outcome-unknown", None, &serde_json::json!({"entries": n}))?;
            }
            Ok(n)
        })
    }

    /// Journal entries whose outcome was never recorded.
    pub fn journal_unsettled(&self) -> anyhow::Result<usize> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM journal WHERE outcome IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n as usize)
    }

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
                        result_json, client_request_id
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
                    client_request_id: r.get(9)?,
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

#[cfg(test)]
mod tests {
    use crate::store::tests::temp_store;
    use serde_json::json;

    #[test]
    fn journal_intent_then_outcome() {
        let (s, _d) = temp_store();
        let id = s
            .journal_intent(
                "r1",
                "1",
                "graph.update_user",
                "obj",
                &json!({"a":1}),
                &json!({"a":2}),
            )
            .unwrap();
        let j = s.journal("r1").unwrap();
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].outcome, None);
        s.journal_outcome(id, true, None, Some("req-1")).unwrap();
        let j = s.journal("r1").unwrap();
        assert_eq!(j[0].outcome.as_deref(), Some("ok"));
        assert_eq!(j[0].request_id.as_deref(), Some("req-1"));
        assert_eq!(j[0].intended, json!({"a":2}));
        assert_eq!(j[0].client_request_id, None);
    }

    #[test]
    fn both_request_ids_are_kept() {
        let (s, _d) = temp_store();
        let crid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let id = s
            .journal_intent_traced(
                "r1",
                "1",
                "graph.update_user",
                "obj",
                &json!(null),
                &json!({"a":2}),
                Some(crid),
            )
            .unwrap();
        // Durable before any answer: a lost answer still leaves the id to trace.
        let j = s.journal("r1").unwrap();
        assert_eq!(j[0].client_request_id.as_deref(), Some(crid));
        assert_eq!(j[0].request_id, None);
        s.journal_verdict(id, "ok", None, Some("graph-req-1"), &json!(null))
            .unwrap();
        let rows = s.journal_rows("r1").unwrap();
        assert_eq!(rows[0].client_request_id.as_deref(), Some(crid));
        assert_eq!(rows[0].request_id.as_deref(), Some("graph-req-1"));
    }
}
