//! The notification log (`/admin/notifications`): every raw notification, filtered by
//! provider, verdict, reason code, order and time, newest first; and each one's page
//! with its headers and body, escaped and pretty-printed.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::orders::Choice;
use super::{iso, local_time, render, AdminError, Base, SignedIn};
use crate::db::logs::{self, NotificationEntry, NotificationFilter};
use crate::domain::admin::Permission;
use crate::domain::{OrderId, ProviderKind, Verdict};
use crate::http::i18n::Lang;
use crate::http::state::AppState;
use crate::service::export::parse_bound;
use crate::service::notifications::KEPT_UNVERIFIED_BODY;

pub const PAGE_SIZE: u32 = 50;

/// A list filter as typed: kept to show again, with what was wrong in it.
#[derive(Debug, Clone, Default)]
pub struct LogParams {
    pub provider: String,
    pub verdict: String,
    pub reason: String,
    pub order: String,
    pub from: String,
    pub to: String,
    pub before: Option<i64>,
}

pub fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.trim().to_owned()))
        .collect()
}

impl LogParams {
    fn parse(req: &HttpRequest) -> LogParams {
        let mut p = LogParams::default();
        for (k, v) in query_pairs(req) {
            match k.as_str() {
                "provider" => p.provider = v,
                "verdict" => p.verdict = v,
                "reason" => p.reason = v,
                "order" => p.order = v,
                "from" => p.from = v,
                "to" => p.to = v,
                "before" => p.before = v.parse().ok(),
                _ => {}
            }
        }
        p
    }

    fn canonical(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("provider", &self.provider),
            ("verdict", &self.verdict),
            ("reason", &self.reason),
            ("order", &self.order),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if !v.is_empty() {
                out.append_pair(k, v);
            }
        }
        out.finish()
    }

    fn filter(&self, tz: chrono_tz::Tz, base: &Base) -> Result<NotificationFilter, Vec<String>> {
        let mut problems = Vec::new();
        let mut bad = |what: &str| {
            problems.push(format!(
                "{} {what:?}",
                base.tr("Not a valid choice:", "无效的选项：")
            ))
        };
        let provider = optional::<ProviderKind>(&self.provider, &mut bad);
        let verdict = optional::<Verdict>(&self.verdict, &mut bad);
        let reason_ok =
            self.reason.len() <= 40 && self.reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !reason_ok {
            bad(&self.reason);
        }
        let order_id = match self.order.as_str() {
            "" => None,
            o => OrderId::parse(o).map_err(|_| bad(o)).ok(),
        };
        let from = bound(&self.from, tz, false, &mut bad);
        let before = bound(&self.to, tz, true, &mut bad);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(NotificationFilter {
            provider,
            verdict,
            reason_code: Some(self.reason.clone()).filter(|r| !r.is_empty()),
            from,
            before,
            order_id,
            before_id: self.before,
        })
    }
}

pub struct NotificationRow {
    pub id: i64,
    pub received: String,
    pub received_iso: String,
    pub provider: &'static str,
    pub verdict: &'static str,
    pub verdict_class: &'static str,
    pub reason_code: String,
    pub reason: String,
    pub order_id: String,
}

pub fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Applied => "st-paid",
        Verdict::Duplicate | Verdict::Ignored => "st-closed",
        Verdict::Rejected | Verdict::Error => "st-refunded",
    }
}

fn row(n: &NotificationEntry, tz: chrono_tz::Tz, base: &Base) -> NotificationRow {
    NotificationRow {
        id: n.id,
        received: local_time(n.received_at, tz),
        received_iso: iso(n.received_at),
        provider: base.t.provider_name(n.provider),
        verdict: n.verdict.as_str(),
        verdict_class: verdict_class(n.verdict),
        reason_code: n.reason_code.clone().unwrap_or_default(),
        reason: n.reason.clone().unwrap_or_default(),
        order_id: n.order_id.as_ref().map(ToString::to_string).unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "admin/notifications.html")]
struct ListPage {
    base: Base,
    f: LogParams,
    providers: Vec<Choice>,
    verdicts: Vec<Choice>,
    problems: Vec<String>,
    rows: Vec<NotificationRow>,
    next_url: Option<String>,
    first_url: Option<String>,
}

/// A filter field that is empty (no filter) or must parse; a bad value is reported.
pub(super) fn optional<T: std::str::FromStr>(text: &str, bad: &mut impl FnMut(&str)) -> Option<T> {
    if text.is_empty() {
        return None;
    }
    text.parse().map_err(|_| bad(text)).ok()
}

/// A date or time bound typed in the merchant's zone (`end`: the end of that day for a
/// bare date), or none when empty; a bad value is reported.
pub(super) fn bound(
    text: &str,
    tz: chrono_tz::Tz,
    end: bool,
    bad: &mut impl FnMut(&str),
) -> Option<chrono::DateTime<chrono::Utc>> {
    if text.is_empty() {
        return None;
    }
    parse_bound(text, tz, end).map_err(|_| bad(text)).ok()
}

pub async fn list_notifications(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(&req, Some(&staff.0));
    staff.require(Permission::Read, base.lang)?;
    let f = LogParams::parse(&req);
    let tz = state.settings.merchant.timezone;
    let providers = Choice::any_then(
        base.t.any_provider,
        &f.provider,
        ProviderKind::ALL
            .iter()
            .map(|p| (p.as_str(), base.t.provider_name(*p))),
    );
    let verdicts = Choice::any_then(
        base.tr("Any verdict", "任意结论"),
        &f.verdict,
        Verdict::ALL.iter().map(|v| (v.as_str(), v.as_str())),
    );
    let filter = f.filter(tz, &base);
    let mut page = ListPage {
        base,
        f: f.clone(),
        providers,
        verdicts,
        problems: Vec::new(),
        rows: Vec::new(),
        next_url: None,
        first_url: f.before.map(|_| list_url(&f, None)),
    };
    let filter = match filter {
        Ok(q) => q,
        Err(problems) => {
            page.problems = problems;
            return render(&page, &page.base, StatusCode::UNPROCESSABLE_ENTITY);
        }
    };
    let found = state
        .db
        .read(move |tx| logs::notifications(tx, &filter, PAGE_SIZE + 1))
        .await
        .map_err(|e| AdminError::internal(page.base.lang, &e))?;
    let more = found.len() > PAGE_SIZE as usize;
    let shown = &found[..found.len().min(PAGE_SIZE as usize)];
    page.next_url = shown.last().filter(|_| more).map(|n| list_url(&f, Some(n.id)));
    page.rows = shown.iter().map(|n| row(n, tz, &page.base)).collect();
    render(&page, &page.base, StatusCode::OK)
}

fn list_url(f: &LogParams, before: Option<i64>) -> String {
    let mut q = f.canonical();
    if let Some(id) = before {
        if !q.is_empty() {
            q.push('&');
        }
        q.push_str(&format!("before={id}"));
    }
    if q.is_empty() {
        "/admin/notifications".to_owned()
    } else {
        format!("/admin/notifications?{q}")
    }
}

/// A body as people read it: JSON indented, a form one parameter a line, anything
/// else as it came. (The template escapes it.)
pub fn pretty_body(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        return serde_json::to_string_pretty(&v).unwrap_or_else(|_| body.to_owned());
    }
    if body.contains('=') && !body.contains('\n') {
        return url::form_urlencoded::parse(body.as_bytes())
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join("\n");
    }
    body.to_owned()
}

/// Headers stored as a JSON object, one a line.
pub fn pretty_headers(headers: &str) -> String {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(headers) {
        Ok(map) => map
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}: {}",
                    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(_) => headers.to_owned(),
    }
}

#[derive(Template)]
#[template(path = "admin/notification.html")]
struct DetailPage {
    base: Base,
    n: NotificationRow,
    remote_addr: String,
    headers: String,
    body: String,
    raw: String,
    /// What was kept of a body stored in part, with the whole one's size and hash.
    kept: Option<String>,
}

/// For a row that failed verification: how much of its body was kept ("first 2,048 of
/// 31,000 bytes") and the whole body's SHA-256, which a flood's copies share.
fn kept_note(n: &NotificationEntry, lang: Lang) -> Option<String> {
    let length = n.body_length?;
    let sha = n.body_sha256.as_deref().unwrap_or("");
    let kept = length.min(i64::try_from(KEPT_UNVERIFIED_BODY).unwrap_or(i64::MAX));
    let (kept, length) = (thousands(kept), thousands(length));
    Some(match (lang, kept == length) {
        (Lang::En, false) => {
            format!(
                "Not verified: only the first {kept} of {length} bytes are kept. SHA-256 of all of it: {sha}"
            )
        }
        (Lang::En, true) => format!("Not verified: all {length} bytes are kept. SHA-256: {sha}"),
        (_, false) => {
            format!("未通过验证：仅保存前 {kept} 字节（共 {length} 字节）。全部内容的 SHA-256：{sha}")
        }
        (_, true) => format!("未通过验证：已保存全部 {length} 字节。SHA-256：{sha}"),
    })
}

/// 31000 as "31,000".
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

pub async fn show_notification(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    path: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(&req, Some(&staff.0));
    staff.require(Permission::Read, base.lang)?;
    let missing = || AdminError::NotFound(base.lang, base.tr("No such notification.", "没有这条通知。"));
    let id: i64 = path.parse().map_err(|_| missing())?;
    let Some(n) = state
        .db
        .read(move |tx| logs::notification_by_id(tx, id))
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?
    else {
        return Err(missing());
    };
    let tz = state.settings.merchant.timezone;
    let page = DetailPage {
        n: row(&n, tz, &base),
        remote_addr: n.remote_addr.clone().unwrap_or_default(),
        headers: pretty_headers(&n.headers),
        body: pretty_body(&n.body),
        raw: n.body.clone(),
        kept: kept_note(&n, base.lang),
        base,
    };
    render(&page, &page.base, StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_headers_are_laid_out_one_item_a_line() {
        assert_eq!(pretty_body("a=1&b=%E4%BD%A0"), "a = 1\nb = 你");
        assert_eq!(pretty_body("{\"a\":1}"), "{\n  \"a\": 1\n}");
        assert_eq!(pretty_body("plain"), "plain");
        assert_eq!(pretty_headers("{\"x\":\"1\",\"y\":\"<b>\"}"), "x: 1\ny: <b>");
    }

    #[test]
    fn byte_counts_are_grouped_by_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(2048), "2,048");
        assert_eq!(thousands(31000), "31,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
