//! Saved app profiles: the Office 365 app user as it was before an unassign, kept to restore it.

use super::{now_ms, parse_json, Store};
use rusqlite::{params, OptionalExtension};
use serde_json::Value;

impl Store {
    /// The Office 365 app user as it was before the unassign, which loses it.
    pub fn save_app_profile(
        &self,
        run_id: &str,
        okta_user_id: &str,
        app_user: &Value,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO app_profiles (run_id, okta_user_id, app_user_json, saved_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![run_id, okta_user_id, app_user.to_string(), now],
            )
        })?;
        Ok(())
    }

    pub fn app_profile(&self, run_id: &str) -> anyhow::Result<Option<Value>> {
        self.with(|c| {
            c.query_row(
                "SELECT app_user_json FROM app_profiles WHERE run_id = ?1",
                params![run_id],
                |r| r.get::<_, String>(0),
            )
            .optional()
        })
        .map(|o| o.map(parse_json))
    }
}
