//! `db::orders` on both backends: look-ups, the cursor list and the admin pages in the
//! byte order of ids, the expiry and late-check sweeps, and the export stream.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::orders::{self, Cursor, Inserted, OrderFilter, OrderQuery, Page, PageKey, Seek, SortKey};
use crate::db::pg::testing::both_backends;
use crate::db::sql::args;
use crate::db::sql::tests::pending_order;
use crate::db::Database;
use crate::domain::{NewOrder, Order, OrderId, OrderStatus, ProviderKind};

/// Ids whose byte order differs from a natural-language collation's (ICU en-US sorts
/// them `ord__z ord_1 ord_a ord_B ord_Z`), in byte order.
pub(super) const BYTE_ORDERED: [&str; 5] = ["ord_1", "ord_B", "ord_Z", "ord__z", "ord_a"];

pub(super) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

/// A pending Alipay order `id` of `amount` CNY created `secs` after `t0`, due to
/// expire 15 minutes later; its `out_trade_no` is `p-<id>`.
pub(super) fn new_order(id: &str, secs: i64, amount: i64) -> NewOrder {
    pending_order(
        OrderId::parse(id).unwrap(),
        &format!("p-{id}"),
        amount,
        t0() + Duration::seconds(secs),
    )
}

/// Stores the orders, all inserted.
pub(super) fn store(db: &Database, new: Vec<NewOrder>) {
    let inserted = db
        .write_blocking(move |tx| {
            new.iter()
                .map(|o| orders::insert(tx, o, None))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap();
    assert!(inserted.iter().all(|i| *i == Inserted::Yes), "{inserted:?}");
}

/// Sets an order's status, late flag and provider trade number as a test's data needs
/// them, without going through transitions.
fn set(db: &Database, id: &str, status: OrderStatus, late: bool, trade_no: Option<&str>) {
    let (id, trade_no) = (id.to_owned(), trade_no.map(str::to_owned));
    let n = db
        .write_blocking(move |tx| {
            tx.exec(
                "UPDATE orders SET status = ?2, late_payment = ?3, provider_trade_no = ?4 WHERE id = ?1",
                args![id.as_str(), status, late, trade_no.as_deref()],
            )
        })
        .unwrap();
    assert_eq!(n, 1);
}

pub(super) fn find(db: &Database, id: &str) -> Option<Order> {
    let id = OrderId::parse(id).unwrap();
    db.read_blocking(|tx| orders::find_by_id(tx, &id)).unwrap()
}

fn ids(rows: &[Order]) -> Vec<String> {
    rows.iter().map(|o| o.id.to_string()).collect()
}

/// The rows a query's pages must show, from every stored order: filtered and sorted
/// here, by the sort value and then the id's bytes.
fn expected(all: &[Order], q: &OrderQuery) -> Vec<String> {
    let statuses: &[OrderStatus] = if q.statuses.len() >= OrderStatus::ALL.len() {
        &[]
    } else {
        &q.statuses
    };
    let mut rows: Vec<&Order> = all
        .iter()
        .filter(|o| statuses.is_empty() || statuses.contains(&o.status))
        .filter(|o| q.provider.is_none_or(|p| o.provider == p))
        .filter(|o| q.created_from.is_none_or(|t| o.created_at >= t))
        .filter(|o| q.created_before.is_none_or(|t| o.created_at < t))
        .filter(|o| q.amount_min.is_none_or(|a| o.amount.minor() >= a))
        .filter(|o| q.amount_max.is_none_or(|a| o.amount.minor() <= a))
        .filter(|o| !q.late_only || o.late_payment)
        .filter(|o| {
            q.search.as_deref().is_none_or(|s| {
                o.id.as_str() == s || o.out_trade_no == s || o.provider_trade_no.as_deref() == Some(s)
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        let ordering = (q.sort.value_of(a), a.id.as_str().as_bytes())
            .cmp(&(q.sort.value_of(b), b.id.as_str().as_bytes()));
        if q.descending {
            ordering.reverse()
        } else {
            ordering
        }
    });
    rows.iter().map(|o| o.id.to_string()).collect()
}

fn page(db: &Database, q: &OrderQuery, seek: Seek, limit: u32) -> Page {
    let q = q.clone();
    db.read_blocking(move |tx| orders::page(tx, &q, &seek, limit))
        .unwrap()
}

/// Walks every page forward from the first, then back from the last: the rows each
/// way, and the `more` each page said.
fn walk(db: &Database, q: &OrderQuery, limit: u32) -> (Vec<String>, Vec<String>) {
    let mut forward = Vec::new();
    let mut pages = vec![page(db, q, Seek::First, limit)];
    while let Some(last) = pages.last().filter(|p| p.more) {
        let key = PageKey::of(last.rows.last().unwrap(), q.sort);
        pages.push(page(db, q, Seek::After(key), limit));
        assert!(pages.len() < 100, "{q:?}: pages do not end");
    }
    for p in &pages {
        assert!(p.rows.len() <= limit as usize);
        forward.extend(ids(&p.rows));
    }
    // Back from the last page's first row to the start.
    let mut back: Vec<Vec<String>> = vec![ids(&pages.last().unwrap().rows)];
    let mut first = pages.last().unwrap().rows.first().cloned();
    while let Some(row) = first {
        let p = page(db, q, Seek::Before(PageKey::of(&row, q.sort)), limit);
        assert_eq!(
            p.more,
            p.rows.len() == limit as usize && forward[0] != p.rows[0].id.as_str(),
            "{q:?}"
        );
        back.push(ids(&p.rows));
        first = if p.more { p.rows.first().cloned() } else { None };
        assert!(back.len() < 100, "{q:?}: pages do not end");
    }
    let back = back.into_iter().rev().flatten().collect();
    (forward, back)
}

both_backends! {
    fn an_inserted_order_reads_back_whole_by_id_and_by_out_trade_no_and_a_taken_out_trade_no_stores_nothing(
        db: &Database,
    ) {
        let mut first = new_order("ord_first", 0, 1234);
        first.notify_url = Some("https://shop.example/notify".into());
        first
            .metadata
            .insert("k".into(), serde_json::json!({"n": [1, "x"]}));
        let mut again = new_order("ord_again", 5, 99);
        again.out_trade_no = first.out_trade_no.clone();
        let (a, b) = (first.clone(), again.clone());
        let outcomes = db
            .write_blocking(move |tx| {
                Ok([
                    orders::insert(tx, &a, Some("qr://1"))?,
                    orders::insert(tx, &b, None)?,
                ])
            })
            .unwrap();
        assert_eq!(outcomes, [Inserted::Yes, Inserted::OutTradeNoTaken]);

        let stored = find(db, "ord_first").unwrap();
        let want = Order {
            id: first.id.clone(),
            out_trade_no: first.out_trade_no.to_string(),
            amount: first.amount,
            subject: "Tea".into(),
            provider: ProviderKind::Alipay,
            status: OrderStatus::Pending,
            qr_code: Some("qr://1".into()),
            notify_url: first.notify_url.clone(),
            return_url: None,
            metadata: first.metadata.clone(),
            provider_trade_no: None,
            refunded_amount: 0,
            late_payment: false,
            created_at: first.created_at,
            expires_at: first.expires_at,
            paid_at: None,
            closed_at: None,
            updated_at: first.created_at,
        };
        assert_eq!(stored, want);
        let no = first.out_trade_no.to_string();
        let by_no = db
            .read_blocking(move |tx| orders::find_by_out_trade_no(tx, &no))
            .unwrap();
        assert_eq!(by_no, Some(want));
        assert_eq!(find(db, "ord_again"), None, "the refused insert stored nothing");
        let count = db
            .read_blocking(|tx| tx.one("SELECT COUNT(*) FROM orders", args![], |r| r.get_i64(0)))
            .unwrap();
        assert_eq!(count, 1);
        assert_eq!(
            db.read_blocking(|tx| orders::find_by_out_trade_no(tx, "p-none"))
                .unwrap(),
            None
        );
    }

    fn the_order_list_is_newest_first_with_ties_in_descending_byte_order_of_ids_and_its_cursor_pages_lose_nothing(
        db: &Database,
    ) {
        let mut new: Vec<NewOrder> = BYTE_ORDERED.iter().map(|id| new_order(id, 10, 100)).collect();
        new.push(new_order("ord_old", 5, 100));
        new.push(new_order("ord_new", 20, 100));
        store(db, new);
        let want = ["ord_new", "ord_a", "ord__z", "ord_Z", "ord_B", "ord_1", "ord_old"];

        let all = db
            .read_blocking(|tx| orders::list(tx, &OrderFilter::default(), None, 100))
            .unwrap();
        assert_eq!(ids(&all), want);

        for limit in 1..=3 {
            let mut seen = Vec::new();
            let mut after: Option<Cursor> = None;
            loop {
                let cursor = after.clone();
                let rows = db
                    .read_blocking(move |tx| {
                        orders::list(tx, &OrderFilter::default(), cursor.as_ref(), limit)
                    })
                    .unwrap();
                assert!(rows.len() <= limit as usize);
                let Some(last) = rows.last() else { break };
                // Through its client form, as the API hands it out.
                after = Cursor::decode(&Cursor::after(last).encode());
                assert!(after.is_some());
                seen.extend(ids(&rows));
            }
            assert_eq!(seen, want, "pages of {limit}");
        }
    }

    fn the_order_list_filters_by_status_provider_out_trade_no_and_creation_time(db: &Database) {
        let mut wechat = new_order("ord_w", 3, 100);
        wechat.provider = ProviderKind::Wechat;
        store(
            db,
            vec![new_order("ord_p", 1, 100), new_order("ord_q", 2, 100), wechat],
        );
        set(db, "ord_q", OrderStatus::Paid, false, None);
        let list = |filter: OrderFilter| {
            let rows = db
                .read_blocking(move |tx| orders::list(tx, &filter, None, 10))
                .unwrap();
            ids(&rows)
        };
        assert_eq!(list(OrderFilter::default()), ["ord_w", "ord_q", "ord_p"]);
        assert_eq!(
            list(OrderFilter {
                status: Some(OrderStatus::Pending),
                ..Default::default()
            }),
            ["ord_w", "ord_p"]
        );
        assert_eq!(
            list(OrderFilter {
                provider: Some(ProviderKind::Wechat),
                ..Default::default()
            }),
            ["ord_w"]
        );
        assert_eq!(
            list(OrderFilter {
                out_trade_no: Some("p-ord_q".into()),
                ..Default::default()
            }),
            ["ord_q"]
        );
        assert_eq!(
            list(OrderFilter {
                created_from: Some(t0() + Duration::seconds(2)),
                created_before: Some(t0() + Duration::seconds(3)),
                ..Default::default()
            }),
            ["ord_q"]
        );
        assert_eq!(
            list(OrderFilter {
                status: Some(OrderStatus::Closed),
                ..Default::default()
            }),
            Vec::<String>::new()
        );
    }

    fn the_expiry_sweep_lists_pending_orders_past_their_deadline_oldest_deadline_first_up_to_its_limit(
        db: &Database,
    ) {
        // Deadlines: a at +15 min, b at +10 min, c at +20 min (not yet due), d paid.
        let a = new_order("ord_a", 0, 100);
        let mut b = new_order("ord_b", 60, 100);
        b.expires_at = t0() + Duration::minutes(10);
        let mut c = new_order("ord_c", 0, 100);
        c.expires_at = t0() + Duration::minutes(20);
        let d = new_order("ord_d", 0, 100);
        store(db, vec![a, b, c, d]);
        set(db, "ord_d", OrderStatus::Paid, false, None);
        let due = |now: DateTime<Utc>, limit: u32| {
            let rows = db
                .read_blocking(move |tx| orders::list_due_for_expiry(tx, now, limit))
                .unwrap();
            ids(&rows)
        };
        let now = t0() + Duration::minutes(15);
        assert_eq!(due(now, 10), ["ord_b", "ord_a"], "due at its deadline, not after");
        assert_eq!(due(now, 1), ["ord_b"]);
        assert_eq!(due(now - Duration::milliseconds(1), 10), ["ord_b"]);
        assert_eq!(due(t0() + Duration::minutes(21), 10), ["ord_b", "ord_a", "ord_c"]);
    }

    fn the_export_stream_hands_over_orders_created_in_the_range_oldest_first_and_stops_when_told(
        db: &Database,
    ) {
        let mut new: Vec<NewOrder> = BYTE_ORDERED
            .iter()
            .rev()
            .map(|id| new_order(id, 2, 100))
            .collect();
        new.extend([
            new_order("ord_s0", 0, 100),
            new_order("ord_s1", 1, 100),
            new_order("ord_s3", 3, 100),
        ]);
        store(db, new);
        let stream = |from: Option<DateTime<Utc>>, before: Option<DateTime<Utc>>, stop_after: usize| {
            db.read_blocking(move |tx| {
                let mut seen = Vec::new();
                let ended = orders::for_each_created_between(tx, from, before, |o| {
                    if seen.len() == stop_after {
                        return Err("enough");
                    }
                    seen.push(o.id.to_string());
                    Ok(())
                })?;
                // A stream stopped early leaves the transaction usable.
                let count = tx.one("SELECT COUNT(*) FROM orders", args![], |r| r.get_i64(0))?;
                assert_eq!(count, 8);
                Ok((seen, ended))
            })
            .unwrap()
        };
        let mut all = vec!["ord_s0".to_owned(), "ord_s1".into()];
        all.extend(BYTE_ORDERED.map(String::from));
        all.push("ord_s3".into());
        assert_eq!(stream(None, None, 100), (all.clone(), Ok(())));
        let (from, before) = (t0() + Duration::seconds(1), t0() + Duration::seconds(3));
        assert_eq!(
            stream(Some(from), Some(before), 100),
            (all[1..7].to_vec(), Ok(()))
        );
        assert_eq!(stream(Some(from), None, 100), (all[1..].to_vec(), Ok(())));
        assert_eq!(stream(None, Some(before), 3), (all[..3].to_vec(), Err("enough")));
    }

    fn late_checks_list_due_pending_unexpired_orders_and_a_step_is_recorded_once_then_the_next_one_is_due(
        db: &Database,
    ) {
        // Checks fall due at created + 1 min: d at +0:50, a at +1:00, b at +1:30; c is
        // paid; d expires at +1:30 (then it is the expiry sweep's).
        let mut d = new_order("ord_d", -10, 100);
        d.expires_at = t0() + Duration::seconds(90);
        store(
            db,
            vec![
                new_order("ord_b", 30, 100),
                new_order("ord_a", 0, 100),
                new_order("ord_c", 0, 100),
                d,
            ],
        );
        set(db, "ord_c", OrderStatus::Paid, false, None);
        let due = |now: DateTime<Utc>| {
            let rows = db
                .read_blocking(move |tx| orders::list_due_for_check(tx, now, 10))
                .unwrap();
            rows.iter()
                .map(|d| (d.order.id.to_string(), d.checks_done))
                .collect::<Vec<_>>()
        };
        let record = |id: &str, seen: i64| {
            let id = OrderId::parse(id).unwrap();
            db.write_blocking(move |tx| orders::record_check(tx, &id, seen))
                .unwrap()
        };
        let stored = |id: &str| {
            let id = id.to_owned();
            db.read_blocking(move |tx| {
                tx.one(
                    "SELECT checks_done, next_check_at - created_at FROM orders WHERE id = ?1",
                    args![id.as_str()],
                    |r| Ok((r.get_i64(0)?, r.get_opt_i64(1)?)),
                )
            })
            .unwrap()
        };
        let now = t0() + Duration::minutes(2);
        assert_eq!(
            due(t0() + Duration::seconds(60)),
            [("ord_d".to_owned(), 0), ("ord_a".to_owned(), 0)]
        );
        assert_eq!(due(now), [("ord_a".to_owned(), 0), ("ord_b".to_owned(), 0)]);
        let limited = db
            .read_blocking(move |tx| orders::list_due_for_check(tx, now, 1))
            .unwrap();
        assert_eq!(limited.len(), 1);

        assert!(record("ord_a", 0));
        assert!(!record("ord_a", 0), "the same step, checked by a second process");
        assert_eq!(stored("ord_a"), (1, Some(orders::LATE_CHECKS_MS[1])));
        assert_eq!(due(now), [("ord_b".to_owned(), 0)]);
        assert_eq!(
            due(t0() + Duration::minutes(5)),
            [("ord_b".to_owned(), 0), ("ord_a".to_owned(), 1)]
        );
        assert!(!record("ord_a", 2), "a step not yet reached");
        assert!(record("ord_a", 1));
        assert!(record("ord_a", 2));
        assert_eq!(stored("ord_a"), (3, Some(orders::LATE_CHECKS_MS[3])));
        assert!(record("ord_a", 3));
        assert_eq!(stored("ord_a"), (4, None), "no check after the last step");
        assert_eq!(due(t0() + Duration::minutes(14)), [("ord_b".to_owned(), 0)]);
        assert!(!record("ord_x", 0), "no such order");
    }

    fn admin_pages_show_exactly_the_filtered_rows_in_sort_then_id_byte_order_forward_and_back(db: &Database) {
        // Ties everywhere: several orders per creation time and per amount, ids whose
        // byte order is not a natural-language one, every status, both providers.
        let mut new = Vec::new();
        let amounts = [100, 300, 100, 200, 300, 100, 200];
        for (i, id) in BYTE_ORDERED.iter().enumerate() {
            for (j, suffix) in ["", "x", "_"].iter().enumerate() {
                let n = i * 3 + j;
                let mut o = new_order(
                    &format!("{id}{suffix}"),
                    (n % 4) as i64,
                    amounts[n % amounts.len()],
                );
                if n % 3 == 1 {
                    o.provider = ProviderKind::Wechat;
                }
                new.push(o);
            }
        }
        let all_ids: Vec<String> = new.iter().map(|o| o.id.to_string()).collect();
        store(db, new);
        let statuses = [
            OrderStatus::Pending,
            OrderStatus::Paid,
            OrderStatus::Closed,
            OrderStatus::Paid,
            OrderStatus::Refunded,
            OrderStatus::PartiallyRefunded,
        ];
        for (n, id) in all_ids.iter().enumerate() {
            let status = statuses[n % statuses.len()];
            let late = n % 5 == 1 && status == OrderStatus::Paid;
            let trade_no = format!("T{n}");
            let trade_no = (status != OrderStatus::Pending).then_some(trade_no.as_str());
            set(db, id, status, late, trade_no);
        }
        let all: Vec<Order> = all_ids.iter().map(|id| find(db, id).unwrap()).collect();
        assert!(all.iter().any(|o| o.late_payment));

        let q = |f: &dyn Fn(&mut OrderQuery)| {
            let mut query = OrderQuery {
                descending: true,
                ..OrderQuery::default()
            };
            f(&mut query);
            query
        };
        let queries = vec![
            q(&|_| {}),
            q(&|q| q.descending = false),
            q(&|q| q.statuses = vec![OrderStatus::Paid, OrderStatus::Closed]),
            q(&|q| {
                q.statuses = vec![OrderStatus::Refunded, OrderStatus::Pending, OrderStatus::Paid];
                q.descending = false;
            }),
            q(&|q| q.statuses = OrderStatus::ALL.to_vec()),
            q(&|q| q.provider = Some(ProviderKind::Wechat)),
            q(&|q| q.late_only = true),
            q(&|q| q.sort = SortKey::Amount),
            q(&|q| {
                q.sort = SortKey::Amount;
                q.descending = false;
            }),
            q(&|q| q.amount_min = Some(200)),
            q(&|q| {
                q.amount_min = Some(150);
                q.amount_max = Some(250);
                q.statuses = vec![OrderStatus::Paid, OrderStatus::Pending];
            }),
            q(&|q| {
                q.sort = SortKey::Amount;
                q.created_from = Some(t0() + Duration::seconds(1));
                q.created_before = Some(t0() + Duration::seconds(3));
            }),
            q(&|q| {
                q.sort = SortKey::Amount;
                q.statuses = vec![OrderStatus::Paid, OrderStatus::PartiallyRefunded];
            }),
            q(&|q| q.search = Some("ord_B".into())),
            q(&|q| q.search = Some("p-ord_Zx".into())),
            q(&|q| q.search = Some("T4".into())),
            q(&|q| q.search = Some("nothing".into())),
        ];
        for query in &queries {
            let want = expected(&all, query);
            let first = page(db, query, Seek::First, 100);
            assert_eq!(ids(&first.rows), want, "{query:?}");
            assert!(!first.more, "{query:?}");
            if want.is_empty() {
                continue;
            }
            for limit in [2, 4] {
                let (forward, back) = walk(db, query, limit);
                assert_eq!(forward, want, "{query:?} forward in pages of {limit}");
                assert_eq!(back, want, "{query:?} back in pages of {limit}");
            }
        }
        // What the walks relied on: more than one page, and ties within pages.
        assert!(expected(&all, &queries[0]).len() > 8);
    }

    fn the_late_payment_filter_and_a_search_find_only_their_rows_and_nothing_past_the_last_page(
        db: &Database,
    ) {
        store(
            db,
            vec![
                new_order("ord_a", 0, 100),
                new_order("ord_b", 1, 100),
                new_order("ord_c", 2, 100),
            ],
        );
        set(db, "ord_b", OrderStatus::Paid, true, Some("T-b"));
        set(db, "ord_c", OrderStatus::Paid, false, Some("T-c"));
        let late = OrderQuery {
            late_only: true,
            descending: true,
            ..OrderQuery::default()
        };
        let first = page(db, &late, Seek::First, 10);
        assert_eq!((ids(&first.rows), first.more), (vec!["ord_b".to_owned()], false));
        let only = PageKey::of(&first.rows[0], SortKey::Created);
        for seek in [Seek::After(only.clone()), Seek::Before(only)] {
            let beyond = page(db, &late, seek.clone(), 10);
            assert_eq!((beyond.rows.len(), beyond.more), (0, false), "{seek:?}");
        }
        let search = OrderQuery {
            search: Some("T-c".into()),
            ..OrderQuery::default()
        };
        assert_eq!(ids(&page(db, &search, Seek::First, 10).rows), ["ord_c"]);
    }

    fn a_page_is_explained_on_either_backend_by_its_own_planner(db: &Database) {
        store(db, vec![new_order("ord_a", 0, 100)]);
        let query = OrderQuery {
            statuses: vec![OrderStatus::Paid, OrderStatus::Closed],
            descending: true,
            ..OrderQuery::default()
        };
        let key = PageKey {
            value: 1,
            id: "ord_x".into(),
        };
        let plan = db
            .read_blocking(move |tx| orders::explain_page(tx, &query, &Seek::After(key)))
            .unwrap();
        assert!(plan.iter().any(|line| line.contains("orders")), "{plan:?}");
    }
}

/// Two instances that checked the same late-check step record it while neither has
/// committed: the second waits for the first and then finds the step taken.
#[test]
fn a_late_check_step_recorded_by_two_instances_at_once_on_postgresql_is_recorded_once() {
    use super::race::race;
    use crate::db::pg::testing::{TestSchema, SKIPPED};

    let Some(schema) = TestSchema::new() else {
        println!("{SKIPPED}");
        return;
    };
    let db = Database::open_target(&schema.target()).unwrap();
    store(&db, vec![new_order("ord_a", 0, 100)]);
    let record = || {
        let id = OrderId::parse("ord_a").unwrap();
        move |tx: &crate::db::Tx<'_>| orders::record_check(tx, &id, 0)
    };
    let (first, second) = race(&db, record(), record());
    assert_eq!((first, second.unwrap()), (true, false));
    let stored = db
        .read_blocking(|tx| {
            tx.one(
                "SELECT checks_done, next_check_at - created_at FROM orders",
                args![],
                |r| Ok((r.get_i64(0)?, r.get_opt_i64(1)?)),
            )
        })
        .unwrap();
    assert_eq!(
        stored,
        (1, Some(orders::LATE_CHECKS_MS[1])),
        "one step on, the next one kept"
    );
    drop(db);
}
