//! One run per user at a time, keyed on the Entra object id (the UPN changes mid-run), with the
//! original UPN indexed too: mid-run the user cannot be found by it, and a second request for it
//! must still be told a run is under way rather than "no such user".

use crate::domain::{EntraObjectId, RunId, Upn};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct UserLocks {
    held: Arc<DashMap<EntraObjectId, RunId>>,
    by_upn: Arc<DashMap<Upn, RunId>>,
}

/// Releases the user when dropped, whatever path the run takes.
#[derive(Debug)]
pub struct UserLock {
    held: Arc<DashMap<EntraObjectId, RunId>>,
    by_upn: Arc<DashMap<Upn, RunId>>,
    user: EntraObjectId,
    upn: Upn,
}

impl Drop for UserLock {
    fn drop(&mut self) {
        self.by_upn.remove(&self.upn);
        self.held.remove(&self.user);
    }
}

impl UserLocks {
    /// The lock, or the run that holds it.
    pub fn try_lock(&self, user: &EntraObjectId, upn: &Upn, run: RunId) -> Result<UserLock, RunId> {
        match self.held.entry(user.clone()) {
            Entry::Occupied(o) if *o.get() != run => Err(*o.get()),
            Entry::Occupied(_) => Err(run),
            Entry::Vacant(v) => {
                v.insert(run);
                self.by_upn.insert(upn.clone(), run);
                Ok(UserLock {
                    held: self.held.clone(),
                    by_upn: self.by_upn.clone(),
                    user: user.clone(),
                    upn: upn.clone(),
                })
            }
        }
    }

    pub fn holder(&self, user: &EntraObjectId) -> Option<RunId> {
        self.held.get(user).map(|r| *r)
    }

    /// The run under way for the user who had this UPN when it started.
    pub fn holder_by_upn(&self, upn: &Upn) -> Option<RunId> {
        self.by_upn.get(upn).map(|r| *r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_first_drops() {
        let locks = UserLocks::default();
        let u = EntraObjectId::parse("8d2e5a1c-0000-4000-8000-000000000001").unwrap();
        let (a, b) = (RunId::new(), RunId::new());
        let upn = Upn::parse("adele@contoso.com").unwrap();
        let g = locks.try_lock(&u, &upn, a).unwrap();
        assert_eq!(locks.try_lock(&u, &upn, b).unwrap_err(), a);
        assert_eq!(
            locks.holder_by_upn(&Upn::parse("ADELE@contoso.com").unwrap()),
            Some(a)
        );
        drop(g);
        assert_eq!(locks.holder_by_upn(&upn), None);
        assert!(locks.try_lock(&u, &upn, b).is_ok());
    }
}
