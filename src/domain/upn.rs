//! `Upn`: a user principal name as Entra ID accepts it, compared case-insensitively.

use std::fmt;
use std::hash::{Hash, Hasher};

/// Entra ID allows 64 characters before the `@` and 48 for the domain (113 with the `@`).
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 48;
/// Characters Entra ID accepts in the part before `@` besides ASCII letters and digits.
const LOCAL_EXTRA: &[char] = &['\'', '.', '-', '_', '!', '#', '^', '~'];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpnError {
    #[error("the user name is empty; give it as user@domain.com")]
    Empty,
    #[error("the user name is {len} characters long; Entra ID allows at most {max}")]
    TooLong { len: usize, max: usize },
    #[error("`{0}` has no `@`; give the full user name, like user@domain.com")]
    MissingAt(String),
    #[error("`{0}` has more than one `@`; a user name has exactly one")]
    MultipleAt(String),
    #[error("the part before `@` is empty or longer than {MAX_LOCAL} characters")]
    BadLocalLength,
    #[error("the part before `@` cannot start or end with `.` or contain `..`")]
    BadDots,
    #[error("the character {0:?} is not allowed in a user name (letters, digits and ' . - _ ! # ^ ~ only)")]
    InvalidChar(char),
    #[error("`{0}` is not a valid domain name")]
    InvalidDomain(String),
}

/// A user principal name, `local@domain`. Keeps the spelling it was given; equality and hashing
/// ignore ASCII case, as Entra ID does.
#[derive(Clone, serde::Serialize)]
#[serde(into = "String")]
pub struct Upn {
    raw: String,
    at: usize,
}

impl Upn {
    pub fn parse(input: &str) -> Result<Self, UpnError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(UpnError::Empty);
        }
        let max = MAX_LOCAL + 1 + MAX_DOMAIN;
        if s.chars().count() > max {
            return Err(UpnError::TooLong {
                len: s.chars().count(),
                max,
            });
        }
        let mut parts = s.split('@');
        let local = parts.next().unwrap_or_default();
        let Some(domain) = parts.next() else {
            return Err(UpnError::MissingAt(s.to_owned()));
        };
        if parts.next().is_some() {
            return Err(UpnError::MultipleAt(s.to_owned()));
        }
        if local.is_empty() || local.len() > MAX_LOCAL {
            return Err(UpnError::BadLocalLength);
        }
        if let Some(c) = local
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || LOCAL_EXTRA.contains(c)))
        {
            return Err(UpnError::InvalidChar(c));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(UpnError::BadDots);
        }
        validate_domain(domain)?;
        Ok(Self {
            raw: s.to_owned(),
            at: local.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn local(&self) -> &str {
        &self.raw[..self.at]
    }

    pub fn domain(&self) -> &str {
        &self.raw[self.at + 1..]
    }

    /// The same local part in another domain (the temporary UPN of step 1).
    pub fn with_domain(&self, domain: &str) -> Result<Self, UpnError> {
        Self::parse(&format!("{}@{}", self.local(), domain))
    }

    pub fn in_domain(&self, domain: &str) -> bool {
        self.domain().eq_ignore_ascii_case(domain)
    }
}

fn validate_domain(domain: &str) -> Result<(), UpnError> {
    let bad = || UpnError::InvalidDomain(domain.to_owned());
    if domain.is_empty() || domain.len() > MAX_DOMAIN || !domain.contains('.') {
        return Err(bad());
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

impl PartialEq for Upn {
    fn eq(&self, other: &Self) -> bool {
        self.raw.eq_ignore_ascii_case(&other.raw)
    }
}
impl Eq for Upn {}

impl Hash for Upn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for b in self.raw.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

impl fmt::Display for Upn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Upn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upn({})", self.raw)
    }
}

impl From<Upn> for String {
    fn from(u: Upn) -> String {
        u.raw
    }
}

impl std::str::FromStr for Upn {
    type Err = UpnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for Upn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Upn::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::odata_quote;

    #[test]
    fn accepts_apostrophe_and_keeps_it() {
        let u = Upn::parse("o'brien@contoso.com").unwrap();
        assert_eq!(u.local(), "o'brien");
        assert_eq!(u.domain(), "contoso.com");
        assert_eq!(odata_quote(u.as_str()), "'o''brien@contoso.com'");
    }

    #[test]
    fn case_insensitive_equality_and_hash() {
        use std::collections::HashSet;
        let a = Upn::parse("ADELE@Contoso.com").unwrap();
        let b = Upn::parse("adele@contoso.com").unwrap();
        assert_eq!(a, b);
        let set: HashSet<_> = [a, b].into_iter().collect();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(Upn::parse("  "), Err(UpnError::Empty));
        assert!(matches!(Upn::parse("adele"), Err(UpnError::MissingAt(_))));
        assert!(matches!(
            Upn::parse("a@b@c.com"),
            Err(UpnError::MultipleAt(_))
        ));
        assert_eq!(
            Upn::parse("x' or 1 eq 1@contoso.com"),
            Err(UpnError::InvalidChar(' '))
        );
        assert!(matches!(
            Upn::parse("x' or 1 eq 1"),
            Err(UpnError::MissingAt(_))
        ));
        assert!(matches!(
            Upn::parse(&"a".repeat(10_000)),
            Err(UpnError::TooLong { .. })
        ));
        assert!(matches!(
            Upn::parse("a@localhost"),
            Err(UpnError::InvalidDomain(_))
        ));
        assert_eq!(Upn::parse(".a@x.com"), Err(UpnError::BadDots));
        assert_eq!(Upn::parse("a\"b@x.com"), Err(UpnError::InvalidChar('"')));
        assert_eq!(
            Upn::parse("a\u{0}b@x.com"),
            Err(UpnError::InvalidChar('\u{0}'))
        );
    }

    #[test]
    fn with_domain_moves_local_part() {
        let u = Upn::parse("adele@contoso.com").unwrap();
        let t = u.with_domain("contoso.onmicrosoft.com").unwrap();
        assert_eq!(t.as_str(), "adele@contoso.onmicrosoft.com");
    }
}
