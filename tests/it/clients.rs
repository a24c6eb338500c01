//! Graph and Okta clients against the sandbox: happy paths, throttling, timeouts, tokens, pacing.
