//! The operating-system user running the console: the only identity a terminal can vouch for.

use std::fmt;

/// Longest user name accepted; longer ones are not user names.
const MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OsUserError {
    #[error(
        "cannot tell which operating-system user runs the console (no name for this uid, and \
         USER, USERNAME and LOGNAME are unset); run it as a named user"
    )]
    Unknown,
    #[error(
        "`{0}` is not a usable operating-system user name (empty, longer than {MAX_LEN} \
         characters, or with spaces, `:` or invisible characters)"
    )]
    Invalid(String),
}

/// A user name as the operating system knows it: non-empty, at most 64 characters, nothing
/// invisible, no whitespace and no `:` (which the console grammar uses after a name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OsUser(String);

impl OsUser {
    pub fn parse(name: &str) -> Result<Self, OsUserError> {
        let ok = !name.is_empty()
            && name.chars().count() <= MAX_LEN
            && !name.chars().any(|c| {
                c.is_whitespace() || c.is_control() || c == ':' || crate::domain::is_format_char(c)
            });
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(OsUserError::Invalid(
                crate::domain::strip_invisible(name)
                    .chars()
                    .take(MAX_LEN)
                    .collect(),
            ))
        }
    }

    /// The user this process runs as. On Unix the name the password database gives the process's
    /// uid comes first: the kernel enforces the uid, while `USER` is whatever the caller set.
    /// Where the uid has no entry (containers with an arbitrary uid) or on other systems,
    /// `USER`, `USERNAME`, then `LOGNAME`.
    pub fn current() -> Result<Self, OsUserError> {
        if let Some(name) = passwd_name() {
            return Self::parse(&name);
        }
        ["USER", "USERNAME", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            .ok_or(OsUserError::Unknown)
            .and_then(|n| Self::parse(&n))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OsUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `whoami` with the standard library only: the owner of `/proc/self` is this process's uid,
/// looked up in `/etc/passwd`.
#[cfg(unix)]
fn passwd_name() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        (fields.next()?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

#[cfg(not(unix))]
fn passwd_name() -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_spoof_the_grammar_or_hide_text_are_refused() {
        for bad in ["", "bob: approve", "a b", "bo\u{202E}b", &"x".repeat(65)] {
            assert!(OsUser::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(OsUser::parse("j.doe-1").unwrap().as_str(), "j.doe-1");
    }

    #[test]
    fn the_current_user_has_a_name() {
        // Every test environment runs as some user; the console must be able to name it.
        assert!(OsUser::current().is_ok());
    }
}
