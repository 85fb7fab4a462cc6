//! Transactions whose `BEGIN` and `COMMIT` stay prepared. rusqlite's `Transaction` runs
//! them through `execute_batch`, which parses the SQL on every call: with five fenced
//! writes and a claim per certificate that was a twentieth of a batch's client CPU.
//!
//! Inside the store thread's group transaction ([`crate::group`]) a transaction is a
//! savepoint: it commits into the group and rolls back alone.

use std::ops::Deref;

use rusqlite::Connection;

/// An open transaction on `conn`; rolled back when dropped without [`Tx::commit`].
pub(crate) struct Tx<'c> {
    conn: &'c mut Connection,
    open: bool,
    /// A savepoint inside an enclosing transaction rather than a transaction of its own.
    nested: bool,
}

/// How the transaction takes SQLite's lock.
#[derive(Clone, Copy)]
pub(crate) enum Begin {
    /// The write lock at once: the transaction reads what it then writes.
    Immediate,
    /// No lock until the first read (read-only transactions).
    Deferred,
}

impl Begin {
    fn sql(self) -> &'static str {
        match self {
            Begin::Immediate => "BEGIN IMMEDIATE",
            Begin::Deferred => "BEGIN DEFERRED",
        }
    }
}

/// Starts a transaction, or a savepoint when `conn` is inside one already (the group the
/// store thread opened holds the write lock, whatever `how` asks). `&mut` as rusqlite
/// asks: no other statement of this connection may run inside it except through the
/// returned [`Tx`].
pub(crate) fn begin(conn: &mut Connection, how: Begin) -> rusqlite::Result<Tx<'_>> {
    let nested = !conn.is_autocommit();
    let sql = if nested { "SAVEPOINT item" } else { how.sql() };
    conn.prepare_cached(sql)?.execute([])?;
    Ok(Tx {
        conn,
        open: true,
        nested,
    })
}

impl Tx<'_> {
    /// The connection, for work that opens transactions of its own inside this one (they
    /// nest as savepoints).
    pub(crate) fn conn(&mut self) -> &mut Connection {
        self.conn
    }

    /// Commits; on an error (`SQLITE_BUSY`, a full disk) the transaction is still open and
    /// dropping it rolls it back. A savepoint is released into the enclosing transaction.
    pub(crate) fn commit(mut self) -> rusqlite::Result<()> {
        let sql = if self.nested {
            "RELEASE item"
        } else {
            "COMMIT"
        };
        self.conn.prepare_cached(sql)?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        // Only on an error path, whose own error is what the caller returns. Should the
        // ROLLBACK fail as well, the next `begin` on this connection fails ("cannot start
        // a transaction within a transaction") and says so; SQLite itself rolls back a
        // transaction whose statement failed with a full disk or an I/O error (the group
        // notices: see `crate::group`).
        if !self.open || self.conn.is_autocommit() {
            return;
        }
        let run = |sql: &str| {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut s| s.execute([]))
        };
        if self.nested {
            // ROLLBACK TO keeps the savepoint open; RELEASE ends it with nothing in it.
            let _ = run("ROLLBACK TO item").and_then(|_| run("RELEASE item"));
        } else {
            let _ = run("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().expect("open");
        c.execute_batch("CREATE TABLE t (x INTEGER)")
            .expect("schema");
        c
    }

    fn count(c: &Connection) -> i64 {
        c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    #[test]
    fn committed_writes_stay_and_dropped_ones_are_rolled_back() {
        let mut c = conn();
        let tx = begin(&mut c, Begin::Immediate).expect("begin");
        tx.execute("INSERT INTO t VALUES (1)", []).expect("insert");
        tx.commit().expect("commit");
        assert_eq!(count(&c), 1);

        let tx = begin(&mut c, Begin::Deferred).expect("begin");
        tx.execute("INSERT INTO t VALUES (2)", []).expect("insert");
        drop(tx);
        assert_eq!(count(&c), 1, "an uncommitted transaction is rolled back");
        assert!(c.is_autocommit(), "and the connection is out of it");

        // The cached BEGIN/COMMIT statements serve again.
        for _ in 0..3 {
            let tx = begin(&mut c, Begin::Immediate).expect("begin again");
            tx.execute("INSERT INTO t VALUES (3)", []).expect("insert");
            tx.commit().expect("commit again");
        }
        assert_eq!(count(&c), 4);
    }

    #[test]
    fn inside_a_transaction_each_commits_into_it_and_rolls_back_alone() {
        let mut c = conn();
        c.execute_batch("BEGIN IMMEDIATE").expect("outer");
        let tx = begin(&mut c, Begin::Immediate).expect("nested begin");
        tx.execute("INSERT INTO t VALUES (1)", []).expect("insert");
        tx.commit().expect("release");
        let tx = begin(&mut c, Begin::Deferred).expect("nested begin");
        tx.execute("INSERT INTO t VALUES (2)", []).expect("insert");
        drop(tx);
        assert!(
            !c.is_autocommit(),
            "a dropped savepoint leaves the outer transaction open"
        );
        assert_eq!(count(&c), 1, "only the dropped savepoint's row is gone");
        c.execute_batch("ROLLBACK").expect("outer rollback");
        assert_eq!(
            count(&c),
            0,
            "released savepoints belong to the outer transaction"
        );
    }
}
