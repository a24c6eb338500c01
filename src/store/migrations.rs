//! Versioned schema migrations, applied in order inside one transaction each.

use rusqlite::Connection;

/// Each entry upgrades the schema from its index to index + 1. Append only: never edit a
/// migration that has shipped.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    requester_id    TEXT NOT NULL,
    requester_name  TEXT NOT NULL,
    upn             TEXT NOT NULL,
    state           TEXT NOT NULL,
    plan_json       TEXT,
    fingerprint     TEXT,
    summary_json    TEXT
);
CREATE INDEX runs_by_state ON runs(state);
CREATE TABLE journal (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          TEXT NOT NULL,
    step            TEXT NOT NULL,
    api             TEXT NOT NULL,
    object          TEXT NOT NULL,
    before_json     TEXT NOT NULL,
    intended_json   TEXT NOT NULL,
    intent_at_ms    INTEGER NOT NULL,
    outcome         TEXT,
    error_code      TEXT,
    request_id      TEXT,
    outcome_at_ms   INTEGER
);
CREATE INDEX journal_by_run ON journal(run_id, id);
CREATE TABLE provisioning_pause (
    app_id          TEXT PRIMARY KEY,
    snapshot_json   TEXT NOT NULL,
    started_at_ms   INTEGER NOT NULL
);
CREATE TABLE pause_holders (
    app_id          TEXT NOT NULL,
    run_id          TEXT NOT NULL,
    joined_at_ms    INTEGER NOT NULL,
    PRIMARY KEY (app_id, run_id)
);
CREATE TABLE app_profiles (
    run_id          TEXT PRIMARY KEY,
    okta_user_id    TEXT NOT NULL,
    app_user_json   TEXT NOT NULL,
    saved_at_ms     INTEGER NOT NULL
);
"#,
    r#"
ALTER TABLE runs ADD COLUMN chat_ref TEXT;
CREATE TABLE approvals (
    run_id          TEXT NOT NULL,
    voter_id        TEXT NOT NULL,
    voter_name      TEXT NOT NULL,
    vote            TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    at_ms           INTEGER NOT NULL,
    PRIMARY KEY (run_id, voter_id, vote)
);
CREATE TABLE audit (
    seq             INTEGER PRIMARY KEY,
    at_ms           INTEGER NOT NULL,
    run_id          TEXT,
    kind            TEXT NOT NULL,
    actor           TEXT,
    data_json       TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE leases (
    name            TEXT PRIMARY KEY,
    holder          TEXT NOT NULL,
    expires_at_ms   INTEGER NOT NULL
);
"#,
    // The step engine: what each call answered, so a restarted run decides from the journal
    // alone (older rows have none and are read as an older version's); and a pause whose
    // restore has begun must never be joined again, also after a restart.
    r#"
ALTER TABLE journal ADD COLUMN result_json TEXT;
ALTER TABLE provisioning_pause ADD COLUMN restoring_since_ms INTEGER;
"#,
    // The chat outbox: everything the bot says in a channel or thread, kept until Discord has
    // it. A row is one message: posted once (with its nonce), then edited to each later
    // revision; `format` versions the row so a later release can read what this one left.
    r#"
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    format          INTEGER NOT NULL,
    key             TEXT NOT NULL UNIQUE,
    run_id          TEXT,
    channel_id      TEXT NOT NULL,
    fallback_json   TEXT,
    reply_to        TEXT,
    content         TEXT NOT NULL,
    pings_json      TEXT NOT NULL,
    nonce           TEXT NOT NULL,
    revision        INTEGER NOT NULL,
    sent_revision   INTEGER NOT NULL DEFAULT 0,
    message_id      TEXT,
    state           TEXT NOT NULL,
    due_at_ms       INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);
CREATE INDEX outbox_pending ON outbox(state, channel_id, id);
CREATE TABLE chat_unavailable (
    channel_id      TEXT PRIMARY KEY,
    why             TEXT NOT NULL,
    at_ms           INTEGER NOT NULL
);
"#,
    // Traceable writes: the `client-request-id` a Graph write carries, chosen and stored with
    // the intent before the call, beside the service's own `request_id` stored with the outcome.
    r#"
ALTER TABLE journal ADD COLUMN client_request_id TEXT;
"#,
    // The watch: where it is in the Okta System Log (the polling query's `next` link), every
    // event it has handled (by uuid, so a page read twice is handled once), and the findings it
    // reported, one per user. Rows carry `format` so a later release can read what this one left.
    r#"
CREATE TABLE watch_cursor (
    app_id          TEXT PRIMARY KEY,
    format          INTEGER NOT NULL,
    cursor_json     TEXT NOT NULL,
    filter          TEXT NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);
CREATE TABLE watch_events (
    uuid            TEXT PRIMARY KEY,
    upn             TEXT,
    event_type      TEXT NOT NULL,
    published       TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    handled_at_ms   INTEGER NOT NULL
);
CREATE TABLE watch_findings (
    upn             TEXT PRIMARY KEY,
    format          INTEGER NOT NULL,
    display_upn     TEXT NOT NULL,
    verdict         TEXT NOT NULL,
    fix             TEXT NOT NULL,
    why             TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    display_message TEXT,
    reason          TEXT,
    opened_at_ms    INTEGER NOT NULL,
    last_seen_ms    INTEGER NOT NULL,
    last_card_day   TEXT,
    cards           INTEGER NOT NULL DEFAULT 0,
    closed_at_ms    INTEGER,
    closed_why      TEXT
);
CREATE INDEX watch_findings_open ON watch_findings(closed_at_ms);
"#,
    // Bulk repairs: one row per batch; its users are ordinary runs (their plans name the batch),
    // listed here in order. `format` versions the row.
    r#"
CREATE TABLE batches (
    id              TEXT PRIMARY KEY,
    format          INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    requester_id    TEXT NOT NULL,
    requester_name  TEXT NOT NULL,
    reason          TEXT,
    state           TEXT NOT NULL,
    members_json    TEXT NOT NULL,
    refused_json    TEXT NOT NULL,
    summary_json    TEXT
);
CREATE INDEX batches_state ON batches(state);
"#,
    // A message's components (a diagnosis's fix button on a watch card), posted with it.
    r#"
ALTER TABLE outbox ADD COLUMN components_json TEXT;
"#,
];

/// The schema as the first release created it, for upgrade tests.
pub const V1_SCHEMA: &str = MIGRATIONS[0];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub fn apply(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            applied_at_ms INTEGER NOT NULL
        )",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?1, ?2)",
            rusqlite::params![i as i64 + 1, super::now_ms()],
        )?;
        tx.commit()?;
    }
    Ok(())
}
