//! Classifying an API outcome by HTTP status and error code — never by message text.
//!
//! Three answers matter to a repair: the write happened, the service refused it (nothing
//! changed), or nobody knows (it may have happened). Everything a step does after a failure
//! follows from which of the three it got.

use serde::{Deserialize, Serialize};

/// What a write's answer says about the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The write happened.
    Ok,
    /// The service answered and refused: nothing changed.
    Refused,
    /// Timeout, transport error, 5xx, a retry budget spent on throttling, an answer that could
    /// not be read: the write may have happened.
    Unknown,
}

/// Classifies a failed call from its HTTP status (absent when no answer arrived) and the
/// service's error code.
///
/// A 4xx is a refusal: Graph and Okta both validate and authorize before they change anything,
/// and 429 / 409 `Directory_ConcurrencyViolation` mean the request was not processed. A 5xx, or
/// no status at all, leaves the outcome open. 408 is a gateway giving up on a request that may
/// still run, so it is unknown too.
pub fn classify(status: Option<u16>, _code: Option<&str>) -> Verdict {
    match status {
        Some(408) => Verdict::Unknown,
        Some(s) if (400..500).contains(&s) => Verdict::Refused,
        Some(s) if (200..300).contains(&s) => Verdict::Unknown,
        _ => Verdict::Unknown,
    }
}

/// Okta's code for "no such resource": an unassign re-sent after the first one landed.
pub const OKTA_NOT_FOUND: &str = "E0000007";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_4xx_and_everything_else_is_open() {
        assert_eq!(
            classify(Some(403), Some("Authorization_RequestDenied")),
            Verdict::Refused
        );
        assert_eq!(classify(Some(400), Some("E0000001")), Verdict::Refused);
        assert_eq!(classify(Some(429), Some("E0000047")), Verdict::Refused);
        assert_eq!(classify(Some(500), Some("E0000009")), Verdict::Unknown);
        assert_eq!(classify(Some(503), None), Verdict::Unknown);
        assert_eq!(classify(Some(408), None), Verdict::Unknown);
        assert_eq!(classify(None, None), Verdict::Unknown);
    }
}
