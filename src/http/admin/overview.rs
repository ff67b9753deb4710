//! The overview (`/admin`): tiles that open the matching order list, three charts with
//! their numbers as tables, and what needs someone's attention.

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use chrono::NaiveDate;

use super::charts::{self, Series};
use super::{local_time, money, remote_addr, render, see_other, AdminError, Base, Form, SignedIn};
use crate::db::overview::{acknowledge_late as ack, Flagged};
use crate::domain::admin::Permission;
use crate::domain::{Currency, OrderId, Verdict};
use crate::http::state::AppState;
use crate::service::admin::Action;
use crate::service::overview::{overview, Day, Overview};
use crate::service::refunds::MAX_REASON_CHARS;

pub struct Tile {
    pub label: &'static str,
    pub value: String,
    pub note: String,
    pub href: String,
    pub warn: bool,
}

pub struct Chart {
    pub svg: String,
    pub caption: &'static str,
    pub head: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    pub legend: Vec<(&'static str, &'static str)>,
}

pub struct AttentionLink {
    pub href: String,
    pub text: String,
    /// A late payment, which can be acknowledged here.
    pub ack: Option<String>,
}

pub struct Attention {
    pub title: &'static str,
    pub count: i64,
    pub href: String,
    pub items: Vec<AttentionLink>,
}

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    base: Base,
    tiles: Vec<Tile>,
    charts: Vec<Chart>,
    attention: Vec<Attention>,
    may_ack: bool,
    notice: Option<&'static str>,
}

const PAID_STATUSES: &str = "status=paid&status=partially_refunded&status=refunded";

fn percent(part: i64, whole: i64) -> String {
    if whole == 0 {
        "–".to_owned()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

fn rate(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1} %", v * 100.0))
        .unwrap_or_else(|| "–".to_owned())
}

fn day_label(d: NaiveDate) -> String {
    d.format("%m-%d").to_string()
}

fn tiles(o: &Overview, base: &Base, currency: Currency) -> Vec<Tile> {
    let (today, total) = (o.today(), o.total());
    let (first, last) = (o.days[0].date, today.date);
    let range = |from: NaiveDate| format!("from={from}&to={last}");
    vec![
        Tile {
            label: base.tr("Paid today", "今日收款"),
            value: money(today.paid_amount, currency),
            note: format!("{} {}", today.paid, base.tr("orders", "笔订单")),
            href: format!("/admin/orders?{PAID_STATUSES}&{}", range(last)),
            warn: false,
        },
        Tile {
            label: base.tr("Paid, last 30 days", "近 30 天收款"),
            value: money(total.paid_amount, currency),
            note: format!("{} {}", total.paid, base.tr("orders", "笔订单")),
            href: format!("/admin/orders?{PAID_STATUSES}&{}", range(first)),
            warn: false,
        },
        Tile {
            label: base.tr("Conversion, created → paid", "转化率（创建 → 支付）"),
            value: percent(total.paid, total.created),
            note: format!(
                "{} {} · {} {}",
                base.tr("today", "今日"),
                percent(today.paid, today.created),
                total.created,
                base.tr("created in 30 days", "笔 30 天内创建")
            ),
            href: format!("/admin/orders?{}", range(first)),
            warn: false,
        },
        Tile {
            label: base.tr("Refunds, last 30 days", "近 30 天退款"),
            value: money(total.refunded_amount, currency),
            note: format!("{} {}", total.refunded_orders, base.tr("orders", "笔订单")),
            href: format!(
                "/admin/orders?status=partially_refunded&status=refunded&{}",
                range(first)
            ),
            warn: false,
        },
        Tile {
            label: base.tr("Open problems", "待处理问题"),
            value: o.open_problems().to_string(),
            note: base.tr("see “Needs attention”", "见“需要关注”").to_owned(),
            href: "#attention".to_owned(),
            warn: o.open_problems() > 0,
        },
    ]
}

/// A rate's name, colour and how a day gives it.
type RateDef = (&'static str, &'static str, fn(&Day) -> Option<f64>);

const VERDICT_COLORS: [&str; 5] = ["#1a7f37", "#6e7781", "#b58900", "#cf222e", "#8250df"];

fn charts(o: &Overview, base: &Base, currency: Currency) -> Vec<Chart> {
    let labels: Vec<String> = o.days.iter().map(|d| day_label(d.date)).collect();
    let full: Vec<String> = o.days.iter().map(|d| d.date.to_string()).collect();
    let money_label = |v: f64| money(v.round() as i64, currency);
    let paid = Series {
        name: base.tr("paid", "已支付"),
        color: "#0b5cad",
        values: o.days.iter().map(|d| Some(d.paid_amount as f64)).collect(),
    };
    let paid_svg = charts::bars(
        "chart-paid",
        base.tr("Paid amount per day, last 30 days", "近 30 天每日收款金额"),
        base.tr(
            "Bars: the amount of orders created each day and paid, in the merchant's time zone. The table below has the same numbers.",
            "柱状图：按商户时区，每天创建并已支付的订单金额。下表列出相同数字。",
        ),
        &labels,
        &[paid],
        &money_label,
    );
    let paid_rows = o
        .days
        .iter()
        .zip(&full)
        .map(|(d, date)| {
            vec![
                date.clone(),
                d.created.to_string(),
                d.paid.to_string(),
                money(d.paid_amount, currency),
            ]
        })
        .collect();
    let verdict_names: Vec<&'static str> = Verdict::ALL
        .iter()
        .map(|v| match v {
            Verdict::Applied => base.tr("applied", "已应用"),
            Verdict::Duplicate => base.tr("duplicate", "重复"),
            Verdict::Ignored => base.tr("ignored", "已忽略"),
            Verdict::Rejected => base.tr("rejected", "已拒绝"),
            Verdict::Error => base.tr("error", "错误"),
        })
        .collect();
    let verdict_series: Vec<Series<'_>> = (0..5)
        .map(|i| Series {
            name: verdict_names[i],
            color: VERDICT_COLORS[i],
            values: o.days.iter().map(|d| Some(d.by_verdict[i] as f64)).collect(),
        })
        .collect();
    let count_label = |v: f64| format!("{v:.0}");
    let verdict_svg = charts::bars(
        "chart-notifications",
        base.tr("Notifications per day by verdict", "每日支付通知（按结论）"),
        base.tr(
            "Stacked bars: notifications received from payment platforms each day, by verdict. The table below has the same numbers.",
            "堆叠柱状图：每天收到的支付平台通知，按结论分色。下表列出相同数字。",
        ),
        &labels,
        &verdict_series,
        &count_label,
    );
    let verdict_rows = o
        .days
        .iter()
        .zip(&full)
        .map(|(d, date)| {
            let mut row = vec![date.clone()];
            row.extend(d.by_verdict.iter().map(|n| n.to_string()));
            row
        })
        .collect();
    let rate_defs: [RateDef; 4] = [
        ("P_s", "#0b5cad", Day::p_s),
        ("P_r", "#1a7f37", Day::p_r),
        ("P_h", "#b58900", Day::p_h),
        ("P_c", "#8250df", Day::p_c),
    ];
    let rate_series: Vec<Series<'_>> = rate_defs
        .iter()
        .map(|(name, color, f)| Series {
            name,
            color,
            values: o.days.iter().map(f).collect(),
        })
        .collect();
    let rates_svg = charts::rates(
        "chart-rates",
        base.tr("Pipeline rates per day", "每日链路成功率"),
        base.tr(
            "Lines: P_s webhook attempts answered 2xx ÷ attempts; P_r notifications verified ÷ received; P_h applied or duplicate ÷ verified; P_c events delivered ÷ queued. A gap is a day with nothing to count. The table below has the same numbers.",
            "折线：P_s 回调请求得到 2xx ÷ 请求数；P_r 验签通过的通知 ÷ 收到的通知；P_h 已应用或重复 ÷ 验签通过；P_c 已送达商户的事件 ÷ 排队事件。断开处表示当天没有可计算的数据。下表列出相同数字。",
        ),
        &labels,
        &rate_series,
    );
    let rate_rows = o
        .days
        .iter()
        .zip(&full)
        .map(|(d, date)| {
            vec![
                date.clone(),
                format!("{} ({}/{})", rate(d.p_s()), d.attempts_2xx, d.attempts),
                format!("{} ({}/{})", rate(d.p_r()), d.verified, d.received()),
                format!("{} ({}/{})", rate(d.p_h()), d.handled, d.verified),
                format!("{} ({}/{})", rate(d.p_c()), d.events_delivered, d.events),
            ]
        })
        .collect();
    let date = base.tr("Date", "日期");
    let mut verdict_head = vec![date];
    verdict_head.extend(verdict_names.iter().copied());
    vec![
        Chart {
            svg: paid_svg,
            caption: base.tr("Paid amount per day", "每日收款金额"),
            head: vec![
                date,
                base.tr("Created", "创建"),
                base.tr("Paid", "已支付"),
                base.tr("Paid amount", "收款金额"),
            ],
            rows: paid_rows,
            legend: Vec::new(),
        },
        Chart {
            svg: verdict_svg,
            caption: base.tr("Notifications per day by verdict", "每日支付通知（按结论）"),
            head: verdict_head,
            rows: verdict_rows,
            legend: verdict_names.into_iter().zip(VERDICT_COLORS).collect(),
        },
        Chart {
            svg: rates_svg,
            caption: base.tr("Pipeline rates per day", "每日链路成功率"),
            head: vec![date, "P_s", "P_r", "P_h", "P_c"],
            rows: rate_rows,
            legend: rate_defs.iter().map(|(n, c, _)| (*n, *c)).collect(),
        },
    ]
}

fn order_links(list: &[Flagged], base: &Base, currency: Currency, ack: bool) -> Vec<AttentionLink> {
    let tz = base_tz(base);
    list.iter()
        .map(|f| AttentionLink {
            href: format!("/admin/orders/{}", f.order_id),
            text: format!(
                "{} · {} · {}",
                f.out_trade_no,
                money(f.amount, currency),
                local_time(f.at, tz)
            ),
            ack: ack.then(|| f.order_id.to_string()),
        })
        .collect()
}

fn base_tz(base: &Base) -> chrono_tz::Tz {
    base.tz.parse().unwrap_or(chrono_tz::UTC)
}

fn attention(o: &Overview, base: &Base, currency: Currency) -> Vec<Attention> {
    let mut out = vec![Attention {
        title: base.tr(
            "Late payments not refunded or acknowledged",
            "未退款也未确认的迟到付款",
        ),
        count: o.late.0,
        href: "/admin/orders?status=paid&late=1".to_owned(),
        items: order_links(&o.late.1, base, currency, true),
    }];
    let rejected: i64 = o.rejected.iter().map(|(_, n)| n).sum();
    out.push(Attention {
        title: base.tr("Rejected notifications, last 30 days", "近 30 天被拒绝的通知"),
        count: rejected,
        href: "/admin/notifications?verdict=rejected".to_owned(),
        items: o
            .rejected
            .iter()
            .map(|(code, n)| AttentionLink {
                href: format!("/admin/notifications?verdict=rejected&reason={code}"),
                text: format!("{code}: {n}"),
                ack: None,
            })
            .collect(),
    });
    out.push(Attention {
        title: base.tr("Failed webhook deliveries", "投递失败的 Webhook"),
        count: o.failed_deliveries,
        href: "/admin/webhooks?status=failed".to_owned(),
        items: Vec::new(),
    });
    out.push(Attention {
        title: base.tr("Disabled webhook endpoints", "已停用的 Webhook 地址"),
        count: o.disabled_endpoints.len() as i64,
        href: "/admin/webhooks#endpoints".to_owned(),
        items: o
            .disabled_endpoints
            .iter()
            .map(|url| AttentionLink {
                href: "/admin/webhooks#endpoints".to_owned(),
                text: url.clone(),
                ack: None,
            })
            .collect(),
    });
    out.push(Attention {
        title: base.tr("Orders pending past their expiry", "已过期仍待支付的订单"),
        count: o.pending_expired.0,
        href: "/admin/orders?status=pending&sort=created_asc".to_owned(),
        items: order_links(&o.pending_expired.1, base, currency, false),
    });
    out.push(Attention {
        title: base.tr("Refunds still pending", "仍在处理中的退款"),
        count: o.refunds_pending.0,
        href: "/admin/orders?status=paid&status=partially_refunded".to_owned(),
        items: order_links(&o.refunds_pending.1, base, currency, false),
    });
    out
}

pub async fn overview_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(&req, Some(&staff.0));
    staff.require(Permission::Read, base.lang)?;
    let o = overview(&state, &state.overview)
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?;
    let currency = state.settings.merchant.currency;
    let notice = match req.query_string() {
        q if q.contains("done=acknowledged") => Some(base.tr("Acknowledged.", "已确认。")),
        q if q.contains("done=refused") => Some(base.tr(
            "Not acknowledged: give a reason, and only a late payment still paid can be acknowledged.",
            "未确认：请填写原因；只有仍为已支付状态的迟到付款可以确认。",
        )),
        _ => None,
    };
    let page = OverviewPage {
        tiles: tiles(&o, &base, currency),
        charts: charts(&o, &base, currency),
        attention: attention(&o, &base, currency),
        may_ack: staff.0.may(Permission::ActOnOrders),
        notice,
        base,
    };
    render(&page, &page.base, StatusCode::OK)
}

/// Marks a late payment as seen and kept (operators and owners, with a reason).
pub async fn acknowledge_late(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(&req, Some(&staff.0));
    let form = Form::parse(&body);
    form.check_csrf(&staff.0, base.lang)?;
    // The audit line names the order only if it exists (the log refers to orders).
    let id = match OrderId::parse(&path) {
        Ok(id) => state
            .db
            .read(move |tx| crate::db::orders::find_by_id(tx, &id))
            .await
            .map_err(|e| AdminError::internal(base.lang, &e))?
            .map(|order| order.id),
        Err(_) => None,
    };
    let reason = form.get("reason").unwrap_or_default().trim().to_owned();
    let action = Action {
        at: state.now(),
        actor: staff.0.username.clone(),
        action: "order.acknowledge_late",
        order_id: id.clone(),
        reason: Some(reason.clone()).filter(|r| !r.is_empty()),
        remote_addr: remote_addr(&req),
    };
    staff
        .require_action(&state, &action, Permission::ActOnOrders, base.lang)
        .await?;
    let id = id.ok_or(AdminError::NotFound(base.lang, base.t.order_not_found))?;
    let valid = !reason.is_empty() && reason.chars().count() <= MAX_REASON_CHARS;
    let (actor, now) = (staff.0.username.clone(), action.at);
    let done = valid
        && state
            .db
            .write(move |tx| ack(tx, &id, &actor, &reason, now))
            .await
            .map_err(|e| AdminError::internal(base.lang, &e))?;
    let outcome = if done { "done" } else { "refused" };
    action
        .record(&state, outcome, None)
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?;
    state.overview.clear();
    Ok(see_other(&format!(
        "/admin?done={}#attention",
        if done { "acknowledged" } else { "refused" }
    )))
}
