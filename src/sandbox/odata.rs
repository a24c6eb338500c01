//! The slice of OData Graph's user queries need: `$select`, and `$filter` with one `eq` clause.

/// User properties: (name, returned without `$select`).
pub(crate) const USER_PROPS: &[(&str, bool)] = &[
    ("id", true),
    ("businessPhones", true),
    ("displayName", true),
    ("givenName", true),
    ("jobTitle", true),
    ("mail", true),
    ("mobilePhone", true),
    ("officeLocation", true),
    ("preferredLanguage", true),
    ("surname", true),
    ("userPrincipalName", true),
    ("accountEnabled", false),
    ("assignedLicenses", false),
    ("createdDateTime", false),
    ("department", false),
    ("onPremisesImmutableId", false),
    ("onPremisesSyncEnabled", false),
    ("otherMails", false),
    ("proxyAddresses", false),
    ("usageLocation", false),
];

/// `$select=a,b`: the canonical property names, or the first unknown one.
pub(crate) fn parse_select(raw: &str) -> Result<Vec<&'static str>, String> {
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match USER_PROPS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(item))
        {
            Some((n, _)) => {
                if !out.contains(n) {
                    out.push(*n)
                }
            }
            None => return Err(item.to_owned()),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterProp {
    UserPrincipalName,
    OnPremisesImmutableId,
}

impl FilterProp {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::UserPrincipalName => "userPrincipalName",
            Self::OnPremisesImmutableId => "onPremisesImmutableId",
        }
    }

    /// Needs `ConsistencyLevel: eventual` and `$count=true`.
    pub(crate) fn is_advanced(self) -> bool {
        matches!(self, Self::OnPremisesImmutableId)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    pub prop: FilterProp,
    pub literal: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FilterError {
    /// Well-formed, but not a clause the sandbox (and this repair) supports on this property.
    Unsupported(String),
    /// Not parseable.
    Syntax(String),
}

/// `<property> eq '<literal>'`, the literal with `''` for `'`.
pub(crate) fn parse_filter(raw: &str) -> Result<Filter, FilterError> {
    let s = raw.trim();
    let ident_len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '/' || c == '_'))
        .unwrap_or(s.len());
    let ident = &s[..ident_len];
    if ident.is_empty() {
        return Err(FilterError::Syntax(raw.to_owned()));
    }
    let rest = &s[ident_len..];
    if rest.starts_with('(') {
        return Err(FilterError::Unsupported(ident.to_owned()));
    }
    let prop = if ident.eq_ignore_ascii_case("userPrincipalName") {
        FilterProp::UserPrincipalName
    } else if ident.eq_ignore_ascii_case("onPremisesImmutableId") {
        FilterProp::OnPremisesImmutableId
    } else {
        return Err(FilterError::Unsupported(ident.to_owned()));
    };
    let after_ws = rest.trim_start();
    if after_ws.len() == rest.len() {
        return Err(FilterError::Syntax(raw.to_owned()));
    }
    let Some(after_eq) = after_ws.strip_prefix("eq") else {
        return Err(FilterError::Unsupported(prop.name().to_owned()));
    };
    let lit_start = after_eq.trim_start();
    if lit_start.len() == after_eq.len() {
        return Err(FilterError::Syntax(raw.to_owned()));
    }
    let Some(body) = lit_start.strip_prefix('\'') else {
        return Err(FilterError::Syntax(raw.to_owned()));
    };
    let mut literal = String::new();
    let mut chars = body.char_indices().peekable();
    let mut end = None;
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if matches!(chars.peek(), Some((_, '\''))) {
                chars.next();
                literal.push('\'');
            } else {
                end = Some(i + 1);
                break;
            }
        } else {
            literal.push(c);
        }
    }
    let Some(end) = end else {
        return Err(FilterError::Syntax(raw.to_owned()));
    };
    if !body[end..].trim().is_empty() {
        return Err(FilterError::Unsupported(prop.name().to_owned()));
    }
    Ok(Filter { prop, literal })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_unescapes_doubled_quote() {
        let f = parse_filter("userPrincipalName eq 'o''brien@contoso.com'").unwrap();
        assert_eq!(f.prop, FilterProp::UserPrincipalName);
        assert_eq!(f.literal, "o'brien@contoso.com");
        let f = parse_filter(" onPremisesImmutableId  eq  'ab+c/d=='  ").unwrap();
        assert_eq!(f.literal, "ab+c/d==");
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "userPrincipalName eq 'a' or 1 eq 1",
            "userPrincipalName eq 'o'brien'",
            "startswith(userPrincipalName,'a')",
            "mail eq 'a'",
            "userPrincipalName ne 'a'",
            "userPrincipalName eq 'a",
            "userPrincipalName eq a",
            "userPrincipalNameeq'a'",
            "",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn select_is_canonical_and_strict() {
        assert_eq!(
            parse_select("id,onpremisesimmutableid").unwrap(),
            ["id", "onPremisesImmutableId"]
        );
        assert_eq!(parse_select("id,nope").unwrap_err(), "nope");
    }
}
