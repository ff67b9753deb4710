//! Every row kassa keeps about orders, read straight from its database: a refusal is
//! shown to change nothing by comparing two of these.

use std::collections::BTreeMap;

use crate::helpers::TestApp;

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
    let db = app.db();
    let mut all = Rows::new();
    for table in TABLES {
        let found = db.rows(&format!("SELECT * FROM {table} ORDER BY 1, 2"), crate::vals![]);
        all.insert(*table, found.into_iter().map(text_row).collect());
    }
    all
}

/// A row's columns as text, NULL as `NULL`.
pub fn text_row(row: crate::helpers::DbRow) -> Vec<String> {
    row.0
        .into_iter()
        .map(|cell| cell.unwrap_or_else(|| "NULL".to_owned()))
        .collect()
}

/// How many rows each table holds.
pub fn counts(rows: &Rows) -> BTreeMap<&'static str, usize> {
    rows.iter().map(|(t, r)| (*t, r.len())).collect()
}
