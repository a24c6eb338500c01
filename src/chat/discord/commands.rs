//! The slash commands: their definitions (registered per guild on READY) and a pure parser from
//! an interaction's options to a [`Command`]. Grammar:
//!
//! ```text
//! /fix-immutable-id user:<UPN> [immutable_id:<GUID or base64 value>] [mode:smallest|full|entra-only] [reason:<text>]
//! /fix-immutable-id users:<UPNs, comma/space/newline separated> [mode:…] [reason:<text>]
//! /fix-immutable-id file:<.txt or .csv attachment> [mode:…] [reason:<text>]
//! /fix-status [run:<id or prefix>]
//! /cancel run:<id or prefix>
//! /diagnose user:<UPN> [public:true]
//! ```

use serde_json::{json, Value};
use serenity::all::{CommandData, CommandDataOptionValue};

pub const FIX: &str = "fix-immutable-id";
pub const STATUS: &str = "fix-status";
pub const CANCEL: &str = "cancel";
pub const DIAGNOSE: &str = "diagnose";

/// Longest text Discord lets a person type into each option (the engine keeps less of a reason).
const MAX_UPN: u16 = 256;
const MAX_ID: u16 = 64;
const MAX_REASON: u16 = 1000;
const MAX_RUN: u16 = 36;
/// Discord's own ceiling for a string option.
const MAX_LIST: u16 = 6000;

/// Where a bulk repair's users come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListSource {
    /// As typed in `users:`.
    Typed(String),
    /// The attachment id given in `file:` (looked up in the interaction's resolved data).
    File(String),
}

/// A command as typed, not yet validated beyond its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Fix {
        user: String,
        immutable_id: Option<String>,
        /// `smallest` (the default), `full` or `entra-only`; validated by the engine's parser.
        mode: Option<String>,
        reason: Option<String>,
    },
    /// A bulk repair: `users:` or `file:` instead of `user:`.
    FixBatch {
        list: ListSource,
        mode: Option<String>,
        reason: Option<String>,
    },
    Status {
        run: Option<String>,
    },
    Cancel {
        run: String,
    },
    Diagnose {
        user: String,
        /// Answer in the channel instead of only to the person.
        public: bool,
    },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Fix { .. } | Command::FixBatch { .. } => FIX,
            Command::Status { .. } => STATUS,
            Command::Cancel { .. } => CANCEL,
            Command::Diagnose { .. } => DIAGNOSE,
        }
    }
}

/// The four guild commands, as the JSON Discord documents for "Bulk Overwrite Guild
/// Application Commands". Written out rather than built with serenity's `CreateCommand`, which
/// serializes every option field for every option type (`channel_types`, `min_value` … on a
/// string option): this body is exactly what the spec describes. Guild-only (`contexts: [0]`).
pub fn definitions() -> Value {
    let text = |name: &str, desc: &str, max: u16, required: bool| json!({"type": 3, "name": name, "description": desc, "required": required, "max_length": max});
    json!([
        {
            "type": 1, "name": FIX, "contexts": [0],
            "description": "Plan an Okta → Office 365 ImmutableID repair; an approver must approve it",
            "options": [
                text("user", "The user's UPN, e.g. adele@contoso.com (or give users or file)", MAX_UPN, false),
                text("users", "Several UPNs, separated by commas, spaces or new lines (up to 500)", MAX_LIST, false),
                {"type": 11, "name": "file", "required": false,
                 "description": "A .txt (one UPN per line) or .csv (a upn column) of users to repair"},
                text("immutable_id", "A GUID or base64 ImmutableID to use; empty generates one", MAX_ID, false),
                text("reason", "Ticket or reason, shown in the plan", MAX_REASON, false),
                {"type": 3, "name": "mode", "required": false,
                 "description": "smallest (default: Entra-only when Okta's value can be kept) or full (all nine steps, new value)",
                 "choices": [
                    {"name": "smallest safe fix", "value": "smallest"},
                    {"name": "full repair with a new value", "value": "full"},
                    {"name": "Entra-only to Okta's value", "value": "entra-only"}
                 ]},
            ]
        },
        {
            "type": 1, "name": STATUS, "contexts": [0],
            "description": "Pending, running and recent repairs, or one run's steps",
            "options": [text("run", "A run id (or its first characters)", MAX_RUN, false)]
        },
        {
            "type": 1, "name": CANCEL, "contexts": [0],
            "description": "Cancel a repair that has not started executing",
            "options": [text("run", "A run id (or its first characters)", MAX_RUN, true)]
        },
        {
            "type": 1, "name": DIAGNOSE, "contexts": [0],
            "description": "Read-only: Entra and Okta side by side, a verdict and the smallest safe fix",
            "options": [
                text("user", "The user's UPN, e.g. adele@contoso.com", MAX_UPN, true),
                {"type": 5, "name": "public", "description": "Answer in the channel instead of only to you", "required": false}
            ]
        }
    ])
}

/// The string options of an interaction, by name; a boolean option (`public`) as `true`/`false`.
pub fn string_options(data: &CommandData) -> Vec<(String, String)> {
    data.options
        .iter()
        .filter_map(|o| match &o.value {
            CommandDataOptionValue::String(s) => Some((o.name.clone(), s.clone())),
            CommandDataOptionValue::Boolean(b) => Some((o.name.clone(), b.to_string())),
            // The attachment's id; its name, size and URL are in the interaction's resolved data.
            CommandDataOptionValue::Attachment(id) => Some((o.name.clone(), id.get().to_string())),
            _ => None,
        })
        .collect()
}

/// Parses a command's name and string options. The error is a sentence for the person.
pub fn parse(name: &str, options: &[(String, String)]) -> Result<Command, String> {
    let get = |key: &str| {
        options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    for (k, _) in options {
        let known: &[&str] = match name {
            FIX => &["user", "users", "file", "immutable_id", "reason", "mode"],
            DIAGNOSE => &["user", "public"],
            STATUS | CANCEL => &["run"],
            _ => &[],
        };
        if !known.contains(&k.as_str()) {
            return Err(format!(
                "unexpected option `{}`",
                super::super::render::sanitize(k, 32)
            ));
        }
    }
    match name {
        FIX => {
            let (user, users, file) = (get("user"), get("users"), get("file"));
            let given = [&user, &users, &file]
                .iter()
                .filter(|o| o.is_some())
                .count();
            if given > 1 {
                return Err(
                    "give exactly one of user (one UPN), users (a list) or file (an attachment)"
                        .into(),
                );
            }
            let list = match (user, users, file) {
                (Some(user), _, _) => {
                    return Ok(Command::Fix {
                        user,
                        immutable_id: get("immutable_id"),
                        mode: get("mode"),
                        reason: get("reason"),
                    })
                }
                (_, Some(text), _) => ListSource::Typed(text),
                (_, _, Some(id)) => ListSource::File(id),
                _ => return Err("which user? /fix-immutable-id user:<UPN>, or users:<UPNs> or file:<.txt or .csv> for several".into()),
            };
            if get("immutable_id").is_some() {
                return Err("immutable_id is for one user; a bulk repair keeps or generates each user's own value".into());
            }
            Ok(Command::FixBatch {
                list,
                mode: get("mode"),
                reason: get("reason"),
            })
        }
        STATUS => Ok(Command::Status { run: get("run") }),
        CANCEL => Ok(Command::Cancel {
            run: get("run").ok_or("which run? /cancel run:<id>")?,
        }),
        DIAGNOSE => Ok(Command::Diagnose {
            user: get("user").ok_or("which user? /diagnose user:<UPN>")?,
            public: match get("public").as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(_) => return Err("public is true or false".into()),
            },
        }),
        other => Err(format!(
            "unknown command `{}`",
            super::super::render::sanitize(other, 32)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_each_command() {
        assert_eq!(
            parse(
                FIX,
                &o(&[("user", " adele@contoso.com "), ("reason", "INC-1")])
            ),
            Ok(Command::Fix {
                user: "adele@contoso.com".into(),
                immutable_id: None,
                mode: None,
                reason: Some("INC-1".into())
            })
        );
        assert_eq!(parse(STATUS, &[]), Ok(Command::Status { run: None }));
        assert_eq!(
            parse(CANCEL, &o(&[("run", "6f1c")])),
            Ok(Command::Cancel { run: "6f1c".into() })
        );
        assert_eq!(
            parse(DIAGNOSE, &o(&[("user", "megan@contoso.com")])),
            Ok(Command::Diagnose {
                user: "megan@contoso.com".into(),
                public: false
            })
        );
        assert_eq!(
            parse(
                DIAGNOSE,
                &o(&[("user", "megan@contoso.com"), ("public", "true")])
            ),
            Ok(Command::Diagnose {
                user: "megan@contoso.com".into(),
                public: true
            })
        );
        assert!(parse(DIAGNOSE, &o(&[("user", "a@b.c"), ("public", "yes")])).is_err());
        assert!(parse(DIAGNOSE, &[]).is_err());
    }

    #[test]
    fn refuses_missing_and_unknown_options() {
        assert!(parse(FIX, &o(&[("reason", "x")])).is_err());
        assert!(parse(CANCEL, &o(&[("run", "  ")])).is_err());
        let e = parse(FIX, &o(&[("user", "a@b.c"), ("@everyone", "x")])).unwrap_err();
        assert!(!e.contains("@everyone"), "{e}");
        assert!(parse("rm-rf", &[]).is_err());
    }

    #[test]
    fn a_fix_takes_exactly_one_of_user_users_or_file() {
        assert_eq!(
            parse(FIX, &o(&[("users", "a@b.c, d@e.f"), ("reason", "INC-2")])),
            Ok(Command::FixBatch {
                list: ListSource::Typed("a@b.c, d@e.f".into()),
                mode: None,
                reason: Some("INC-2".into())
            })
        );
        assert_eq!(
            parse(FIX, &o(&[("file", "42")])),
            Ok(Command::FixBatch {
                list: ListSource::File("42".into()),
                mode: None,
                reason: None
            })
        );
        let both = parse(FIX, &o(&[("user", "a@b.c"), ("users", "d@e.f")])).unwrap_err();
        assert!(both.contains("exactly one"), "{both}");
        assert!(parse(FIX, &o(&[("users", "a@b.c"), ("file", "42")])).is_err());
        let id = parse(FIX, &o(&[("users", "a@b.c"), ("immutable_id", "x")])).unwrap_err();
        assert!(id.contains("immutable_id"), "{id}");
        assert!(parse(FIX, &o(&[("users", "  ")])).is_err());
    }

    #[test]
    fn definitions_name_four_guild_commands() {
        let names: Vec<String> = definitions()
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, [FIX, STATUS, CANCEL, DIAGNOSE]);
    }
}
