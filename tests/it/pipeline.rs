//! The repair pipeline end to end against the sandbox.
