//! A list of users for a bulk repair, as typed (comma, space or newline separated) or attached
//! (`.txt`: one UPN per line; `.csv`: a `upn` column, else the first column). Every entry is
//! accounted for: valid, duplicate or malformed, never silently dropped.

use super::{strip_invisible, Upn};

/// Most users one batch may hold.
pub const MAX_USERS: usize = 500;
/// Largest attachment read (500 UPNs of 113 characters and a few columns fit easily).
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// Most lines an attachment may have (a header, the users, some blank lines).
pub const MAX_LINES: usize = 2_000;
/// Longest line of an attachment.
pub const MAX_LINE_CHARS: usize = 2_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("the list names no user; give UPNs separated by commas, spaces or new lines")]
    Empty,
    #[error("the list names {count} distinct users; a batch holds at most {MAX_USERS}: split it")]
    TooMany { count: usize },
    #[error("the file is {bytes} bytes; at most {MAX_FILE_BYTES} are read: split it")]
    FileTooLarge { bytes: usize },
    #[error("the file has {lines} lines; at most {MAX_LINES} are read: split it")]
    TooManyLines { lines: usize },
    #[error("line {line} is {chars} characters long; at most {MAX_LINE_CHARS} are read")]
    LineTooLong { line: usize, chars: usize },
    #[error("the file is not UTF-8 text; save it as UTF-8 (.txt or .csv)")]
    NotText,
    #[error("`{0}` is not a .txt or .csv file")]
    Kind(String),
    #[error("the CSV has a `upn` column header but no rows")]
    HeaderOnly,
}

/// An entry that is not a user to repair, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based position in the list (line number for a file).
    pub at: usize,
    pub text: String,
    pub why: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserList {
    /// Valid and distinct (case-insensitively), in the order first given.
    pub users: Vec<Upn>,
    pub duplicates: Vec<Rejected>,
    pub malformed: Vec<Rejected>,
}

impl UserList {
    /// Entries as typed in a command option.
    pub fn parse_text(text: &str) -> Result<Self, ListError> {
        let entries = text
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, s)| (i + 1, s.to_owned()));
        Self::collect(entries)
    }

    /// An attachment, by its file name and bytes.
    pub fn parse_file(name: &str, bytes: &[u8]) -> Result<Self, ListError> {
        if bytes.len() > MAX_FILE_BYTES {
            return Err(ListError::FileTooLarge { bytes: bytes.len() });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| ListError::NotText)?;
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() > MAX_LINES {
            return Err(ListError::TooManyLines { lines: lines.len() });
        }
        if let Some((i, l)) = lines
            .iter()
            .enumerate()
            .find(|(_, l)| l.chars().count() > MAX_LINE_CHARS)
        {
            return Err(ListError::LineTooLong {
                line: i + 1,
                chars: l.chars().count(),
            });
        }
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Self::parse_csv(&lines)
        } else if lower.ends_with(".txt") {
            Self::collect(
                lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (i + 1, l.trim().to_owned()))
                    .filter(|(_, l)| !l.is_empty() && !l.starts_with('#')),
            )
        } else {
            Err(ListError::Kind(cap(&strip_invisible(name), 64)))
        }
    }

    /// The `upn` column (any case, also `userPrincipalName`), else the first column; fields may
    /// be quoted with `"` (a quoted field holds no newline in a list of UPNs).
    fn parse_csv(lines: &[&str]) -> Result<Self, ListError> {
        let mut rows = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (i + 1, split_csv(l)));
        let Some((first_at, header)) = rows.next() else {
            return Err(ListError::Empty);
        };
        let column = header.iter().position(|h| {
            let h = h.trim().to_ascii_lowercase();
            h == "upn" || h == "userprincipalname"
        });
        let (column, first) = match column {
            Some(c) => (c, None),
            // No header: the first line is a row like the others.
            None => (0, Some((first_at, header))),
        };
        let entries: Vec<(usize, String)> = first
            .into_iter()
            .chain(rows)
            .map(|(at, fields)| (at, fields.get(column).cloned().unwrap_or_default()))
            .collect();
        if entries.is_empty() {
            return Err(ListError::HeaderOnly);
        }
        Self::collect(entries.into_iter())
    }

    fn collect(entries: impl Iterator<Item = (usize, String)>) -> Result<Self, ListError> {
        let mut list = UserList::default();
        let mut seen = std::collections::HashSet::new();
        for (at, raw) in entries {
            let text = strip_invisible(raw.trim());
            // As typed (bounded); whoever shows it to people sanitizes it for their medium.
            let shown = cap(&text, 120);
            match Upn::parse(&text) {
                Ok(u) if !seen.insert(u.clone()) => list.duplicates.push(Rejected {
                    at,
                    text: shown,
                    why: "listed before".into(),
                }),
                Ok(u) => list.users.push(u),
                Err(e) => list.malformed.push(Rejected {
                    at,
                    text: shown,
                    why: e.to_string(),
                }),
            }
        }
        if list.users.len() > MAX_USERS {
            return Err(ListError::TooMany {
                count: list.users.len(),
            });
        }
        if list.users.is_empty() && list.malformed.is_empty() {
            return Err(ListError::Empty);
        }
        Ok(list)
    }
}

fn cap(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// One CSV line's fields: commas separate, `"…"` quotes (with `""` for a quote inside).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_lists_keep_order_and_account_for_every_entry() {
        let l = UserList::parse_text("a@x.com, b@x.com\nA@X.com;  not-a-upn c@x.com").unwrap();
        let users: Vec<&str> = l.users.iter().map(Upn::as_str).collect();
        assert_eq!(users, ["a@x.com", "b@x.com", "c@x.com"]);
        assert_eq!(l.duplicates.len(), 1);
        assert_eq!(l.duplicates[0].at, 3);
        assert_eq!(l.malformed.len(), 1);
        assert!(l.malformed[0].why.contains("no `@`"), "{:?}", l.malformed);
        assert_eq!(UserList::parse_text(" ,\n "), Err(ListError::Empty));
    }

    #[test]
    fn a_csv_takes_the_upn_column_and_quotes() {
        let csv = "\u{FEFF}name,UPN,ticket\n\"Vance, Adele\",adele@contoso.com,INC-1\nMegan,\"megan@contoso.com\",\n\nx,,y\n";
        let l = UserList::parse_file("broken.CSV", csv.as_bytes()).unwrap();
        let users: Vec<&str> = l.users.iter().map(Upn::as_str).collect();
        assert_eq!(users, ["adele@contoso.com", "megan@contoso.com"]);
        assert_eq!(l.malformed.len(), 1, "an empty cell is reported");
        assert_eq!(l.malformed[0].at, 5, "by its line");
        let plain = UserList::parse_file("u.csv", b"adele@contoso.com\nmegan@contoso.com").unwrap();
        assert_eq!(plain.users.len(), 2, "no header: the first column");
        assert_eq!(
            UserList::parse_file("u.csv", b"upn\n"),
            Err(ListError::HeaderOnly)
        );
    }

    #[test]
    fn files_are_bounded_before_they_are_read() {
        let big = vec![b'a'; MAX_FILE_BYTES + 1];
        assert!(matches!(
            UserList::parse_file("u.txt", &big),
            Err(ListError::FileTooLarge { .. })
        ));
        assert_eq!(
            UserList::parse_file("u.txt", &[0xff, 0xfe]),
            Err(ListError::NotText)
        );
        assert!(matches!(
            UserList::parse_file("u.xlsx", b"a@x.com"),
            Err(ListError::Kind(_))
        ));
        let many: String = (0..=MAX_USERS).map(|n| format!("u{n}@x.com\n")).collect();
        assert_eq!(
            UserList::parse_file("u.txt", many.as_bytes()),
            Err(ListError::TooMany {
                count: MAX_USERS + 1
            })
        );
        let lines = "\n".repeat(MAX_LINES + 1);
        assert!(matches!(
            UserList::parse_file("u.txt", lines.as_bytes()),
            Err(ListError::TooManyLines { .. })
        ));
    }
}
