//! `Link` headers (RFC 8288) as Okta pages with them: several entries per header, commas inside
//! `<…>` or quotes.

use reqwest::header::HeaderMap;

/// The `rel="next"` target among all `Link` headers, each of which may hold several
/// comma-separated `<uri>; param=value` entries.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(link_entries)
        .find(|(_, rels)| rels.iter().any(|r| r.eq_ignore_ascii_case("next")))
        .map(|(uri, _)| uri)
}

/// `<uri>; rel="a b"; x=y, <uri2>; rel=c` → `[(uri, [a, b]), (uri2, [c])]`. Commas inside `<…>`
/// or quotes do not split entries.
fn link_entries(value: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = value;
    loop {
        let Some(start) = rest.find('<') else {
            return out;
        };
        let Some(end) = rest[start..].find('>') else {
            return out;
        };
        let uri = rest[start + 1..start + end].trim().to_owned();
        rest = &rest[start + end + 1..];
        // Parameters run until the next comma outside quotes.
        let mut in_quotes = false;
        let mut cut = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    cut = i;
                    break;
                }
                _ => {}
            }
        }
        let params = &rest[..cut];
        rest = &rest[cut..];
        let rels = params
            .split(';')
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("rel")
                    .then(|| v.trim().trim_matches('"').to_owned())
            })
            .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        out.push((uri, rels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_with_several_entries() {
        let mut h = HeaderMap::new();
        h.append(
            "link",
            r#"<https://x.okta.com/api/v1/users?limit=2>; rel="self", <https://x.okta.com/api/v1/users?after=a,b&limit=2>; rel="next""#
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://x.okta.com/api/v1/users?after=a,b&limit=2")
        );
        let mut h = HeaderMap::new();
        h.append("link", "<https://x/a>; rel=\"self\"".parse().unwrap());
        assert_eq!(next_link(&h), None);
        h.append(
            "link",
            "<https://x/b>; title=\"a, b\"; rel=next".parse().unwrap(),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://x/b"));
        let mut h = HeaderMap::new();
        h.append("link", "<https://x/c>; rel=\"prev next\"".parse().unwrap());
        assert_eq!(next_link(&h).as_deref(), Some("https://x/c"));
    }
}
