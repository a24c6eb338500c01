//! Okta's cursor pagination: `limit` and `after`, with `Link` headers for `self` and `next`.

use serde_json::Value;

use super::reply::{Ctx, Reply};

/// One page of `items` (each with its cursor id) and the `Link` headers for it, or `None` when
/// `limit` is not a number.
pub(crate) fn page(
    items: Vec<(String, Value)>,
    ctx: &Ctx,
    okta_base: &str,
    default_limit: usize,
    max_limit: usize,
) -> Option<Reply> {
    let limit = match ctx.param("limit") {
        None => default_limit,
        Some(l) => match l.trim().parse::<i64>() {
            Ok(n) if n <= 0 => default_limit,
            Ok(n) => (n as usize).min(max_limit),
            Err(_) => return None,
        },
    };
    let start = match ctx.param("after") {
        None | Some("") => 0,
        Some(after) => match items.iter().position(|(id, _)| id == after) {
            Some(p) => p + 1,
            None => items.len(),
        },
    };
    let more = start + limit < items.len();
    let next_cursor = items
        .get((start + limit).min(items.len()).saturating_sub(1))
        .map(|(id, _)| id.clone());
    let body: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|(_, v)| v)
        .collect();
    let base = format!("{okta_base}{}", ctx.rel_path);
    let self_link = match &ctx.raw_query {
        Some(q) if !q.is_empty() => format!("{base}?{q}"),
        _ => base.clone(),
    };
    let mut reply = Reply::json(200, Value::Array(body))
        .with_header("link", format!("<{self_link}>; rel=\"self\""));
    if let (true, Some(cursor)) = (more, next_cursor) {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in ctx
            .query
            .iter()
            .filter(|(k, _)| k != "after" && k != "limit")
        {
            q.append_pair(k, v);
        }
        q.append_pair("after", &cursor);
        q.append_pair("limit", &limit.to_string());
        reply = reply.with_header("link", format!("<{base}?{}>; rel=\"next\"", q.finish()));
    }
    Some(reply)
}
