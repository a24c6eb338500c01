//! The tamper-evident audit log: append-only records, each carrying the hash of the one before.

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The hash the first record links to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record as exported (JSON lines, for a SIEM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at_ms: i64,
    pub run_id: Option<String>,
    pub kind: String,
    pub actor: Option<String>,
    pub data: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Intact {
        records: u64,
    },
    /// The first record whose content or link does not match.
    Broken {
        seq: i64,
        reason: String,
    },
    /// Every record links, but the chain does not hold `head`, recorded outside the database
    /// (the head file, or one the operator noted): records were cut off the end.
    Truncated {
        records: u64,
        head: super::AuditHead,
        reason: String,
    },
}

fn digest(
    prev: &str,
    seq: i64,
    at_ms: i64,
    run: Option<&str>,
    kind: &str,
    actor: Option<&str>,
    data: &str,
) -> String {
    let canonical = serde_json::json!([prev, seq, at_ms, run, kind, actor, data]).to_string();
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Appends within the caller's transaction, so a record and the change it describes commit
/// together.
pub(crate) fn append(
    tx: &Connection,
    run: Option<&str>,
    kind: &str,
    actor: Option<&str>,
    data: &Value,
) -> rusqlite::Result<()> {
    let (last_seq, prev): (i64, String) = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok((0, GENESIS.to_owned())),
            e => Err(e),
        })?;
    let seq = last_seq + 1;
    let at_ms = super::now_ms();
    let data = data.to_string();
    let hash = digest(&prev, seq, at_ms, run, kind, actor, &data);
    tx.execute(
        "INSERT INTO audit (seq, at_ms, run_id, kind, actor, data_json, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![seq, at_ms, run, kind, actor, data, prev, hash],
    )?;
    Ok(())
}

pub(crate) fn records(conn: &Connection) -> rusqlite::Result<Vec<(AuditRecord, String)>> {
    let mut st = conn.prepare(
        "SELECT seq, at_ms, run_id, kind, actor, data_json, prev_hash, hash FROM audit ORDER BY seq",
    )?;
    let rows = st.query_map([], |r| {
        let data: String = r.get(5)?;
        Ok((
            AuditRecord {
                seq: r.get(0)?,
                at_ms: r.get(1)?,
                run_id: r.get(2)?,
                kind: r.get(3)?,
                actor: r.get(4)?,
                data: serde_json::from_str(&data).unwrap_or(Value::String(data.clone())),
                prev_hash: r.get(6)?,
                hash: r.get(7)?,
            },
            data,
        ))
    })?;
    rows.collect()
}

pub(crate) fn verify(conn: &Connection) -> rusqlite::Result<Verification> {
    let mut prev = GENESIS.to_owned();
    let mut count = 0;
    for (expected_seq, (r, raw)) in (1..).zip(records(conn)?) {
        if r.seq != expected_seq {
            return Ok(Verification::Broken {
                seq: r.seq,
                reason: format!("record {expected_seq} is missing"),
            });
        }
        if r.prev_hash != prev {
            return Ok(Verification::Broken {
                seq: r.seq,
                reason: "it does not link to the record before it".into(),
            });
        }
        let recomputed = digest(
            &prev,
            r.seq,
            r.at_ms,
            r.run_id.as_deref(),
            &r.kind,
            r.actor.as_deref(),
            &raw,
        );
        if recomputed != r.hash {
            return Ok(Verification::Broken {
                seq: r.seq,
                reason: "its content does not match its hash (edited after it was written)".into(),
            });
        }
        prev = r.hash;
        count += 1;
    }
    Ok(Verification::Intact { records: count })
}
