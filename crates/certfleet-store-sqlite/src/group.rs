//! The store thread: owns the connection and runs the work async callers queue. Work that
//! queued up while the previous work ran is committed together as one transaction (group
//! commit): a batch run writes several statuses per certificate from many orders at once,
//! and one commit per group instead of one per write halves the locking and WAL writing.
//! Each piece of work is a savepoint inside the group ([`crate::tx`]), so one that fails
//! rolls back alone; its caller hears of the outcome only once the group is committed, so
//! nothing is reported written before it is.

use std::sync::mpsc;

use rusqlite::Connection;

/// What a piece of work hands back: told whether the group it ran in was committed
/// (`Err` with why not), it answers its caller.
pub(crate) type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A piece of work for the store thread.
pub(crate) type Work = Box<dyn FnOnce(&mut Connection) -> Reply + Send>;

/// Most pieces of work in one group: bounds how long the first one waits for its commit.
const MAX_GROUP: usize = 64;

/// Runs work until every sender is dropped.
pub(crate) fn serve(mut conn: Connection, queue: &mpsc::Receiver<Work>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Ok(first) = queue.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(work) => group.push(work),
                Err(_) => break,
            }
        }
        run_group(&mut conn, &mut group);
    }
}

fn run_group(conn: &mut Connection, group: &mut Vec<Work>) {
    if group.len() == 1 || !conn.is_autocommit() || begin(conn).is_err() {
        // Alone (or no group could be opened: each then meets that error itself).
        for work in group.drain(..) {
            work(conn)(Ok(()));
        }
        return;
    }
    let mut replies = Vec::with_capacity(group.len());
    let mut lost = None;
    for work in group.drain(..) {
        if lost.is_some() {
            work(conn)(Ok(()));
            continue;
        }
        replies.push(work(conn));
        if conn.is_autocommit() {
            // SQLite rolled the whole group back (an I/O error, a full disk): the work
            // before was lost with it; the rest runs alone.
            lost = Some("the store rolled back the transaction it was part of".to_owned());
        }
    }
    let outcome = match lost {
        Some(why) => Err(why),
        None => commit(conn),
    };
    for reply in replies {
        reply(outcome.clone());
    }
}

fn begin(conn: &Connection) -> rusqlite::Result<usize> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])
}

fn commit(conn: &Connection) -> Result<(), String> {
    match conn
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
    {
        Ok(_) => Ok(()),
        Err(e) => {
            if !conn.is_autocommit() {
                // Nothing of the group may stay half-open for the next one.
                let _ = conn
                    .prepare_cached("ROLLBACK")
                    .and_then(|mut s| s.execute([]));
            }
            Err(format!("committing: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn conn() -> Connection {
        let c = Connection::open_in_memory().expect("open");
        c.execute_batch("CREATE TABLE t (x INTEGER UNIQUE)")
            .expect("schema");
        c
    }

    type Seen = Arc<Mutex<Vec<(i64, bool, Result<(), String>)>>>;

    /// Work inserting `x` through a savepoint; records whether the insert was done, and the
    /// reply it got, and into `grouped` whether it ran inside a group.
    fn insert(x: i64, seen: &Seen, grouped: &Arc<Mutex<Vec<bool>>>) -> Work {
        let (seen, grouped) = (seen.clone(), grouped.clone());
        Box::new(move |c: &mut Connection| {
            grouped.lock().expect("lock").push(!c.is_autocommit());
            let done = crate::tx::begin(c, crate::tx::Begin::Immediate)
                .and_then(|tx| tx.execute("INSERT INTO t VALUES (?1)", [x]).map(|_| tx))
                .and_then(|tx| tx.commit())
                .is_ok();
            Box::new(move |group: Result<(), String>| {
                seen.lock().expect("lock").push((x, done, group));
            }) as Reply
        })
    }

    #[test]
    fn a_group_commits_once_and_a_failed_piece_rolls_back_alone() {
        let mut c = conn();
        let seen = Seen::default();
        let grouped = Arc::default();
        // 2 twice: the second insert violates UNIQUE and must not undo 1, 2 or 3.
        let mut group: Vec<Work> = [1, 2, 2, 3]
            .iter()
            .map(|x| insert(*x, &seen, &grouped))
            .collect();
        run_group(&mut c, &mut group);
        assert!(c.is_autocommit(), "the group is committed");
        let rows: Vec<i64> = c
            .prepare("SELECT x FROM t ORDER BY x")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows, [1, 2, 3]);
        let seen = seen.lock().expect("lock");
        let done: Vec<bool> = seen.iter().map(|s| s.1).collect();
        assert_eq!(
            done,
            [true, true, false, true],
            "each piece saw its own outcome"
        );
        assert!(
            seen.iter().all(|s| s.2.is_ok()),
            "replies come after the commit"
        );
    }

    #[test]
    fn work_queued_together_runs_in_one_group_in_order() {
        let c = conn();
        let seen = Seen::default();
        let grouped = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        for x in 0..100 {
            tx.send(insert(x, &seen, &grouped)).expect("send");
        }
        drop(tx);
        serve(c, &rx);
        let seen = seen.lock().expect("lock");
        let order: Vec<i64> = seen.iter().map(|s| s.0).collect();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
        assert!(seen.iter().all(|s| s.1 && s.2.is_ok()));
        let grouped = grouped.lock().expect("lock");
        assert!(
            grouped.iter().all(|g| *g),
            "every piece ran inside a group: {grouped:?}"
        );
    }
}
