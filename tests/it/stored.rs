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

pub async fn rows(app: &TestApp) -> Rows {
    app.state
        .db
        .read(|c| {
            let mut all = Rows::new();
            for table in TABLES {
                let mut stmt = c.prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))?;
                let width = stmt.column_count();
                let rows = stmt.query_map([], |row| {
                    (0..width)
                        .map(|i| row.get_ref(i).map(|v| format!("{v:?}")))
                        .collect::<Result<Vec<_>, _>>()
                })?;
                all.insert(*table, rows.collect::<Result<_, _>>()?);
            }
            Ok(all)
        })
        .await
        .unwrap()
}

/// How many rows each table holds.
pub fn counts(rows: &Rows) -> BTreeMap<&'static str, usize> {
    rows.iter().map(|(t, r)| (*t, r.len())).collect()
}
