//! One order (`/admin/orders/{id}`): every field, the checkout link and QR code while
//! payable, the actions its status allows, its refunds, and one timeline of
//! everything that happened to it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::texts::{fill, AdminTexts};
use super::{iso, local_time, money, render, AdminError, Badge, Base, SignedIn};
use crate::db::audit::{self, AuditEntry};
use crate::db::history::{self, HistoryEntry, HistoryOutcome};
use crate::db::provider_calls::{self, CallRecord};
use crate::db::refunds::{self, Refund};
use crate::db::timeline::{self, Delivery, Field, RawRow};
use crate::db::{orders, DbResult, Tx};
use crate::domain::admin::Permission;
use crate::domain::provider_call::CallOutcome;
use crate::domain::{Order, OrderId, OrderStatus, OutboxStatus, RefundStatus};
use crate::http::qr;
use crate::http::state::AppState;
use crate::service::admin::Staff;

/// Everything the page shows, read in one go.
pub struct Story {
    pub order: Order,
    pub history: Vec<HistoryEntry>,
    pub notifications: Vec<RawRow>,
    pub calls: Vec<CallRecord>,
    pub deliveries: Vec<Delivery>,
    pub audit: Vec<AuditEntry>,
    pub refunds: Vec<Refund>,
}

impl Story {
    pub fn read(tx: &Tx<'_>, id: &OrderId) -> DbResult<Option<Story>> {
        let Some(order) = orders::find_by_id(tx, id)? else {
            return Ok(None);
        };
        Ok(Some(Story {
            history: history::list_for_order(tx, id)?,
            notifications: timeline::notifications_for_order(tx, id)?,
            calls: provider_calls::list_for_order(tx, id)?,
            deliveries: timeline::deliveries_for_order(tx, id)?,
            audit: audit::list_for_order(tx, id)?,
            refunds: refunds::list_for_order(tx, id)?,
            order,
        }))
    }

    /// What may still be refunded: the amount less succeeded and pending refunds.
    pub fn refundable(&self) -> i64 {
        let pending: i64 = self
            .refunds
            .iter()
            .filter(|r| r.status == RefundStatus::Pending)
            .map(|r| r.amount)
            .sum();
        (self.order.amount.minor() - self.order.refunded_amount - pending).max(0)
    }
}

/// Which actions the order's status allows (and the role permits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    pub close: bool,
    pub refund: bool,
    pub query: bool,
}

impl Allowed {
    pub fn of(story: &Story, staff: &Staff) -> Allowed {
        let status = story.order.status;
        let acts = staff.role.may_act_on_orders();
        Allowed {
            close: acts && status == OrderStatus::Pending,
            refund: acts && status.is_refundable() && story.refundable() > 0,
            query: acts && matches!(status, OrderStatus::Pending | OrderStatus::Closed),
        }
    }
}

/// Whether a delivery may be queued again (it is not being sent or waiting to be).
pub fn resendable(status: OutboxStatus) -> bool {
    matches!(
        status,
        OutboxStatus::Failed | OutboxStatus::Delivered | OutboxStatus::Skipped
    )
}

pub struct Fact {
    pub label: &'static str,
    pub value: String,
    pub mono: bool,
}

impl Fact {
    fn text(label: &'static str, value: impl Into<String>) -> Fact {
        Fact {
            label,
            value: value.into(),
            mono: false,
        }
    }

    fn mono(label: &'static str, value: impl Into<String>) -> Fact {
        Fact {
            label,
            value: value.into(),
            mono: true,
        }
    }
}

/// A stored text shown as preformatted, pretty-printed when it is JSON or a form.
pub struct Block {
    pub label: &'static str,
    pub text: String,
}

pub struct AttemptView {
    pub when: String,
    pub url: String,
    pub result: String,
    pub ok: bool,
    pub latency: String,
    pub response: String,
}

pub struct EntryBadge {
    pub class: &'static str,
    pub word: String,
}

/// One thing that happened, as the timeline shows it.
pub struct Entry {
    at: DateTime<Utc>,
    rank: u8,
    seq: i64,
    pub anchor: String,
    pub when: String,
    pub when_iso: String,
    pub kind: &'static str,
    pub title: String,
    pub badge: Option<EntryBadge>,
    pub facts: Vec<Fact>,
    pub blocks: Vec<Block>,
    pub attempts: Option<Vec<AttemptView>>,
    /// The delivery's webhook-id, when staff may re-send it.
    pub resend: Option<String>,
}

impl Entry {
    fn new(at: DateTime<Utc>, rank: u8, seq: i64, kind: &'static str, title: String, tz: Tz) -> Entry {
        Entry {
            at,
            rank,
            seq,
            anchor: format!("{kind}-{seq}"),
            when: local_time(at, tz),
            when_iso: iso(at),
            kind,
            title,
            badge: None,
            facts: Vec::new(),
            blocks: Vec::new(),
            attempts: None,
            resend: None,
        }
    }

    fn badge(mut self, class: &'static str, word: impl Into<String>) -> Entry {
        self.badge = Some(EntryBadge {
            class,
            word: word.into(),
        });
        self
    }
}

/// JSON pretty-printed, a form body as one `name = value` line per field (decoded),
/// anything else as it is. The page escapes it.
pub fn pretty(text: &str) -> String {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        if value.is_object() || value.is_array() {
            if let Ok(p) = serde_json::to_string_pretty(&value) {
                return p;
            }
        }
    }
    let looks_like_form = text.contains('=')
        && !text.contains(char::is_whitespace)
        && text.split('&').all(|pair| pair.contains('='));
    if looks_like_form {
        return url::form_urlencoded::parse(text.as_bytes())
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join("\n");
    }
    text.to_owned()
}

fn field<'a>(row: &'a RawRow, name: &str) -> Option<&'a Field> {
    row.iter().find(|(n, _)| n == name).map(|(_, f)| f)
}

fn field_text(f: &Field) -> String {
    match f {
        Field::Null => String::new(),
        Field::Integer(i) => i.to_string(),
        Field::Real(r) => r.to_string(),
        Field::Text(t) => t.clone(),
    }
}

/// Columns of a notification the entry shows in its own way.
const KNOWN_NOTIFICATION_COLUMNS: &[&str] = &[
    "id",
    "provider",
    "received_at",
    "remote_addr",
    "headers",
    "body",
    "order_id",
    "verdict",
    "reason",
    "reason_code",
];

fn verdict_class(verdict: &str) -> &'static str {
    match verdict {
        "applied" => "ok",
        "duplicate" | "ignored" | "received" => "neutral",
        _ => "bad",
    }
}

fn notification_entry(row: &RawRow, tz: Tz, t: &AdminTexts) -> Option<Entry> {
    let id = field(row, "id")?.as_i64()?;
    let at = DateTime::from_timestamp_millis(field(row, "received_at")?.as_i64()?)?;
    let provider = field(row, "provider").map(field_text).unwrap_or_default();
    let verdict = field(row, "verdict").map(field_text).unwrap_or_default();
    // The verdict and, where the pipeline stores one, its reason code ("rejected: bad_signature").
    let word = match field(row, "reason_code")
        .map(field_text)
        .filter(|c| !c.is_empty())
    {
        Some(code) => format!("{}: {code}", t.word(&verdict)),
        None => t.word(&verdict).to_owned(),
    };
    let mut entry = Entry::new(
        at,
        3,
        id,
        "notification",
        format!("{} · {provider}", t.ev_notification),
        tz,
    )
    .badge(verdict_class(&verdict), word);
    if let Some(reason) = field(row, "reason").map(field_text).filter(|r| !r.is_empty()) {
        entry.facts.push(Fact::text(t.reason, reason));
    }
    if let Some(addr) = field(row, "remote_addr")
        .map(field_text)
        .filter(|a| !a.is_empty())
    {
        entry.facts.push(Fact::mono(t.from_address, addr));
    }
    // Whatever else the notify pipeline stores about a notification (a reason code, a
    // detail, its dedupe key …), by column name.
    for (name, value) in row {
        if KNOWN_NOTIFICATION_COLUMNS.contains(&name.as_str()) || *value == Field::Null {
            continue;
        }
        entry.facts.push(Fact {
            label: "",
            value: format!("{name}: {}", field_text(value)),
            mono: true,
        });
    }
    if let Some(headers) = field(row, "headers").map(field_text) {
        entry.blocks.push(Block {
            label: t.headers,
            text: pretty(&headers),
        });
    }
    if let Some(body) = field(row, "body").map(field_text) {
        entry.blocks.push(Block {
            label: t.body,
            text: pretty(&body),
        });
    }
    Some(entry)
}

fn transition_entry(h: &HistoryEntry, tz: Tz, t: &AdminTexts) -> Entry {
    let applied = h.outcome == HistoryOutcome::Applied;
    let title = format!(
        "{}: {} → {}",
        if applied { t.ev_transition } else { t.ev_refused },
        t.status(h.from),
        t.status(h.to)
    );
    let mut entry = Entry::new(h.at, 4, h.id, "transition", title, tz)
        .badge(if applied { "ok" } else { "bad" }, t.word(h.outcome.as_str()));
    entry.facts.push(Fact::mono(t.source, h.source.as_str()));
    entry.facts.push(Fact::text(t.actor, h.actor.clone()));
    if let Some(detail) = &h.detail {
        entry.facts.push(Fact::text(t.detail, detail.clone()));
    }
    if let Some(n) = h.notification_id {
        entry.facts.push(Fact::mono(t.ev_notification, format!("#{n}")));
    }
    entry
}

fn call_entry(c: &CallRecord, tz: Tz, t: &AdminTexts) -> Entry {
    let class = match c.outcome {
        CallOutcome::Ok => "ok",
        CallOutcome::Rejected => "bad",
        CallOutcome::Unknown => "warn",
    };
    let title = format!("{} · {} {}", t.ev_call, t.provider_name(c.provider), c.call);
    let mut entry = Entry::new(c.at, 2, c.id, "call", title, tz).badge(class, t.word(c.outcome.as_str()));
    if let Some(detail) = &c.detail {
        entry.facts.push(Fact::text(t.detail, detail.clone()));
    }
    entry
}

fn delivery_entry(d: &Delivery, seq: i64, may_act: bool, tz: Tz, t: &AdminTexts) -> Entry {
    let class = match d.status {
        OutboxStatus::Delivered => "ok",
        OutboxStatus::Failed => "bad",
        OutboxStatus::Pending | OutboxStatus::Delivering | OutboxStatus::Skipped => "neutral",
    };
    let title = format!("{} · {}", t.ev_webhook, d.event_type);
    let mut entry =
        Entry::new(d.created_at, 5, seq, "webhook", title, tz).badge(class, t.word(d.status.as_str()));
    entry.facts.push(Fact::mono("webhook-id", d.event_id.clone()));
    if matches!(d.status, OutboxStatus::Pending) {
        entry
            .facts
            .push(Fact::text(t.next_attempt, local_time(d.next_attempt_at, tz)));
    }
    if let Some(e) = &d.last_error {
        entry.facts.push(Fact::text(t.detail, e.clone()));
    }
    entry.attempts = Some(
        d.attempts
            .iter()
            .map(|a| {
                let ok = a.http_status.is_some_and(|s| (200..300).contains(&s));
                let result = match (a.http_status, &a.error) {
                    (Some(s), None) => format!("HTTP {s}"),
                    (Some(s), Some(e)) => format!("HTTP {s}: {e}"),
                    (None, Some(e)) => e.clone(),
                    (None, None) => String::new(),
                };
                AttemptView {
                    when: local_time(a.at, tz),
                    url: a.url.clone(),
                    result,
                    ok,
                    latency: format!("{} ms", a.latency_ms),
                    response: a.response.as_deref().map(pretty).unwrap_or_default(),
                }
            })
            .collect(),
    );
    entry.resend = (may_act && resendable(d.status)).then(|| d.event_id.clone());
    entry
}

fn audit_entry(a: &AuditEntry, tz: Tz, t: &AdminTexts) -> Entry {
    let class = match a.outcome.as_str() {
        "done" => "ok",
        "refused" | "failed" => "bad",
        _ => "neutral",
    };
    let mut entry = Entry::new(
        a.at,
        1,
        a.id,
        "admin",
        format!("{} · {}", t.ev_admin, a.action),
        tz,
    )
    .badge(class, t.word(&a.outcome));
    entry.facts.push(Fact::text(t.actor, a.actor.clone()));
    if let Some(reason) = &a.reason {
        entry.facts.push(Fact::text(t.reason, reason.clone()));
    }
    if let Some(addr) = &a.remote_addr {
        entry.facts.push(Fact::mono(t.from_address, addr.clone()));
    }
    if let Some(detail) = &a.detail {
        entry.facts.push(Fact::text(t.detail, detail.clone()));
    }
    entry
}

/// Everything, in time order; at the same instant, the cause before its effects.
pub fn timeline(story: &Story, may_act: bool, tz: Tz, t: &AdminTexts) -> Vec<Entry> {
    let o = &story.order;
    let mut created = Entry::new(o.created_at, 0, 0, "created", t.ev_created.to_owned(), tz);
    created
        .facts
        .push(Fact::text(t.f_amount, o.amount.display_with_symbol()));
    created
        .facts
        .push(Fact::text(t.provider, t.provider_name(o.provider)));
    created
        .facts
        .push(Fact::text(t.f_expires, local_time(o.expires_at, tz)));
    let mut entries = vec![created];
    entries.extend(story.audit.iter().map(|a| audit_entry(a, tz, t)));
    entries.extend(story.calls.iter().map(|c| call_entry(c, tz, t)));
    entries.extend(
        story
            .notifications
            .iter()
            .filter_map(|n| notification_entry(n, tz, t)),
    );
    entries.extend(story.history.iter().map(|h| transition_entry(h, tz, t)));
    entries.extend(
        story
            .deliveries
            .iter()
            .zip(1..)
            .map(|(d, seq)| delivery_entry(d, seq, may_act, tz, t)),
    );
    entries.sort_by_key(|e| (e.at, e.rank, e.seq));
    entries
}

pub struct RefundRow {
    pub id: String,
    pub amount: String,
    pub status: &'static str,
    pub status_class: &'static str,
    pub reason: String,
    pub created: String,
    pub settled: String,
    pub failure: Option<String>,
}

/// A notice above the order: what an action did, or why it was refused.
pub struct Notice {
    pub ok: bool,
    pub text: String,
}

/// What an action form held, to show it again after a refusal.
#[derive(Debug, Default, Clone)]
pub struct Typed {
    pub action: &'static str,
    pub reason: String,
    pub amount: String,
}

#[derive(Template)]
#[template(path = "admin/order.html")]
struct OrderPage {
    base: Base,
    id: String,
    out_trade_no: String,
    subject: String,
    amount: String,
    badge: Badge,
    late: bool,
    facts: Vec<Fact>,
    metadata: String,
    checkout_url: String,
    qr_svg: Option<String>,
    qr_title: String,
    notice: Option<Notice>,
    may_act: bool,
    allowed: Allowed,
    refund_prefill: String,
    currency: &'static str,
    typed: Typed,
    refunds: Vec<RefundRow>,
    entries: Vec<Entry>,
}

/// The flash of a finished action, named in the URL it redirected to.
fn done_notice(code: &str, t: &AdminTexts) -> Option<Notice> {
    let text = match code {
        "closed" => t.done_closed,
        "close_paid" => t.done_close_paid,
        "refund_succeeded" => t.done_refund_succeeded,
        "refund_pending" => t.done_refund_pending,
        "refund_failed" => t.done_refund_failed,
        "query_paid" => t.done_query_paid,
        "query_already_paid" => t.done_query_already_paid,
        "query_not_paid" => t.done_query_not_paid,
        "resent" => t.done_resent,
        _ => return None,
    };
    Some(Notice {
        ok: !matches!(code, "refund_failed"),
        text: text.to_owned(),
    })
}

/// The page of order `id`, with `notice` on top and `status`; `None` when there is no
/// such order.
pub async fn order_page(
    state: &AppState,
    req: &HttpRequest,
    staff: &Staff,
    id: OrderId,
    notice: Option<Notice>,
    typed: Typed,
    status: StatusCode,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(req, Some(staff));
    let t = base.t;
    let story = state
        .db
        .read(move |tx| Story::read(tx, &id))
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?
        .ok_or(AdminError::NotFound(base.lang, t.order_not_found))?;
    let tz = state.settings.merchant.timezone;
    let o = &story.order;
    let currency = o.amount.currency();
    let none = || t.none.to_owned();
    let time = |x: Option<DateTime<Utc>>| x.map(|x| local_time(x, tz)).unwrap_or_else(none);
    let mut facts = vec![
        Fact::mono(t.f_id, o.id.to_string()),
        Fact::mono(t.f_out_trade_no, o.out_trade_no.clone()),
        Fact::text(t.f_subject, o.subject.clone()),
        Fact::text(t.f_amount, o.amount.display_with_symbol()),
        Fact::text(t.f_refunded, money(o.refunded_amount, currency)),
        Fact::text(t.f_refundable, money(story.refundable(), currency)),
        Fact::text(t.provider, t.provider_name(o.provider)),
        Fact::mono(
            t.f_provider_trade_no,
            o.provider_trade_no.clone().unwrap_or_else(none),
        ),
        Fact::text(t.status, t.status(o.status)),
    ];
    if o.late_payment {
        facts.push(Fact::text(t.f_late, t.yes));
    }
    facts.extend([
        Fact::text(t.f_created, time(Some(o.created_at))),
        Fact::text(t.f_expires, time(Some(o.expires_at))),
        Fact::text(t.f_paid, time(o.paid_at)),
        Fact::text(t.f_closed, time(o.closed_at)),
        Fact::text(t.f_updated, time(Some(o.updated_at))),
        Fact::mono(t.f_notify_url, o.notify_url.clone().unwrap_or_else(none)),
        Fact::mono(t.f_return_url, o.return_url.clone().unwrap_or_else(none)),
    ]);
    // Only while the customer can still pay.
    let payable = o.status == OrderStatus::Pending && state.now() < o.expires_at;
    let qr_svg = match o.qr_code.as_deref().filter(|_| payable) {
        Some(code) => Some(qr::svg(code, t.qr_label).map_err(|e| AdminError::internal(base.lang, &e))?),
        None => None,
    };
    let may_act = staff.role.may_act_on_orders();
    let allowed = Allowed::of(&story, staff);
    let notice = notice.or_else(|| {
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .find(|(k, _)| k == "done")
            .and_then(|(_, code)| done_notice(&code, t))
    });
    let refunds = story
        .refunds
        .iter()
        .map(|r| RefundRow {
            id: r.id.clone(),
            amount: money(r.amount, currency),
            status: t.word(r.status.as_str()),
            status_class: match r.status {
                RefundStatus::Succeeded => "ok",
                RefundStatus::Pending => "neutral",
                RefundStatus::Failed => "bad",
            },
            reason: r.reason.clone(),
            created: local_time(r.created_at, tz),
            settled: time(r.settled_at),
            failure: r.failure_code.as_ref().map(|code| match &r.failure_message {
                Some(m) => format!("{code}: {m}"),
                None => code.clone(),
            }),
        })
        .collect();
    let refund_prefill = crate::domain::Amount::from_minor(story.refundable(), currency)
        .map(|a| a.to_decimal_string())
        .unwrap_or_default();
    let page = OrderPage {
        id: o.id.to_string(),
        out_trade_no: o.out_trade_no.clone(),
        subject: o.subject.clone(),
        amount: o.amount.display_with_symbol(),
        badge: Badge::of(o.status, t),
        late: o.late_payment,
        facts,
        metadata: serde_json::to_string_pretty(&serde_json::Value::Object(o.metadata.clone()))
            .unwrap_or_default(),
        checkout_url: o.checkout_url(state.public_url()),
        qr_title: fill(t.qr_title, &[&local_time(o.expires_at, tz)]),
        qr_svg,
        notice,
        may_act,
        allowed,
        refund_prefill,
        currency: currency.code(),
        typed,
        refunds,
        entries: timeline(&story, may_act, tz, t),
        base,
    };
    render(&page, &page.base, status)
}

pub async fn show_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    path: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(&req, Some(&staff.0));
    staff.require(Permission::Read, base.lang)?;
    let Ok(id) = OrderId::parse(&path) else {
        return Err(AdminError::NotFound(base.lang, base.t.order_not_found));
    };
    order_page(&state, &req, &staff.0, id, None, Typed::default(), StatusCode::OK).await
}

#[cfg(test)]
mod tests {
    use super::pretty;

    #[test]
    fn bodies_are_pretty_printed_by_their_kind() {
        assert_eq!(pretty(r#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(
            pretty("trade_status=TRADE_SUCCESS&subject=%3Cb%3E+tea"),
            "trade_status = TRADE_SUCCESS\nsubject = <b> tea"
        );
        assert_eq!(pretty("plain text, not a form"), "plain text, not a form");
        assert_eq!(pretty("42"), "42");
    }
}
