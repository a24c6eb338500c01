//! Validated newtypes for everything that crosses a boundary: parse once at the edge, trust after.

mod format_chars;
mod ids;
mod immutable_id;
mod run_state;
mod upn;
pub mod user_list;

pub use format_chars::{is_format_char, strip_invisible};
pub use ids::{Actor, EntraObjectId, IdError, OktaUserId, RunId};
pub use immutable_id::{ImmutableId, ImmutableIdError};
pub use run_state::{RunState, UnknownRunState};
pub use upn::{Upn, UpnError};

/// Escape a value for use inside an OData string literal (`'…'`): a single quote is doubled.
pub fn odata_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
