//! `db::provider_calls` on both backends: calls read back as logged, in the order
//! logged, under their own order only.

use chrono::Duration;

use super::orders::{new_order, store, t0};
use crate::db::pg::testing::both_backends;
use crate::db::provider_calls::{self, CallRecord, NewCall};
use crate::domain::provider_call::{CallOutcome, ProviderCall};
use crate::domain::{OrderId, ProviderKind};

both_backends! {
    fn logged_provider_calls_read_back_whole_in_the_order_logged_and_only_for_their_order(db: &Database) {
        store(db, vec![new_order("ord_a", 0, 100), new_order("ord_b", 0, 100)]);
        let (a, b) = (OrderId::parse("ord_a").unwrap(), OrderId::parse("ord_b").unwrap());
        let calls = vec![
            (
                a.clone(),
                9,
                ProviderKind::Alipay,
                ProviderCall::Precreate,
                CallOutcome::Ok,
                None,
            ),
            (
                b.clone(),
                1,
                ProviderKind::Wechat,
                ProviderCall::Query,
                CallOutcome::Unknown,
                Some("timeout".to_owned()),
            ),
            (
                a.clone(),
                2,
                ProviderKind::Alipay,
                ProviderCall::Refund,
                CallOutcome::Rejected,
                Some("ACQ.TRADE_NOT_EXIST".to_owned()),
            ),
            (
                a.clone(),
                2,
                ProviderKind::Alipay,
                ProviderCall::RefundQuery,
                CallOutcome::Ok,
                None,
            ),
        ];
        let logged = calls.clone();
        db.write_blocking(move |tx| {
            for (order_id, secs, provider, call, outcome, detail) in &logged {
                provider_calls::insert(
                    tx,
                    &NewCall {
                        order_id,
                        at: t0() + Duration::seconds(*secs),
                        provider: *provider,
                        call: *call,
                        outcome: *outcome,
                        detail: detail.as_deref(),
                    },
                )?;
            }
            Ok(())
        })
        .unwrap();
        let list = |id: &OrderId| {
            db.read_blocking(|tx| provider_calls::list_for_order(tx, id))
                .unwrap()
        };
        let (of_a, of_b) = (list(&a), list(&b));
        assert!(of_a.windows(2).all(|w| w[0].id < w[1].id));
        let want = |i: usize| {
            let (order_id, secs, provider, call, outcome, detail) = calls[i].clone();
            CallRecord {
                id: 0,
                order_id,
                at: t0() + Duration::seconds(secs),
                provider,
                call,
                outcome,
                detail,
            }
        };
        let strip = |rows: Vec<CallRecord>| {
            rows.into_iter()
                .map(|c| CallRecord { id: 0, ..c })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(of_a), [want(0), want(2), want(3)]);
        assert_eq!(strip(of_b), [want(1)]);
        assert!(list(&OrderId::parse("ord_none").unwrap()).is_empty());
    }
}
