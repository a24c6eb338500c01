//! Leases that keep a second instance off the same Okta app, and the instance name that holds
//! them across restarts.

use super::{now_ms, LeaseHeld, Store};
use rusqlite::{params, OptionalExtension};

impl Store {
    /// A name for this instance that survives restarts: the host name and an id kept in the
    /// data directory. A restarted bot takes its own lease back at once; another host sharing
    /// the directory has another name and must wait for the lease to lapse.
    pub fn instance_name(&self) -> String {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let id_file = self.path.with_file_name("instance-id");
        let id = std::fs::read_to_string(&id_file)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let _ = std::fs::write(&id_file, &id);
                id
            });
        format!("{host}:{id}")
    }

    /// Takes or renews the lease `name` (e.g. `okta-app:<id>`) for `holder` until now + `ttl`.
    pub fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> anyhow::Result<Result<(), LeaseHeld>> {
        let now = now_ms();
        let until = now + ttl.as_millis() as i64;
        self.tx(|c| {
            let current: Option<(String, i64)> = c
                .query_row(
                    "SELECT holder, expires_at_ms FROM leases WHERE name = ?1",
                    params![name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((h, exp)) = current {
                if h != holder && exp > now {
                    return Ok(Err(LeaseHeld {
                        holder: h,
                        expires_at_ms: exp,
                    }));
                }
            }
            c.execute(
                "INSERT INTO leases (name, holder, expires_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET holder = ?2, expires_at_ms = ?3",
                params![name, holder, until],
            )?;
            Ok(Ok(()))
        })
    }

    pub fn release_lease(&self, name: &str, holder: &str) -> anyhow::Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::tests::temp_store;

    #[test]
    fn a_lease_is_held_by_one_instance_until_it_lapses() {
        let (s, _d) = temp_store();
        let ttl = std::time::Duration::from_secs(30);
        assert!(s.acquire_lease("okta-app:x", "A", ttl).unwrap().is_ok());
        assert!(
            s.acquire_lease("okta-app:x", "A", ttl).unwrap().is_ok(),
            "renewal"
        );
        let held = s
            .acquire_lease("okta-app:x", "B", ttl)
            .unwrap()
            .unwrap_err();
        assert_eq!(held.holder, "A");
        assert!(s.acquire_lease("okta-app:y", "B", ttl).unwrap().is_ok());
        s.release_lease("okta-app:x", "A").unwrap();
        assert!(s.acquire_lease("okta-app:x", "B", ttl).unwrap().is_ok());
        assert!(s
            .acquire_lease("okta-app:z", "A", std::time::Duration::ZERO)
            .unwrap()
            .is_ok());
        assert!(
            s.acquire_lease("okta-app:z", "B", ttl).unwrap().is_ok(),
            "lapsed"
        );
    }
}
