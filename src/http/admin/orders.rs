//! The order list (`/admin/orders`): filters in the URL (shareable, kept across pages,
//! the browser's back button works), one exact search box, two sort keys, keyset pages.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono_tz::Tz;

use super::texts::{fill, AdminTexts};
use super::{iso, local_time, money, render, AdminError, Badge, Base, SignedIn};
use crate::db::orders::{self, OrderQuery, PageKey, Seek, SortKey};
use crate::domain::admin::Permission;
use crate::domain::{Amount, Currency, Order, OrderId, OrderStatus, ProviderKind};
use crate::http::state::AppState;
use crate::service::export::parse_bound;

/// Rows per page.
pub const PAGE_SIZE: u32 = 50;
/// The longest search text: order numbers are at most 64 characters.
const MAX_SEARCH: usize = 64;

const SORTS: [(&str, SortKey, bool); 4] = [
    ("created_desc", SortKey::Created, true),
    ("created_asc", SortKey::Created, false),
    ("amount_desc", SortKey::Amount, true),
    ("amount_asc", SortKey::Amount, false),
];

/// The list's parameters as they are in the URL, kept as typed so the form shows them
/// again, bad ones included.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub q: String,
    pub statuses: Vec<OrderStatus>,
    pub late: bool,
    pub provider: String,
    pub from: String,
    pub to: String,
    pub min: String,
    pub max: String,
    pub sort: String,
    pub after: Option<String>,
    pub before: Option<String>,
    /// Values that are none of the choices (an unknown status), to report.
    unknown: Vec<String>,
}

impl ListParams {
    pub fn parse(query: &str) -> ListParams {
        let mut p = ListParams::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = value.trim().to_owned();
            match key.as_ref() {
                "q" => p.q = value,
                "status" if value.is_empty() => {}
                "status" => match value.parse::<OrderStatus>() {
                    Ok(s) if !p.statuses.contains(&s) => p.statuses.push(s),
                    Ok(_) => {}
                    Err(_) => p.unknown.push(value),
                },
                "late" => p.late = !value.is_empty(),
                "provider" => p.provider = value,
                "from" => p.from = value,
                "to" => p.to = value,
                "min" => p.min = value,
                "max" => p.max = value,
                "sort" => p.sort = value,
                "after" if !value.is_empty() => p.after = Some(value),
                "before" if !value.is_empty() => p.before = Some(value),
                _ => {}
            }
        }
        p
    }

    fn sort_key(&self) -> Option<(SortKey, bool)> {
        if self.sort.is_empty() {
            return Some((SortKey::Created, true));
        }
        SORTS
            .iter()
            .find(|(name, ..)| *name == self.sort)
            .map(|(_, key, desc)| (*key, *desc))
    }

    /// The filter as a query, or what is wrong with it (every problem, in words).
    pub fn query(&self, tz: Tz, currency: Currency, t: &AdminTexts) -> Result<OrderQuery, Vec<String>> {
        let mut problems: Vec<String> = self.unknown.iter().map(|v| fill(t.bad_choice, &[v])).collect();
        let provider = match self.provider.as_str() {
            "" => None,
            p => match p.parse::<ProviderKind>() {
                Ok(p) => Some(p),
                Err(_) => {
                    problems.push(fill(t.bad_choice, &[p]));
                    None
                }
            },
        };
        let mut date = |text: &str, end: bool| match text {
            "" => None,
            text => match parse_bound(text, tz, end) {
                Ok(t) => Some(t),
                Err(_) => {
                    problems.push(fill(t.bad_date, &[text]));
                    None
                }
            },
        };
        let (created_from, created_before) = (date(&self.from, false), date(&self.to, true));
        let mut amount = |text: &str| match text {
            "" => None,
            text => match Amount::parse_decimal(text, currency) {
                Ok(a) => Some(a.minor()),
                Err(_) => {
                    problems.push(fill(t.bad_amount, &[text]));
                    None
                }
            },
        };
        let (amount_min, amount_max) = (amount(&self.min), amount(&self.max));
        let (sort, descending) = self.sort_key().unwrap_or_else(|| {
            problems.push(fill(t.bad_choice, &[&self.sort]));
            (SortKey::Created, true)
        });
        if self.q.chars().count() > MAX_SEARCH {
            problems.push(t.bad_search.to_owned());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(OrderQuery {
            statuses: self.statuses.clone(),
            provider,
            created_from,
            created_before,
            amount_min,
            amount_max,
            late_only: self.late,
            search: Some(self.q.clone()).filter(|q| !q.is_empty()),
            sort,
            descending,
        })
    }

    /// Where the page starts; `None` for a cursor that is not one of this sort's.
    pub fn seek(&self, sort: SortKey) -> Option<Seek> {
        match (&self.after, &self.before) {
            (Some(c), _) => decode_cursor(c, sort).map(Seek::After),
            (None, Some(c)) => decode_cursor(c, sort).map(Seek::Before),
            (None, None) => Some(Seek::First),
        }
    }

    /// The filter part of the URL (no page position), in one fixed order.
    pub fn canonical(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        let mut pair = |k: &str, v: &str| {
            if !v.is_empty() {
                out.append_pair(k, v);
            }
        };
        pair("q", &self.q);
        for s in &self.statuses {
            pair("status", s.as_str());
        }
        if self.late {
            pair("late", "1");
        }
        pair("provider", &self.provider);
        pair("from", &self.from);
        pair("to", &self.to);
        pair("min", &self.min);
        pair("max", &self.max);
        pair("sort", &self.sort);
        out.finish()
    }

    fn url_with(&self, position: Option<(&str, String)>) -> String {
        let mut query = self.canonical();
        if let Some((name, cursor)) = position {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(name);
            query.push('=');
            query.push_str(&cursor);
        }
        if query.is_empty() {
            "/admin/orders".to_owned()
        } else {
            format!("/admin/orders?{query}")
        }
    }
}

fn sort_tag(sort: SortKey) -> char {
    match sort {
        SortKey::Created => 'c',
        SortKey::Amount => 'a',
    }
}

/// A page position in the URL: `c<ms>.<id>` or `a<amount>.<id>` (only URL-safe
/// characters). A position of another sort is refused.
pub fn encode_cursor(key: &PageKey, sort: SortKey) -> String {
    format!("{}{}.{}", sort_tag(sort), key.value, key.id)
}

pub fn decode_cursor(text: &str, sort: SortKey) -> Option<PageKey> {
    let rest = text.strip_prefix(sort_tag(sort))?;
    let (value, id) = rest.split_once('.')?;
    OrderId::parse(id).ok()?;
    Some(PageKey {
        value: value.parse().ok()?,
        id: id.to_owned(),
    })
}

/// One order as a row of the list (a card on a phone).
pub struct OrderRow {
    pub id: String,
    pub out_trade_no: String,
    pub subject: String,
    pub provider: &'static str,
    pub amount: String,
    pub refunded: Option<String>,
    pub badge: Badge,
    pub late: bool,
    pub created: String,
    pub created_iso: String,
}

impl OrderRow {
    pub fn of(order: &Order, tz: Tz, t: &AdminTexts) -> OrderRow {
        let currency = order.amount.currency();
        OrderRow {
            id: order.id.to_string(),
            out_trade_no: order.out_trade_no.clone(),
            subject: order.subject.clone(),
            provider: t.provider_name(order.provider),
            amount: order.amount.display_with_symbol(),
            refunded: (order.refunded_amount > 0).then(|| money(order.refunded_amount, currency)),
            badge: Badge::of(order.status, t),
            late: order.late_payment,
            created: local_time(order.created_at, tz),
            created_iso: iso(order.created_at),
        }
    }
}

pub struct Choice {
    pub value: &'static str,
    pub label: &'static str,
    pub chosen: bool,
}

impl Choice {
    /// A single-choice filter's options: "any" (the empty value) first, then each
    /// `(value, label)`; the one equal to `current` is chosen.
    pub fn any_then(
        any: &'static str,
        current: &str,
        options: impl IntoIterator<Item = (&'static str, &'static str)>,
    ) -> Vec<Choice> {
        std::iter::once(("", any))
            .chain(options)
            .map(|(value, label)| Choice {
                value,
                label,
                chosen: current == value,
            })
            .collect()
    }
}

#[derive(Template)]
#[template(path = "admin/orders.html")]
struct OrdersPage {
    base: Base,
    f: ListParams,
    statuses: Vec<Choice>,
    providers: Vec<Choice>,
    sorts: Vec<Choice>,
    problems: Vec<String>,
    rows: Vec<OrderRow>,
    prev_url: Option<String>,
    next_url: Option<String>,
    first_url: Option<String>,
    export_url: String,
}

fn choices(f: &ListParams, t: &AdminTexts) -> (Vec<Choice>, Vec<Choice>, Vec<Choice>) {
    let statuses = OrderStatus::ALL
        .iter()
        .map(|s| Choice {
            value: s.as_str(),
            label: t.status(*s),
            chosen: f.statuses.contains(s),
        })
        .collect();
    let mut providers = vec![Choice {
        value: "",
        label: t.any_provider,
        chosen: f.provider.is_empty(),
    }];
    providers.extend(ProviderKind::ALL.iter().map(|p| Choice {
        value: p.as_str(),
        label: t.provider_name(*p),
        chosen: f.provider == p.as_str(),
    }));
    let labels = [
        t.sort_created_desc,
        t.sort_created_asc,
        t.sort_amount_desc,
        t.sort_amount_asc,
    ];
    let sorts = SORTS
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, ((value, ..), label))| Choice {
            value,
            label,
            chosen: f.sort == *value || (i == 0 && f.sort.is_empty()),
        })
        .collect();
    (statuses, providers, sorts)
}

pub async fn list_orders(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(&req, Some(&staff.0));
    staff.require(Permission::Read, base.lang)?;
    let t = base.t;
    let f = ListParams::parse(req.query_string());
    let (tz, currency) = (state.settings.merchant.timezone, state.settings.merchant.currency);
    let (statuses, providers, sorts) = choices(&f, t);
    let export_url = match f.canonical() {
        q if q.is_empty() => "/admin/orders.csv".to_owned(),
        q => format!("/admin/orders.csv?{q}"),
    };
    let mut page = OrdersPage {
        base,
        f: f.clone(),
        statuses,
        providers,
        sorts,
        problems: Vec::new(),
        rows: Vec::new(),
        prev_url: None,
        next_url: None,
        first_url: None,
        export_url,
    };
    let query = match f.query(tz, currency, t) {
        Ok(q) => q,
        Err(problems) => {
            page.problems = problems;
            return render(&page, &page.base, StatusCode::UNPROCESSABLE_ENTITY);
        }
    };
    let Some(seek) = f.seek(query.sort) else {
        page.problems = vec![t.bad_cursor.to_owned()];
        page.first_url = Some(f.url_with(None));
        return render(&page, &page.base, StatusCode::UNPROCESSABLE_ENTITY);
    };
    let (q, s) = (query.clone(), seek.clone());
    let result = state
        .db
        .read(move |tx| orders::page(tx, &q, &s, PAGE_SIZE))
        .await
        .map_err(|e| AdminError::internal(page.base.lang, &e))?;
    let sort = query.sort;
    let first = result
        .rows
        .first()
        .map(|o| encode_cursor(&PageKey::of(o, sort), sort));
    let last = result
        .rows
        .last()
        .map(|o| encode_cursor(&PageKey::of(o, sort), sort));
    let (has_prev, has_next) = match seek {
        Seek::First => (false, result.more),
        Seek::After(_) => (true, result.more),
        Seek::Before(_) => (result.more, true),
    };
    page.prev_url = first
        .filter(|_| has_prev)
        .map(|c| f.url_with(Some(("before", c))));
    page.next_url = last.filter(|_| has_next).map(|c| f.url_with(Some(("after", c))));
    page.first_url = (seek != Seek::First).then(|| f.url_with(None));
    page.rows = result.rows.iter().map(|o| OrderRow::of(o, tz, t)).collect();
    render(&page, &page.base, StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_belong_to_their_sort() {
        let key = PageKey {
            value: 1_764_000_000_123,
            id: "ord_abc".to_owned(),
        };
        let text = encode_cursor(&key, SortKey::Created);
        assert_eq!(text, "c1764000000123.ord_abc");
        assert_eq!(decode_cursor(&text, SortKey::Created), Some(key));
        assert_eq!(decode_cursor(&text, SortKey::Amount), None);
        for bad in ["", "c", "c12", "cx.ord_a", "c1.bad id", "c1.<script>"] {
            assert_eq!(decode_cursor(bad, SortKey::Created), None, "{bad}");
        }
    }

    #[test]
    fn the_filter_round_trips_through_its_url() {
        let p = ListParams::parse(
            "q=A-1&status=paid&status=closed&status=paid&late=1&provider=alipay&from=2026-11-01&to=2026-11-30&min=1.00&max=99&sort=amount_asc&after=x&lang=en",
        );
        assert_eq!(p.statuses, [OrderStatus::Paid, OrderStatus::Closed]);
        assert_eq!(
            p.canonical(),
            "q=A-1&status=paid&status=closed&late=1&provider=alipay&from=2026-11-01&to=2026-11-30&min=1.00&max=99&sort=amount_asc"
        );
        let q = p
            .query(
                chrono_tz::UTC,
                Currency::Cny,
                AdminTexts::of(crate::http::i18n::Lang::En),
            )
            .unwrap();
        assert_eq!((q.amount_min, q.amount_max), (Some(100), Some(9900)));
        assert_eq!((q.sort, q.descending), (SortKey::Amount, false));
    }

    #[test]
    fn every_bad_value_is_named() {
        let p = ListParams::parse("status=lost&provider=paypal&from=yesterday&min=1.234&sort=random");
        let problems = p
            .query(
                chrono_tz::UTC,
                Currency::Cny,
                AdminTexts::of(crate::http::i18n::Lang::En),
            )
            .unwrap_err();
        let text = problems.join(" ");
        for bad in ["lost", "paypal", "yesterday", "1.234", "random"] {
            assert!(text.contains(bad), "{bad}: {text}");
        }
    }
}
