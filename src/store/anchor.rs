//! The audit chain's head kept outside the database, so a cut tail is detectable: a chain that
//! ends early still links perfectly from inside.
//!
//! Rule: the head file may lag the database (a crash between a commit and the file's update
//! loses at most that update) but never leads it, and it only ever moves forward along the chain
//! it already names. So a database whose chain ends before the file's record, or holds another
//! record at that position, has lost its tail.

use super::audit;
use rusqlite::{params, Connection, OptionalExtension};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The head file's name, beside the database.
pub const HEAD_FILE: &str = "audit-head";

/// Hex digits of the hash printed in run summaries, and the fewest `--expect-head` accepts:
/// 64 bits, so nobody can grind out forged records whose hash matches a recorded prefix.
pub const SHORT_HASH_HEX: usize = 16;

/// A position in the audit chain: a record's sequence number and its hash (or, when parsed
/// from someone's notes, a prefix of it of at least [`SHORT_HASH_HEX`] digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

impl AuditHead {
    /// `seq:` and the first [`SHORT_HASH_HEX`] hash digits: short enough for a chat line, long
    /// enough for `audit verify --expect-head`.
    pub fn short(&self) -> String {
        let n = self.hash.len().min(SHORT_HASH_HEX);
        format!("{}:{}", self.seq, &self.hash[..n])
    }

    /// Whether a stored record's full hash is this one (or starts with this prefix).
    pub fn matches(&self, hash: &str) -> bool {
        hash.starts_with(&self.hash)
    }
}

impl std::fmt::Display for AuditHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// Why a `seq:hash` text is not an audit head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadHead {
    #[error("expected <seq>:<hash>, as printed by a run summary or `audit verify`")]
    Shape,
    #[error("the sequence number must be a whole number of at least 1")]
    Seq,
    #[error(
        "the hash must be {SHORT_HASH_HEX} to 64 hex digits (a prefix of the record's SHA-256)"
    )]
    Hash,
}

impl FromStr for AuditHead {
    type Err = BadHead;

    fn from_str(s: &str) -> Result<Self, BadHead> {
        let (seq, hash) = s.trim().split_once(':').ok_or(BadHead::Shape)?;
        let seq: i64 = seq.parse().map_err(|_| BadHead::Seq)?;
        if seq < 1 {
            return Err(BadHead::Seq);
        }
        let hash = hash.to_ascii_lowercase();
        if !(SHORT_HASH_HEX..=64).contains(&hash.len())
            || !hash.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(BadHead::Hash);
        }
        Ok(Self { seq, hash })
    }
}

/// The head file could not be read as a head: as suspicious as a wrong one, so it stops the
/// file from being updated and fails verification.
#[derive(Debug, thiserror::Error)]
pub enum HeadFileError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not hold a head: {source}")]
    Garbled { path: PathBuf, source: BadHead },
}

pub fn head_path(db: &Path) -> PathBuf {
    db.with_file_name(HEAD_FILE)
}

/// The head the file records; `None` when there is none yet (a new data directory, or one from
/// a version before the file existed).
pub fn read(path: &Path) -> Result<Option<AuditHead>, HeadFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse()
            .map(Some)
            .map_err(|source| HeadFileError::Garbled {
                path: path.to_owned(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HeadFileError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces the file atomically and durably: a crash leaves the old head or the new one, never
/// a torn file. The temporary name is unique because two handles on one database (tests do
/// this) may write at once.
pub fn write(path: &Path, head: &AuditHead) -> std::io::Result<()> {
    let tmp = path.with_file_name(format!(
        "{HEAD_FILE}.{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{head}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is only durable once the directory is.
        #[cfg(unix)]
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The database's last record as a head; `None` for an empty log.
pub(crate) fn db_head(conn: &Connection) -> rusqlite::Result<Option<AuditHead>> {
    conn.query_row(
        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
        [],
        |r| {
            Ok(AuditHead {
                seq: r.get(0)?,
                hash: r.get(1)?,
            })
        },
    )
    .optional()
}

/// Checks a head recorded elsewhere against the database: `None` when the database holds that
/// very record (possibly followed by newer ones), otherwise why not.
pub(crate) fn mismatch(conn: &Connection, head: &AuditHead) -> rusqlite::Result<Option<String>> {
    let stored: Option<String> = conn
        .query_row(
            "SELECT hash FROM audit WHERE seq = ?1",
            params![head.seq],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match stored {
        Some(hash) if head.matches(&hash) => None,
        Some(hash) => Some(format!(
            "record {} has hash {}…, not {}…: the tail was cut and written again",
            head.seq,
            &hash[..hash.len().min(SHORT_HASH_HEX)],
            &head.hash[..head.hash.len().min(SHORT_HASH_HEX)]
        )),
        None => {
            let last = db_head(conn)?.map_or(0, |h| h.seq);
            Some(format!(
                "the log ends at record {last}, but it reached record {}",
                head.seq
            ))
        }
    })
}

/// This handle's view of the head file, kept under the connection's lock.
#[derive(Debug)]
pub(crate) struct Anchor {
    path: PathBuf,
    /// The head last written (or found consistent on open); the file moves only past it.
    written: Option<AuditHead>,
    /// Set when the file names a head this database does not hold: it is then evidence, and
    /// overwriting it would hide the loss.
    frozen: bool,
}

impl Anchor {
    pub(crate) fn open(db: &Path, conn: &Connection) -> rusqlite::Result<Self> {
        let path = head_path(db);
        let mut anchor = Self {
            path,
            written: None,
            frozen: false,
        };
        match read(&anchor.path) {
            Ok(None) => {}
            Ok(Some(head)) => match mismatch(conn, &head)? {
                None => anchor.written = Some(head),
                Some(why) => anchor.freeze(&why),
            },
            Err(e) => anchor.freeze(&e.to_string()),
        }
        Ok(anchor)
    }

    fn freeze(&mut self, why: &str) {
        tracing::error!(
            head_file = %self.path.display(),
            %why,
            "the audit log does not contain the head recorded outside it; leaving the head file as evidence (run `o365-fixbot audit verify`)"
        );
        self.frozen = true;
    }

    /// Called after every commit: moves the file to the database's new head when audit records
    /// were appended. Never fails the caller — the change is already committed, and a file that
    /// lags is allowed; the next commit tries again.
    pub(crate) fn after_commit(&mut self, conn: &Connection) {
        if self.frozen {
            return;
        }
        let head = match db_head(conn) {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the audit head to anchor it");
                return;
            }
        };
        if let Some(written) = &self.written {
            if head.seq <= written.seq {
                return;
            }
            // Only forward along the same chain: if the records the file names were cut under
            // us, the file keeps saying so.
            match mismatch(conn, written) {
                Ok(None) => {}
                Ok(Some(why)) => return self.freeze(&why),
                Err(e) => {
                    tracing::error!(error = %e, "cannot check the audit head before anchoring");
                    return;
                }
            }
        }
        match write(&self.path, &head) {
            Ok(()) => self.written = Some(head),
            Err(e) => tracing::error!(
                head_file = %self.path.display(),
                error = %e,
                "cannot write the audit head file; it lags until the next write succeeds"
            ),
        }
    }
}

/// Every anchor a verification checks besides the chain itself.
pub(crate) fn check(
    conn: &Connection,
    db: &Path,
    expected: Option<&AuditHead>,
) -> Result<audit::Verification, VerifyError> {
    let chain = audit::verify(conn)?;
    let audit::Verification::Intact { records } = chain else {
        return Ok(chain);
    };
    let path = head_path(db);
    let file = read(&path)?;
    let anchors = file
        .iter()
        .map(|h| (h, format!("the head file {}", path.display())))
        .chain(expected.map(|h| (h, "the expected head".to_owned())));
    for (head, source) in anchors {
        if let Some(why) = mismatch(conn, head)? {
            return Ok(audit::Verification::Truncated {
                records,
                head: head.clone(),
                reason: format!("{why} according to {source} ({})", head.short()),
            });
        }
    }
    Ok(chain)
}

/// Verification could not be done (as opposed to finding the log damaged).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    HeadFile(#[from] HeadFileError),
    #[error("cannot read the audit log: {0}")]
    Db(#[from] rusqlite::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;
    use crate::store::{Store, Verification};
    use serde_json::json;

    fn append(s: &Store, n: usize) {
        for i in 0..n {
            s.audit(None, "note", None, &json!({ "i": i })).unwrap();
        }
    }

    /// What someone with the file does: drop the guard, delete the newest records.
    fn cut_after(db: &Path, seq: i64) {
        let c = Connection::open(db).unwrap();
        c.execute_batch("DROP TRIGGER IF EXISTS audit_no_delete")
            .unwrap();
        c.execute("DELETE FROM audit WHERE seq > ?1", params![seq])
            .unwrap();
    }

    fn file_head(dir: &Path) -> AuditHead {
        read(&dir.join(HEAD_FILE)).unwrap().expect("a head file")
    }

    #[test]
    fn the_head_file_follows_each_commit_that_appends() {
        let (s, dir) = temp_store();
        assert_eq!(read(&dir.join(HEAD_FILE)).unwrap(), None);
        append(&s, 3);
        let head = s.audit_head().unwrap().unwrap();
        assert_eq!(head.seq, 3);
        assert_eq!(file_head(&dir), head);
        // A transaction without audit records leaves it alone.
        s.check_writable().unwrap();
        assert_eq!(file_head(&dir), head);
    }

    #[test]
    fn a_cut_tail_is_reported_as_truncated_from_the_head_file() {
        let (s, dir) = temp_store();
        append(&s, 4);
        cut_after(s.path(), 2);
        // The chain alone still links: only the head file can tell.
        assert_eq!(
            audit::verify(&Connection::open(s.path()).unwrap()).unwrap(),
            Verification::Intact { records: 2 }
        );
        match s.audit_verify().unwrap() {
            Verification::Truncated {
                records,
                head,
                reason,
            } => {
                assert_eq!((records, head.seq), (2, 4));
                assert!(reason.contains("ends at record 2"), "{reason}");
                assert!(reason.contains("head file"), "{reason}");
            }
            v => panic!("not reported as truncated: {v:?}"),
        }
        assert_eq!(file_head(&dir).seq, 4);
    }

    #[test]
    fn a_cut_tail_is_reported_against_an_expected_head_even_without_the_head_file() {
        let (s, dir) = temp_store();
        append(&s, 4);
        let noted: AuditHead = s.audit_head().unwrap().unwrap().short().parse().unwrap();
        cut_after(s.path(), 3);
        std::fs::remove_file(dir.join(HEAD_FILE)).unwrap();
        assert_eq!(
            s.audit_verify().unwrap(),
            Verification::Intact { records: 3 }
        );
        assert!(matches!(
            s.audit_verify_expecting(Some(&noted)).unwrap(),
            Verification::Truncated { records: 3, head, .. } if head == noted
        ));
    }

    #[test]
    fn a_head_file_lagging_by_one_transaction_verifies_intact() {
        let (s, dir) = temp_store();
        append(&s, 3);
        let before = std::fs::read(dir.join(HEAD_FILE)).unwrap();
        append(&s, 1);
        // The crash between the last commit and its file update.
        std::fs::write(dir.join(HEAD_FILE), before).unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(
            s.audit_verify().unwrap(),
            Verification::Intact { records: 4 }
        );
        // And the next write brings it up to date.
        append(&s, 1);
        assert_eq!(file_head(&dir).seq, 5);
    }

    #[test]
    fn a_tail_cut_and_written_again_stays_detected_after_more_writes() {
        let (s, dir) = temp_store();
        append(&s, 4);
        let original = s.audit_head().unwrap().unwrap();
        drop(s);
        cut_after(&dir.join("fixbot.sqlite3"), 2);
        let s = Store::open(&dir).unwrap();
        // Records 3.. written again, past the old head: the chain links, the file does not move.
        append(&s, 3);
        assert_eq!(file_head(&dir), original);
        match s.audit_verify().unwrap() {
            Verification::Truncated {
                records, reason, ..
            } => {
                assert_eq!(records, 5);
                assert!(reason.contains("written again"), "{reason}");
            }
            v => panic!("rewritten tail not detected: {v:?}"),
        }
    }

    #[test]
    fn a_tail_cut_under_a_running_store_freezes_the_head_file() {
        let (s, dir) = temp_store();
        append(&s, 4);
        let original = s.audit_head().unwrap().unwrap();
        cut_after(s.path(), 2);
        append(&s, 3);
        assert_eq!(file_head(&dir), original);
        assert!(matches!(
            s.audit_verify().unwrap(),
            Verification::Truncated { .. }
        ));
    }

    #[test]
    fn a_garbled_head_file_fails_verification_rather_than_passing() {
        let (s, dir) = temp_store();
        append(&s, 2);
        std::fs::write(dir.join(HEAD_FILE), "nonsense").unwrap();
        assert!(matches!(
            s.audit_verify(),
            Err(VerifyError::HeadFile(HeadFileError::Garbled { .. }))
        ));
    }

    #[test]
    fn a_head_parses_from_its_printed_forms_and_rejects_short_prefixes() {
        let full = AuditHead {
            seq: 42,
            hash: "ab".repeat(32),
        };
        assert_eq!(full.to_string().parse::<AuditHead>().unwrap(), full);
        let short: AuditHead = full.short().parse().unwrap();
        assert!(short.matches(&full.hash));
        assert_eq!(short.hash.len(), SHORT_HASH_HEX);
        assert_eq!("42:ABABABABABABABAB".parse::<AuditHead>().unwrap(), short);
        assert_eq!("42:abababab".parse::<AuditHead>(), Err(BadHead::Hash));
        assert_eq!(
            "42:zzzzzzzzzzzzzzzzzz".parse::<AuditHead>(),
            Err(BadHead::Hash)
        );
        assert_eq!("0:abababababababab".parse::<AuditHead>(), Err(BadHead::Seq));
        assert_eq!("abababababababab".parse::<AuditHead>(), Err(BadHead::Shape));
    }
}
