//! `Secret`: credentials that come from the environment or a file and never print.

use std::fmt;
use std::path::Path;

/// A credential. `Debug` and `Display` print `[redacted]`; the value is reachable only through
/// [`Secret::expose`], so every use is greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads `NAME` from the environment, or the file named by `NAME_FILE` (Docker/Kubernetes
    /// secrets). Trailing newlines of a file are dropped. `Ok(None)` when neither is set.
    pub fn from_env(name: &str) -> anyhow::Result<Option<Self>> {
        Self::from_lookup(name, |k| std::env::var(k).ok())
    }

    pub(crate) fn from_lookup(
        name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<Self>> {
        if let Some(v) = lookup(name).filter(|v| !v.is_empty()) {
            return Ok(Some(Self(v)));
        }
        let file_var = format!("{name}_FILE");
        match lookup(&file_var).filter(|v| !v.is_empty()) {
            Some(path) => {
                let raw = std::fs::read_to_string(Path::new(&path)).map_err(|e| {
                    anyhow::anyhow!("{file_var} names `{path}`, which cannot be read: {e}")
                })?;
                let v = raw.trim_end_matches(['\r', '\n']).to_owned();
                anyhow::ensure!(!v.is_empty(), "{file_var} names `{path}`, which is empty");
                Ok(Some(Self(v)))
            }
            None => Ok(None),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn reads_env_then_file() {
        let dir = std::env::temp_dir().join(format!("fixbot-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tok");
        std::fs::write(&f, "from-file\n").unwrap();
        let path = f.to_string_lossy().to_string();
        let got = Secret::from_lookup("X", |k| (k == "X_FILE").then(|| path.clone())).unwrap();
        assert_eq!(got.unwrap().expose(), "from-file");
        let got = Secret::from_lookup("X", |k| (k == "X").then(|| "env".to_owned())).unwrap();
        assert_eq!(got.unwrap().expose(), "env");
        assert!(Secret::from_lookup("X", |_| None).unwrap().is_none());
        let err = Secret::from_lookup("X", |k| (k == "X_FILE").then(|| "/nonexistent/x".into()))
            .unwrap_err();
        assert!(err.to_string().contains("X_FILE"));
    }
}
