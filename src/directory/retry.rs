//! Retry timing shared by the clients: `Retry-After` (decimal seconds) or exponential backoff
//! with jitter, within an overall deadline.
