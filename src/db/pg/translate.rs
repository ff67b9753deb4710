//! SQLite statement text to PostgreSQL text. kassa's statements are written once, in
//! the dialect both accept, with SQLite's numbered parameters; PostgreSQL numbers them
//! `$N`, and SQLite's `INDEXED BY` planner hint has no PostgreSQL counterpart (its
//! planner picks indexes by itself). Nothing else is rewritten: a statement that needs
//! more is written per backend in its op.
//!
//! The scan knows SQLite's quoting only. Text written for PostgreSQL alone must not
//! use what it does not know: `E'…\'…'` strings (a `\'` ends the literal early),
//! `$$…$$` or `$tag$…$tag$` bodies and nested `/* /* */ */` comments (a `?` inside is
//! rewritten), or jsonb's `?`, `?|` and `?&` operators (rewritten as parameters).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// How many distinct texts are kept translated. Static statements are a few hundred;
/// dynamic ones (filters) are combinations of a few parts. Past this, texts are
/// translated each time rather than the cache growing without bound.
const CACHED_TEXTS: usize = 4096;

/// Translations by SQLite text, shared by every connection of a pool.
#[derive(Default)]
pub(super) struct Translations(RwLock<HashMap<Box<str>, Arc<str>>>);

impl Translations {
    pub(super) fn get(&self, sqlite: &str) -> Arc<str> {
        // A poisoned lock only means a panic elsewhere while it was held; the map
        // itself is always whole (inserts are single calls).
        if let Some(pg) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(sqlite) {
            return pg.clone();
        }
        let pg: Arc<str> = translate(sqlite).into();
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if map.len() < CACHED_TEXTS {
            map.insert(sqlite.into(), pg.clone());
        }
        pg
    }
}

/// `?N` becomes `$N` and a bare `?` the next number after the largest so far (SQLite's
/// rule), outside string literals, quoted identifiers and comments; `INDEXED BY name`
/// is dropped.
pub(super) fn translate(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut largest = 0_u64;
    // Start of the text not yet copied to `out`.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                // A doubled quote inside is an escaped quote: the scan just goes on.
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            b'?' => {
                let digits = bytes[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                let number = match sql[i + 1..i + 1 + digits].parse::<u64>() {
                    Ok(n) => n,
                    Err(_) => largest + 1,
                };
                largest = largest.max(number);
                out.push_str(&sql[copied..i]);
                out.push('$');
                out.push_str(&number.to_string());
                i += 1 + digits;
                copied = i;
            }
            b if is_word(b) => {
                let start = i;
                while i < bytes.len() && is_word(bytes[i]) {
                    i += 1;
                }
                if sql[start..i].eq_ignore_ascii_case("INDEXED") && (start == 0 || !is_word(bytes[start - 1]))
                {
                    if let Some(end) = indexed_by_end(bytes, i) {
                        out.push_str(&sql[copied..start]);
                        i = end;
                        copied = end;
                    }
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    out
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// After `INDEXED` at `at`: the end of ` BY name`, if that is what follows.
fn indexed_by_end(bytes: &[u8], at: usize) -> Option<usize> {
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let by = skip_space(at);
    if by == at || !bytes.get(by..by + 2)?.eq_ignore_ascii_case(b"BY") {
        return None;
    }
    let name = skip_space(by + 2);
    if name == by + 2 {
        return None;
    }
    let mut end = name;
    while end < bytes.len() && is_word(bytes[end]) {
        end += 1;
    }
    (end > name).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_become_dollar_parameters_with_the_same_number() {
        assert_eq!(
            translate("SELECT a FROM t WHERE b = ?2 AND c IN (?1, ?10) LIMIT ?3"),
            "SELECT a FROM t WHERE b = $2 AND c IN ($1, $10) LIMIT $3"
        );
        assert_eq!(translate("VALUES(?1,?2)"), "VALUES($1,$2)");
        assert_eq!(translate("x = ?12"), "x = $12");
    }

    #[test]
    fn a_bare_question_mark_takes_the_number_after_the_largest_so_far_as_sqlite_does() {
        assert_eq!(translate("a = ? AND b = ?"), "a = $1 AND b = $2");
        assert_eq!(translate("a = ?5 AND b = ?"), "a = $5 AND b = $6");
    }

    #[test]
    fn question_marks_in_literals_quoted_names_and_comments_are_left_as_they_are() {
        let sql = "SELECT '?1', 'it''s ?2', \"odd?3\" FROM t -- why ?4\nWHERE a = ?1 /* ?5 */ AND b = ?2";
        assert_eq!(
            translate(sql),
            "SELECT '?1', 'it''s ?2', \"odd?3\" FROM t -- why ?4\nWHERE a = $1 /* ?5 */ AND b = $2"
        );
    }

    #[test]
    fn indexed_by_and_its_index_name_are_dropped_in_any_case_and_nothing_else() {
        assert_eq!(
            translate("SELECT * FROM orders INDEXED BY orders_by_created WHERE a = ?1"),
            "SELECT * FROM orders  WHERE a = $1"
        );
        assert_eq!(
            translate("FROM orders o indexed   by\n orders_late WHERE"),
            "FROM orders o  WHERE"
        );
        // Not the hint: a column named so, a literal, a comment, a longer word.
        for same in [
            "SELECT indexed FROM t",
            "SELECT 'INDEXED BY x' FROM t",
            "SELECT a FROM t -- INDEXED BY x",
            "SELECT reindexed_by FROM t",
            "SELECT a FROM t WHERE indexed = 1 ORDER BY a",
        ] {
            assert_eq!(translate(same), same);
        }
    }

    #[test]
    fn unterminated_quotes_and_comments_are_copied_whole_without_a_panic() {
        assert_eq!(translate("SELECT 'open ?1"), "SELECT 'open ?1");
        assert_eq!(translate("SELECT \"open ?1"), "SELECT \"open ?1");
        assert_eq!(translate("SELECT 1 /* open ?1"), "SELECT 1 /* open ?1");
        assert_eq!(translate("SELECT 1 -- ?1"), "SELECT 1 -- ?1");
        assert_eq!(translate("a = ?"), "a = $1");
        assert_eq!(translate("?"), "$1");
        assert_eq!(translate("SELECT a FROM t INDEXED"), "SELECT a FROM t INDEXED");
        assert_eq!(
            translate("SELECT a FROM t INDEXED BY"),
            "SELECT a FROM t INDEXED BY"
        );
    }

    #[test]
    fn the_cache_gives_the_same_translation_as_a_fresh_one() {
        let cache = Translations::default();
        let sql = "SELECT a FROM t INDEXED BY i WHERE a = ?1";
        let first = cache.get(sql);
        assert_eq!(&*first, translate(sql));
        assert!(Arc::ptr_eq(&first, &cache.get(sql)), "kept, not translated again");
    }
}
