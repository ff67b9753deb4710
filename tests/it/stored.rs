//! Every row kassa keeps about orders, read straight from its database: a refusal is
//! shown to change nothing by comparing two of these.

use std::collections::BTreeMap;

use crate::helpers::{raw_connection, TestApp};

/// The tables a request about an order may write. `api_keys` is left out: any
/// authenticated request may refresh its `last_used_at`.
const TABLES: &[&str] = &[
    "orders",
    "order_events",
    "webhook_outbox",
    "refunds",
    "idempotency_keys",
    "notifications",
    "sandbox_trades",
    "sandbox_refunds",
    "sandbox_deliveries",
];

/// Table name -> its rows, each row its columns' values as text.
pub type Rows = BTreeMap<&'static str, Vec<Vec<String>>>;

/// Read on a connection of the test's own: what is committed, as stored.
pub async fn rows(app: &TestApp) -> Rows {
    let conn = raw_connection(&app.data_dir.join("kassa.db"));
    let mut all = Rows::new();
    for table in TABLES {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
            .unwrap();
        let width = stmt.column_count();
        let rows = stmt
            .query_map([], |row| {
                (0..width)
                    .map(|i| row.get_ref(i).map(|v| format!("{v:?}")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        all.insert(*table, rows.collect::<Result<_, _>>().unwrap());
    }
    all
}

/// How many rows each table holds.
pub fn counts(rows: &Rows) -> BTreeMap<&'static str, usize> {
    rows.iter().map(|(t, r)| (*t, r.len())).collect()
}
