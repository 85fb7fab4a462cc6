//! [`ApiClient`] against a scripted HTTP server on loopback: retries, `Retry-After`, the
//! bounds, transport failures, redaction of echoed secrets.

use std::ffi::c_void;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certfleet_plugin_abi::{Logger, RStr};

use crate::{ApiClient, HeaderAuth, Request, RetryPolicy, Secret};

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

unsafe extern "C" fn capture(_: *mut c_void, _: u32, message: RStr) {
    // SAFETY: the logger passes a view valid for this call.
    let text = String::from_utf8_lossy(unsafe { message.as_bytes() }).into_owned();
    if let Ok(mut l) = LOG.lock() {
        l.push(text);
    }
}

fn logger() -> Logger {
    // SAFETY: `capture` ignores the context and may be called from any thread.
    unsafe { Logger::new(capture, std::ptr::null_mut(), 5) }
}

/// Answers each connection with the next scripted response (status, extra header, body);
/// the last one repeats. Returns the base URL and the request heads seen.
fn server(script: Vec<(u16, &'static str, &'static str)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate().take(50) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            log.lock().expect("log").push(head);
            let (status, header, text) = script[i.min(script.len() - 1)];
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\n{header}Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (base, seen)
}

fn policy(max_attempts: u32, max_elapsed_secs: u64) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        max_elapsed: Duration::from_secs(max_elapsed_secs),
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    }
}

fn client(base: &str, p: RetryPolicy) -> ApiClient {
    ApiClient::new("url", base, Duration::from_secs(5), p, logger()).expect("client")
}

#[test]
fn a_429_is_retried_after_retry_after_then_succeeds() {
    let (base, seen) = server(vec![
        (429, "Retry-After: 1\r\n", "slow down"),
        (200, "", "{}"),
    ]);
    let c = client(&base, policy(3, 30));
    let auth = HeaderAuth::bearer(Secret::new("tok-0123456789"));
    let started = Instant::now();
    let resp = c
        .send(&Request::get("/x"), &auth, &ApiClient::default_retryable)
        .expect("send");
    assert_eq!((resp.status, resp.attempts), (200, 2));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(
        c.counters
            .retries
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let heads = seen.lock().expect("seen").clone();
    assert!(
        heads[0].contains("authorization: Bearer tok-0123456789"),
        "{heads:?}"
    );
    let log = LOG.lock().expect("log").join("\n");
    assert!(
        log.contains("GET ") && log.contains("/x: HTTP 429; retry 1 of 2"),
        "{log}"
    );
    assert!(!log.contains("tok-0123456789"));
}

#[test]
fn a_500_forever_stops_after_max_attempts() {
    let (base, seen) = server(vec![(500, "", "boom")]);
    let c = client(&base, policy(3, 30));
    let resp = c
        .send(
            &Request::get("/y"),
            &crate::NoAuth,
            &ApiClient::default_retryable,
        )
        .expect("send");
    assert_eq!((resp.status, resp.attempts), (500, 3));
    assert!(
        resp.after().starts_with(" (after 3 attempts in "),
        "{}",
        resp.after()
    );
    assert_eq!(seen.lock().expect("seen").len(), 3);
}

#[test]
fn a_retry_after_beyond_the_time_budget_is_not_waited_for() {
    let (base, _) = server(vec![(503, "Retry-After: 30\r\n", "later")]);
    let c = client(&base, policy(5, 2));
    let started = Instant::now();
    let resp = c
        .send(
            &Request::get("/z"),
            &crate::NoAuth,
            &ApiClient::default_retryable,
        )
        .expect("send");
    assert_eq!((resp.status, resp.attempts), (503, 1));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn other_statuses_are_not_retried_and_echoed_secrets_are_redacted() {
    let (base, seen) = server(vec![(403, "", "bad token tok-0123456789")]);
    let c = client(&base, policy(5, 30));
    let auth = HeaderAuth::bearer(Secret::new("tok-0123456789"));
    let resp = c
        .send(&Request::get("/w"), &auth, &ApiClient::default_retryable)
        .expect("send");
    assert_eq!((resp.status, resp.attempts), (403, 1));
    assert_eq!(resp.body, "bad token [redacted]");
    assert_eq!(seen.lock().expect("seen").len(), 1);
}

#[test]
fn no_answer_is_a_network_error_after_bounded_attempts() {
    // A port that was free a moment ago: connections are refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("a")
        .port();
    let c = client(&format!("http://127.0.0.1:{port}"), policy(3, 30));
    let err = c
        .send(
            &Request::get("/v"),
            &crate::NoAuth,
            &ApiClient::default_retryable,
        )
        .expect_err("refused");
    assert_eq!(err.kind, certfleet_plugin_abi::ErrorKind::Network);
    assert!(err.message.contains("(after 3 attempts in"), "{err}");
}

#[test]
fn bad_base_urls_and_policies_are_config_errors() {
    for bad in ["ftp://x", "http://", "api.example.com", "https://x/?q"] {
        let e = ApiClient::new(
            "base_url",
            bad,
            Duration::from_secs(1),
            policy(1, 1),
            logger(),
        )
        .expect_err(bad);
        assert!(e.message.starts_with(&format!("base_url = {bad:?}")), "{e}");
    }
    assert!(crate::settings::retry_policy(0, 10).is_err());
    assert!(crate::settings::retry_policy(3, 0).is_err());
    assert!(crate::settings::timeout(0).is_err());
}
