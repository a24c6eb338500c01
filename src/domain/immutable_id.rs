//! `ImmutableId`: the source anchor Entra ID and Okta must agree on.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::fmt;
use uuid::Uuid;

/// Longer than any base64 GUID (24) or hex/DN-style anchor admins paste; anything beyond is a
/// paste accident, not an identifier.
pub const MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImmutableIdError {
    #[error("the ImmutableID is empty; leave it out to generate one, or give a GUID or an existing value")]
    Empty,
    #[error("the ImmutableID is {len} characters long; at most {MAX_LEN} are accepted")]
    TooLong { len: usize },
    #[error("the ImmutableID contains {0:?}, which Entra ID refuses (no `$`, `_`, spaces or control characters); if this is URL-safe base64, use the standard alphabet (`+` and `/`)")]
    ForbiddenChar(char),
}

/// An `onPremisesImmutableId` value. Case-sensitive, kept verbatim.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(into = "String")]
pub struct ImmutableId(String);

impl ImmutableId {
    /// A fresh value: the standard base64 of a random v4 GUID in .NET `ToByteArray` order.
    pub fn generate() -> Self {
        Self::from_guid(Uuid::new_v4())
    }

    pub fn from_guid(guid: Uuid) -> Self {
        Self(STANDARD.encode(guid.to_bytes_le()))
    }

    /// What an admin typed: a GUID is converted as `[Convert]::ToBase64String($guid.ToByteArray())`
    /// would; anything else is validated and kept verbatim, because Okta mappings and AD
    /// attributes are not always base64.
    pub fn parse_input(input: &str) -> Result<Self, ImmutableIdError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ImmutableIdError::Empty);
        }
        let guid_like = s.trim_start_matches('{').trim_end_matches('}');
        if guid_like.len() == 36 {
            if let Ok(g) = Uuid::parse_str(guid_like) {
                return Ok(Self::from_guid(g));
            }
        }
        Self::parse_value(s)
    }

    /// A value as stored by Entra or Okta: validated, never converted.
    pub fn parse_value(s: &str) -> Result<Self, ImmutableIdError> {
        if s.is_empty() {
            return Err(ImmutableIdError::Empty);
        }
        let len = s.chars().count();
        if len > MAX_LEN {
            return Err(ImmutableIdError::TooLong { len });
        }
        if let Some(c) = s
            .chars()
            .find(|c| *c == '$' || *c == '_' || c.is_whitespace() || c.is_control())
        {
            return Err(ImmutableIdError::ForbiddenChar(c));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for chat and logs: enough to tell values apart.
    pub fn short(&self) -> String {
        let head: String = self.0.chars().take(6).collect();
        if self.0.chars().count() > 6 {
            format!("{head}…")
        } else {
            head
        }
    }
}

impl fmt::Display for ImmutableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ImmutableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImmutableId({})", self.0)
    }
}

impl From<ImmutableId> for String {
    fn from(v: ImmutableId) -> String {
        v.0
    }
}

impl<'de> serde::Deserialize<'de> for ImmutableId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ImmutableId::parse_value(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_vector_uses_dotnet_byte_order() {
        let g = Uuid::parse_str("35918bc9-196d-40ea-9779-889d79b753f0").unwrap();
        assert_eq!(
            ImmutableId::from_guid(g).as_str(),
            "yYuRNW0Z6kCXeYidebdT8A=="
        );
        assert_eq!(
            ImmutableId::parse_input("35918bc9-196d-40ea-9779-889d79b753f0")
                .unwrap()
                .as_str(),
            "yYuRNW0Z6kCXeYidebdT8A=="
        );
        assert_eq!(
            ImmutableId::parse_input("{35918BC9-196D-40EA-9779-889D79B753F0}")
                .unwrap()
                .as_str(),
            "yYuRNW0Z6kCXeYidebdT8A=="
        );
    }

    #[test]
    fn generated_values_are_standard_base64_guids() {
        for _ in 0..200 {
            let id = ImmutableId::generate();
            let bytes = STANDARD.decode(id.as_str()).unwrap();
            assert_eq!(bytes.len(), 16);
            assert!(!id.as_str().contains('_') && !id.as_str().contains('-'));
        }
    }

    #[test]
    fn other_values_are_kept_verbatim() {
        let v = ImmutableId::parse_input("Ab+c/d==").unwrap();
        assert_eq!(v.as_str(), "Ab+c/d==");
        let v = ImmutableId::parse_input("CN=adele,OU=x").unwrap();
        assert_eq!(v.as_str(), "CN=adele,OU=x");
    }

    #[test]
    fn refusals() {
        assert_eq!(ImmutableId::parse_input(""), Err(ImmutableIdError::Empty));
        assert_eq!(
            ImmutableId::parse_input("   "),
            Err(ImmutableIdError::Empty)
        );
        assert_eq!(
            ImmutableId::parse_input("ab$c"),
            Err(ImmutableIdError::ForbiddenChar('$'))
        );
        assert_eq!(
            ImmutableId::parse_input("yYuRNW0Z6kCXeYidebdT8A_"),
            Err(ImmutableIdError::ForbiddenChar('_'))
        );
        assert_eq!(
            ImmutableId::parse_input("ab c"),
            Err(ImmutableIdError::ForbiddenChar(' '))
        );
        assert_eq!(
            ImmutableId::parse_input("ab\u{7}c"),
            Err(ImmutableIdError::ForbiddenChar('\u{7}'))
        );
        assert!(matches!(
            ImmutableId::parse_input(&"A".repeat(10_000)),
            Err(ImmutableIdError::TooLong { len: 10_000 })
        ));
    }
}
