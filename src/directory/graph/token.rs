//! Client-credentials token, cached and renewed before it expires.
