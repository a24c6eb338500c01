//! Pacing by `X-Rate-Limit-Remaining` / `X-Rate-Limit-Reset`: wait for the reset instead of
//! running into 429.
