//! Alone in its binary: it counts the process's threads.
mod common;
use common::*;
use heartline::{Heartbeat, Persistence};

fn heartline_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_owned())
        .filter(|n| n.starts_with("heartline-"))
        .collect()
}

fn task_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn no_thread_outlives_close() {
    init();
    let before = task_count();
    let server = server();
    let dir = std::env::temp_dir().join(format!("heartline-threads-{}", std::process::id()));
    let client = fast(server.url())
        .heartbeat(Heartbeat {
            interval: 20 * MS,
            ..common::heartbeat()
        })
        .persistence(Persistence::in_dir(&dir))
        .build()
        .unwrap();
    wait_open(&client.events());
    // /proc shows names cut to 15 bytes, and a new thread shows its
    // parent's name until it has set its own.
    let expected = vec![
        "heartline-heart",
        "heartline-io",
        "heartline-state",
        "heartline-super",
    ];
    let sorted = || {
        let mut names = heartline_threads();
        names.sort();
        names
    };
    wait_until("supervisor, io and heartbeat threads", || {
        sorted() == expected
    });
    // Survive a reconnect: the old connection's threads are joined.
    server.drop_all();
    assert!(server.wait_connections(2, WAIT));
    wait_until("threads of the new connection", || sorted() == expected);
    client.close();
    // close() has joined every thread; the kernel may list a joined
    // thread in /proc for a moment longer while it tears the task down.
    wait_until("no heartline thread after close", || {
        heartline_threads().is_empty()
    });
    drop(client);
    drop(server);
    wait_until("the task count back to where it was", || {
        task_count() == before
    });
}
