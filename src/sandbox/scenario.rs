//! The built-in tenant: who is broken in which way, and the operation names faults can target.
