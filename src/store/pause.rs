//! The shared provisioning pause of an Okta app: the snapshot taken before it, the runs holding
//! it, and the restoring mark that closes it to joins.

use super::{now_ms, parse_json, PauseRow, Store};
use rusqlite::{params, OptionalExtension};
use serde_json::Value;

impl Store {
    pub fn pause(&self, app_id: &str) -> anyhow::Result<Option<PauseRow>> {
        self.with(|c| {
            let row = c
                .query_row(
                    "SELECT snapshot_json, started_at_ms, restoring_since_ms
                     FROM provisioning_pause WHERE app_id = ?1",
                    params![app_id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                        ))
                    },
                )
                .optional()?;
            let Some((snapshot, started_at_ms, restoring_since_ms)) = row else {
                return Ok(None);
            };
            let mut st = c.prepare(
                "SELECT run_id FROM pause_holders WHERE app_id = ?1 ORDER BY joined_at_ms, run_id",
            )?;
            let holders = st
                .query_map(params![app_id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(Some(PauseRow {
                app_id: app_id.to_owned(),
                snapshot: parse_json(snapshot),
                started_at_ms,
                holders,
                restoring_since_ms,
            }))
        })
    }

    /// Stores the snapshot and the first holder in one transaction, before provisioning is
    /// changed: a crash after this point can always restore what was there.
    pub fn pause_begin(&self, app_id: &str, snapshot: &Value, run_id: &str) -> anyhow::Result<()> {
        let now = now_ms();
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO provisioning_pause (app_id, snapshot_json, started_at_ms) VALUES (?1, ?2, ?3)",
            params![app_id, snapshot.to_string(), now],
        )?;
        tx.execute(
            "INSERT INTO pause_holders (app_id, run_id, joined_at_ms) VALUES (?1, ?2, ?3)",
            params![app_id, run_id, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn pause_join(&self, app_id: &str, run_id: &str) -> anyhow::Result<()> {
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO pause_holders (app_id, run_id, joined_at_ms) VALUES (?1, ?2, ?3)",
                params![app_id, run_id, now],
            )
        })?;
        Ok(())
    }

    /// Removes a holder; returns how many remain.
    pub fn pause_leave(&self, app_id: &str, run_id: &str) -> anyhow::Result<usize> {
        self.with(|c| {
            c.execute(
                "DELETE FROM pause_holders WHERE app_id = ?1 AND run_id = ?2",
                params![app_id, run_id],
            )?;
            c.query_row(
                "SELECT COUNT(*) FROM pause_holders WHERE app_id = ?1",
                params![app_id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
        })
    }

    /// Closes the pause to joins: restoring has begun. Kept until [`Store::pause_end`].
    pub fn pause_mark_restoring(&self, app_id: &str) -> anyhow::Result<()> {
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "UPDATE provisioning_pause SET restoring_since_ms = COALESCE(restoring_since_ms, ?2)
                 WHERE app_id = ?1",
                params![app_id, now],
            )
        })?;
        Ok(())
    }

    /// Forgets the pause once provisioning is restored (read back and compared).
    pub fn pause_end(&self, app_id: &str) -> anyhow::Result<()> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM pause_holders WHERE app_id = ?1",
            params![app_id],
        )?;
        tx.execute(
            "DELETE FROM provisioning_pause WHERE app_id = ?1",
            params![app_id],
        )?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;
    use crate::store::Verification;
    use serde_json::json;

    #[test]
    fn pause_survives_reopen() {
        let (s, dir) = temp_store();
        s.pause_begin("app", &json!({"create":{}}), "r1").unwrap();
        s.pause_join("app", "r2").unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(
            s.audit_verify().unwrap(),
            Verification::Intact { records: 0 }
        );
        let p = s.pause("app").unwrap().unwrap();
        assert_eq!(p.holders, vec!["r1".to_string(), "r2".to_string()]);
        assert_eq!(p.snapshot, json!({"create":{}}));
        assert_eq!(p.restoring_since_ms, None);
        assert_eq!(s.pause_leave("app", "r1").unwrap(), 1);
        s.pause_mark_restoring("app").unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert!(s
            .pause("app")
            .unwrap()
            .unwrap()
            .restoring_since_ms
            .is_some());
        s.pause_end("app").unwrap();
        assert!(s.pause("app").unwrap().is_none());
    }
}
