//! One line of `check-config`'s report, the same for every checker (Graph, Okta, Discord), so that
//! no checker knows another and the command line alone decides which ones run.

use std::fmt;

/// How one check came out. A warning is worth reading but does not fail `check-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Warn,
    Fail,
}

/// One line of the report: what was checked, how it came out, and what was found or what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Outcome::Ok, detail)
    }

    pub fn warn(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Outcome::Warn, detail)
    }

    pub fn failed(name: impl Into<String>, what_to_do: impl Into<String>) -> Self {
        Self::new(name, Outcome::Fail, what_to_do)
    }

    fn new(name: impl Into<String>, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            outcome,
            detail: detail.into(),
        }
    }

    pub fn passed(&self) -> bool {
        self.outcome != Outcome::Fail
    }

    /// What to do, when the check failed.
    pub fn failure(&self) -> Option<&str> {
        (self.outcome == Outcome::Fail).then_some(self.detail.as_str())
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.outcome {
            Outcome::Ok => "ok     ",
            Outcome::Warn => "warn   ",
            Outcome::Fail => "FAILED ",
        };
        write!(f, "{label} {}: {}", self.name, self.detail)
    }
}

/// Prints one line per check to standard output, then the verdict; fails when any check failed.
pub fn print(checks: &[Check]) -> anyhow::Result<()> {
    for c in checks {
        println!("{c}");
    }
    verdict(checks).map(|line| println!("{line}"))
}

/// The report's last line, or the error that makes the command exit non-zero.
fn verdict(checks: &[Check]) -> anyhow::Result<String> {
    let failed = checks.iter().filter(|c| !c.passed()).count();
    anyhow::ensure!(failed == 0, "{failed} of {} checks failed", checks.len());
    let warned = checks.iter().filter(|c| c.outcome == Outcome::Warn).count();
    Ok(match warned {
        0 => format!("all {} checks passed", checks.len()),
        n => format!("all {} checks passed ({n} with warnings)", checks.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_columns() {
        assert_eq!(Check::ok("a", "fine").to_string(), "ok      a: fine");
        assert_eq!(Check::warn("b", "look").to_string(), "warn    b: look");
        assert_eq!(Check::failed("c", "fix").to_string(), "FAILED  c: fix");
    }

    #[test]
    fn a_warning_passes_and_a_failure_does_not() {
        let mut checks = vec![Check::ok("a", "fine"), Check::warn("b", "look")];
        assert_eq!(
            verdict(&checks).unwrap(),
            "all 2 checks passed (1 with warnings)"
        );
        checks.push(Check::failed("c", "fix"));
        assert_eq!(checks[2].failure(), Some("fix"));
        assert_eq!(checks[1].failure(), None);
        assert_eq!(
            verdict(&checks).unwrap_err().to_string(),
            "1 of 3 checks failed"
        );
    }
}
