//! The public HTTP API of a single node, against a real server on 127.0.0.1:0.

mod common;

use bytes::Bytes;
use common::{NodeOpts, TestNode};
use hearsay::client::{Client, Response};
use hyper::{Method, StatusCode};
use std::io::{Read, Write};

const MAX: usize = 1 << 20;

/// method, path, headers, body, expected status, expected error code
type BadCase = (Method, String, Vec<(&'static str, &'static str)>, Bytes, StatusCode, &'static str);

async fn node() -> TestNode {
    TestNode::start(NodeOpts { max_value_bytes: MAX, ..NodeOpts::default() }).await
}

fn assert_json_error(resp: &Response, status: StatusCode, code: &str) {
    assert_eq!(resp.status, status, "body: {}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"), "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["error"], code, "{}", resp.text());
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", resp.text());
}

/// Everything observable about the store: per-shard counts plus every key and value.
async fn snapshot(c: &Client) -> (serde_json::Value, Vec<(String, Bytes)>) {
    let shards = c.get_path("/admin/shards").await.unwrap().json();
    let mut entries = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = after.as_ref().map_or("/v1/kv?limit=1000".to_string(), |a| format!("/v1/kv?limit=1000&after={a}"));
        let page = c.get_path(&q).await.unwrap().json();
        for k in page["keys"].as_array().unwrap() {
            let k = k.as_str().unwrap().to_string();
            let v = c.get_path(&format!("/v1/kv/{k}")).await.unwrap().body;
            entries.push((k, v));
        }
        match page["next_after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => return (shards, entries),
        }
    }
}

#[tokio::test]
async fn round_trip_overwrite_delete() {
    let n = node().await;
    let c = n.client();
    let r = c.put(b"greeting", "hello", "").await.unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    let v1 = r.header("x-hearsay-version").unwrap().to_string();
    assert_eq!(r.header("etag").unwrap(), format!("\"{v1}\""));

    let g = c.get(b"greeting", "").await.unwrap();
    assert_eq!((g.status, &g.body[..]), (StatusCode::OK, &b"hello"[..]));
    assert_eq!(g.header("x-hearsay-version").unwrap(), v1);

    let r = c.put(b"greeting", "bonjour", "w=one").await.unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let v2 = r.header("x-hearsay-version").unwrap().to_string();
    assert!(v2.parse::<hearsay::types::Version>().unwrap() > v1.parse().unwrap());
    assert_eq!(&c.get(b"greeting", "r=all").await.unwrap().body[..], b"bonjour");

    let d = c.delete(b"greeting", "").await.unwrap();
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    assert_json_error(&c.get(b"greeting", "").await.unwrap(), StatusCode::NOT_FOUND, "not_found");
    assert_json_error(&c.get(b"never-written", "").await.unwrap(), StatusCode::NOT_FOUND, "not_found");
    // Writing after a delete creates the key again.
    assert_eq!(c.put(b"greeting", "hi again", "").await.unwrap().status, StatusCode::CREATED);
}

#[tokio::test]
async fn awkward_keys_and_values() {
    let n = node().await;
    let c = n.client();
    // A key with '/' and the same key spelled with %2F are one key.
    assert_eq!(c.send(Method::PUT, "/v1/kv/dir/sub/file", &[], Bytes::from("slash")).await.unwrap().status, StatusCode::CREATED);
    assert_eq!(&c.get_path("/v1/kv/dir%2Fsub%2Ffile").await.unwrap().body[..], b"slash");
    // Unicode and raw non-UTF-8 bytes round-trip through percent-encoding.
    for key in ["ünïcødé/ключ/鍵".as_bytes(), &[0xff, 0x00, 0x25, 0x2f, 0x3f, 0x23][..]] {
        assert_eq!(c.put(key, "v", "").await.unwrap().status, StatusCode::CREATED);
        assert_eq!(&c.get(key, "").await.unwrap().body[..], b"v");
    }
    // An empty value is a value, not a delete.
    assert_eq!(c.put(b"empty", Bytes::new(), "").await.unwrap().status, StatusCode::CREATED);
    let g = c.get(b"empty", "").await.unwrap();
    assert_eq!((g.status, g.body.len()), (StatusCode::OK, 0));
    // Exactly the limit is accepted, byte for byte.
    let big: Bytes = (0..MAX).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    assert_eq!(c.put(b"big", big.clone(), "").await.unwrap().status, StatusCode::CREATED);
    assert_eq!(c.get(b"big", "").await.unwrap().body, big);
    // A 1024-byte key is accepted.
    let long = vec![b'k'; 1024];
    assert_eq!(c.put(&long, "x", "").await.unwrap().status, StatusCode::CREATED);
    assert_eq!(&c.get(&long, "").await.unwrap().body[..], b"x");
}

#[tokio::test]
async fn if_match_is_compare_and_set() {
    let n = node().await;
    let c = n.client();
    // If-Match: * on a missing key fails; nothing is created.
    let r = c.send(Method::PUT, "/v1/kv/cas", &[("if-match", "*")], Bytes::from("a")).await.unwrap();
    assert_json_error(&r, StatusCode::PRECONDITION_FAILED, "precondition_failed");
    assert_eq!(c.get(b"cas", "").await.unwrap().status, StatusCode::NOT_FOUND);

    let v1 = c.put(b"cas", "a", "").await.unwrap().header("etag").unwrap().to_string();
    let r = c.send(Method::PUT, "/v1/kv/cas", &[("if-match", &v1)], Bytes::from("b")).await.unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // The old tag no longer matches: a lost update is refused.
    let r = c.send(Method::PUT, "/v1/kv/cas", &[("if-match", &v1)], Bytes::from("c")).await.unwrap();
    assert_json_error(&r, StatusCode::PRECONDITION_FAILED, "precondition_failed");
    assert_eq!(&c.get(b"cas", "").await.unwrap().body[..], b"b");
    let r = c.send(Method::DELETE, "/v1/kv/cas", &[("if-match", &v1)], Bytes::new()).await.unwrap();
    assert_json_error(&r, StatusCode::PRECONDITION_FAILED, "precondition_failed");
    let r = c.send(Method::PUT, "/v1/kv/cas", &[("if-match", "*")], Bytes::from("d")).await.unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(&c.get(b"cas", "").await.unwrap().body[..], b"d");
}

#[tokio::test]
async fn if_none_match_star_creates_only() {
    let n = node().await;
    let c = n.client();
    let create = |v: &'static str| c.send(Method::PUT, "/v1/kv/once", &[("if-none-match", "*")], Bytes::from(v));
    assert_eq!(create("first").await.unwrap().status, StatusCode::CREATED);
    // The key exists now: a second create is refused and changes nothing.
    let r = create("second").await.unwrap();
    assert_json_error(&r, StatusCode::PRECONDITION_FAILED, "precondition_failed");
    assert_eq!(&c.get(b"once", "").await.unwrap().body[..], b"first");
    // A deleted key is absent again, as it reads 404.
    assert_eq!(c.delete(b"once", "").await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(create("third").await.unwrap().status, StatusCode::CREATED);
    assert_eq!(&c.get(b"once", "").await.unwrap().body[..], b"third");
}

#[tokio::test]
async fn a_get_is_304_while_the_reader_holds_the_current_version() {
    let n = node().await;
    let c = n.client();
    let v1 = c.put(b"cached", "a", "").await.unwrap().header("etag").unwrap().to_string();
    let get = |tag: String| {
        let c = c.clone();
        async move { c.send(Method::GET, "/v1/kv/cached", &[("if-none-match", tag.as_str())], Bytes::new()).await.unwrap() }
    };
    let r = get(v1.clone()).await;
    assert_eq!((r.status, r.header("etag"), r.body.len()), (StatusCode::NOT_MODIFIED, Some(v1.as_str()), 0));
    assert_eq!(get("*".into()).await.status, StatusCode::NOT_MODIFIED);
    assert_eq!(get(format!("\"0000000000000001-0000000000000001\", W/{v1}")).await.status, StatusCode::NOT_MODIFIED);
    // Changed since: the whole value, with the new tag.
    let v2 = c.put(b"cached", "b", "").await.unwrap().header("etag").unwrap().to_string();
    let r = get(v1.clone()).await;
    assert_eq!((r.status, r.header("etag"), &r.body[..]), (StatusCode::OK, Some(v2.as_str()), &b"b"[..]));
    // Absent or deleted: 404 whatever the reader holds.
    c.delete(b"cached", "").await.unwrap();
    assert_eq!(get(v2).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get("*".into()).await.status, StatusCode::NOT_FOUND);
    // A tag that is not a version, too many tags, or two header lines: 400.
    assert_json_error(&get("\"nonsense\"".into()).await, StatusCode::BAD_REQUEST, "bad_request");
    assert_json_error(&get(vec![v1.as_str(); 65].join(", ")).await, StatusCode::BAD_REQUEST, "bad_request");
    let two = [("if-none-match", v1.as_str()), ("if-none-match", "*")];
    assert_json_error(&c.send(Method::GET, "/v1/kv/cached", &two, Bytes::new()).await.unwrap(), StatusCode::BAD_REQUEST, "bad_request");
    let two = [("if-match", "*"), ("if-match", "*")];
    assert_json_error(&c.send(Method::PUT, "/v1/kv/cached", &two, Bytes::from("c")).await.unwrap(), StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn list_pages_through_keys_in_order() {
    let n = node().await;
    let c = n.client();
    let mut expected: Vec<String> = (0..37).map(|i| format!("page/{i:03}")).collect();
    for k in &expected {
        c.put(k.as_bytes(), "v", "").await.unwrap();
    }
    for k in ["other/1", "pagf", "pag"] {
        c.put(k.as_bytes(), "v", "").await.unwrap();
    }
    c.put(b"page/gone", "v", "").await.unwrap();
    c.delete(b"page/gone", "").await.unwrap();
    expected.sort();

    let mut seen = Vec::new();
    let mut path = "/v1/kv?prefix=page%2F&limit=10".to_string();
    let mut pages = 0;
    loop {
        let body = c.get_path(&path).await.unwrap().json();
        let keys: Vec<String> = body["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
        assert!(keys.len() <= 10);
        seen.extend(keys);
        pages += 1;
        match body["next_after"].as_str() {
            Some(after) => path = format!("/v1/kv?prefix=page%2F&limit=10&after={after}"),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 4);
    let all = c.get_path("/v1/kv").await.unwrap().json();
    assert_eq!(all["keys"].as_array().unwrap().len(), 40);
}

#[tokio::test]
async fn bad_input_is_refused_with_json_and_changes_nothing() {
    let n = node().await;
    let c = n.client();
    c.put(b"existing", "original", "").await.unwrap();
    let etag_before = c.get(b"existing", "").await.unwrap().header("etag").unwrap().to_string();
    let before = snapshot(&c).await;

    let long_key = format!("/v1/kv/{}", "k".repeat(1025));
    let too_big = Bytes::from(vec![0u8; MAX + 1]);
    let cases: Vec<BadCase> = vec![
        (Method::PUT, long_key.clone(), vec![], Bytes::from("v"), StatusCode::BAD_REQUEST, "invalid_key"),
        (Method::GET, long_key.clone(), vec![], Bytes::new(), StatusCode::BAD_REQUEST, "invalid_key"),
        (Method::DELETE, long_key, vec![], Bytes::new(), StatusCode::BAD_REQUEST, "invalid_key"),
        (Method::PUT, "/v1/kv/".into(), vec![], Bytes::from("v"), StatusCode::BAD_REQUEST, "invalid_key"),
        (Method::PUT, "/v1/kv/bad%zzpct".into(), vec![], Bytes::from("v"), StatusCode::BAD_REQUEST, "invalid_key"),
        (Method::PUT, "/v1/kv/bad%2".into(), vec![], Bytes::from("v"), StatusCode::BAD_REQUEST, "invalid_key"),
        (Method::PUT, "/v1/kv/toobig".into(), vec![], too_big.clone(), StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
        (Method::PUT, "/v1/kv/existing".into(), vec![], too_big, StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
        (Method::PUT, "/v1/kv/k?w=most".into(), vec![], Bytes::from("v"), StatusCode::BAD_REQUEST, "bad_request"),
        (Method::PUT, "/v1/kv/k?W=all".into(), vec![], Bytes::from("v"), StatusCode::BAD_REQUEST, "bad_request"),
        (Method::DELETE, "/v1/kv/existing?w=".into(), vec![], Bytes::new(), StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/v1/kv/existing?r=two".into(), vec![], Bytes::new(), StatusCode::BAD_REQUEST, "bad_request"),
        (Method::PUT, "/v1/kv/existing?w=one&w=all".into(), vec![], Bytes::from("v"), StatusCode::BAD_REQUEST, "bad_request"),
        (Method::DELETE, "/v1/kv/existing?w=one&w=one".into(), vec![], Bytes::new(), StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/v1/kv?prefix=a&limit=5&prefix=b".into(), vec![], Bytes::new(), StatusCode::BAD_REQUEST, "bad_request"),
        (Method::PUT, "/v1/kv/existing".into(), vec![("if-none-match", "\"x\"")], Bytes::from("v"), StatusCode::BAD_REQUEST, "bad_request"),
        (Method::DELETE, "/v1/kv/existing".into(), vec![("if-none-match", "*")], Bytes::new(), StatusCode::BAD_REQUEST, "bad_request"),
        (
            Method::PUT,
            "/v1/kv/existing".into(),
            vec![("if-match", "*"), ("if-none-match", "*")],
            Bytes::from("v"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::PUT,
            "/v1/kv/existing".into(),
            vec![("if-none-match", "*")],
            Bytes::from("v"),
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
        ),
        (
            Method::PUT,
            "/v1/kv/existing".into(),
            vec![("if-match", "\"nonsense\"")],
            Bytes::from("v"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::PUT,
            "/v1/kv/existing".into(),
            vec![("if-match", "\"0000000000000001-0000000000000001\"")],
            Bytes::from("v"),
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
        ),
        (
            Method::DELETE,
            "/v1/kv/existing".into(),
            vec![("if-match", "\"0000000000000001-0000000000000001\"")],
            Bytes::new(),
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
        ),
        (Method::PATCH, "/v1/kv/existing".into(), vec![], Bytes::from("v"), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (Method::POST, "/v1/kv/existing".into(), vec![], Bytes::from("v"), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (Method::DELETE, "/v1/kv".into(), vec![], Bytes::new(), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (Method::GET, "/v1/kv?limit=0".into(), vec![], Bytes::new(), StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/v1/kv?limit=1001".into(), vec![], Bytes::new(), StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/v1/kv?limit=ten".into(), vec![], Bytes::new(), StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/v1/kv?prefix=%zz".into(), vec![], Bytes::new(), StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/no/such/route".into(), vec![], Bytes::new(), StatusCode::NOT_FOUND, "not_found"),
    ];
    for (method, path, headers, body, status, code) in cases {
        let resp = c.send(method.clone(), &path, &headers, body).await.unwrap();
        assert_json_error(&resp, status, code);
    }
    // A chunked body (no Content-Length) over the limit is cut off at the limit.
    let url = n.url.clone();
    let resp = tokio::task::spawn_blocking(move || chunked_put(&url, "/v1/kv/chunked", MAX + 10)).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("\"value_too_large\""), "{resp}");

    assert_eq!(snapshot(&c).await, before, "a refused request changed the store");
    assert_eq!(c.get(b"existing", "").await.unwrap().header("etag").unwrap(), etag_before);
    assert_eq!(c.get(b"chunked", "").await.unwrap().status, StatusCode::NOT_FOUND);
}

/// Sends a chunked PUT of `len` bytes on a raw socket and returns the response head and body.
fn chunked_put(url: &str, path: &str, len: usize) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = raw(url);
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    // Read while writing: the server answers 413 mid-body and closes, and a
    // reset would discard a response nobody had read yet.
    let mut reader = s.try_clone().unwrap();
    let read = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = reader.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    write!(s, "PUT {path} HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n").unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        if write!(s, "{n:x}\r\n").and_then(|_| s.write_all(&chunk[..n])).and_then(|_| s.write_all(b"\r\n")).is_err() {
            break;
        }
        sent += n;
    }
    let _ = s.write_all(b"0\r\n\r\n");
    read.join().unwrap()
}

#[tokio::test]
async fn health_ready_metrics_and_shards() {
    let n = node().await;
    let c = n.client();
    for _ in 0..3 {
        c.put(b"m", "v", "").await.unwrap();
    }
    assert_eq!(c.get_path("/health").await.unwrap().status, StatusCode::OK);
    assert_eq!(c.get_path("/ready").await.unwrap().json()["status"], "ready");
    let shards = c.get_path("/admin/shards").await.unwrap().json();
    assert_eq!(shards["shard_count"], 8);
    let total: u64 = shards["shards"].as_array().unwrap().iter().map(|s| s["keys"].as_u64().unwrap()).sum();
    assert_eq!(total, 1);
    let metrics = c.get_path("/metrics").await.unwrap().text();
    assert!(metrics.contains("hearsay_http_requests_total{method=\"PUT\",route=\"/v1/kv/{*key}\",status=\"201\"} 1"), "{metrics}");
    assert!(metrics.contains("hearsay_http_requests_total{method=\"PUT\",route=\"/v1/kv/{*key}\",status=\"204\"} 2"), "{metrics}");
    assert!(metrics.contains("hearsay_http_request_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("hearsay_shard_keys{shard=\"0\"}"), "{metrics}");
    assert!(metrics.contains("hearsay_storage_bytes"), "{metrics}");
}

#[tokio::test]
async fn data_and_versions_survive_a_clean_restart() {
    let mut n = node().await;
    let v1: hearsay::types::Version = n.client().put(b"k", "v1", "").await.unwrap().header("x-hearsay-version").unwrap().parse().unwrap();
    n.restart().await;
    let c = n.client();
    assert_eq!(&c.get(b"k", "").await.unwrap().body[..], b"v1");
    let v2: hearsay::types::Version = c.put(b"k", "v2", "").await.unwrap().header("x-hearsay-version").unwrap().parse().unwrap();
    assert!(v2 > v1);
}

#[tokio::test]
async fn a_data_dir_keeps_its_shard_count_and_owner() {
    let mut n = node().await;
    n.stop().await;
    let mut cfg = n.config();
    cfg.shards = Some(16);
    let err = hearsay::node::open_storage(&cfg).await.err().expect("a different shard count must be refused");
    assert!(err.to_string().contains("8 shards but 16"), "{err}");
    let mut cfg = n.config();
    cfg.node_id = hearsay::types::NodeId::new("n2").unwrap();
    let err = hearsay::node::open_storage(&cfg).await.err().expect("another node's dir must be refused");
    assert!(err.to_string().contains("belongs to node \"n1\""), "{err}");
}

/// A raw connection to a test node.
fn raw(url: &str) -> std::net::TcpStream {
    std::net::TcpStream::connect(url.trim_start_matches("http://")).unwrap()
}

/// What `s` reads until the server closes it or `within` passes: (the text,
/// whether it was closed, how long after `since`).
fn read_until_closed(
    s: &mut std::net::TcpStream,
    since: std::time::Instant,
    within: std::time::Duration,
) -> (String, bool, std::time::Duration) {
    let start = std::time::Instant::now();
    s.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
        if start.elapsed() >= within {
            break false;
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed, since.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_idle_client_is_cut_off_after_the_read_timeout() {
    use hearsay::api::server::ConnectionLimits;
    use std::time::Duration;
    let limits = ConnectionLimits { read_timeout: Duration::from_secs(1), ..ConnectionLimits::default() };
    let n = TestNode::start(NodeOpts { connections: limits, ..NodeOpts::default() }).await;
    let url = n.url.clone();
    let (head, idle, body, kept) = tokio::task::spawn_blocking(move || {
        let opened = std::time::Instant::now();
        let mut half_head = raw(&url);
        half_head.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n").unwrap();
        let mut idle = raw(&url);
        let mut slow_body = raw(&url);
        slow_body.write_all(b"PUT /v1/kv/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc").unwrap();
        let mut kept_alive = raw(&url);
        kept_alive.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let wait = Duration::from_secs(15);
        let read = |s: &mut std::net::TcpStream| read_until_closed(s, opened, wait);
        (read(&mut half_head), read(&mut idle), read(&mut slow_body), read(&mut kept_alive))
    })
    .await
    .unwrap();
    for (what, (text, closed, after)) in [("half a request head", &head), ("an idle connection", &idle)] {
        assert!(*closed && text.is_empty(), "{what} is closed unanswered: closed {closed} after {after:?}, read {text:?}");
        assert!(*after >= Duration::from_millis(900), "{what} is closed only once the timeout passed, not after {after:?}");
    }
    let (text, _, after) = &body;
    assert!(text.starts_with("HTTP/1.1 408 "), "a body that stops arriving is refused after {after:?}: {text:?}");
    assert!(text.contains(r#""error":"request_timeout""#), "{text}");
    let c = n.client();
    assert_eq!(c.get(b"slow", "").await.unwrap().status, StatusCode::NOT_FOUND, "nothing was stored");
    let (text, closed, _) = &kept;
    assert!(text.starts_with("HTTP/1.1 200 ") && *closed, "a keep-alive connection is answered, then closed when idle: {text:?}");
    // The half head and the body were slow clients; the idle connections
    // (and any the test's own client left idle) are counted apart.
    let metrics = c.get_path("/metrics").await.unwrap().text();
    let counter = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(counter("hearsay_http_read_timeouts_total "), Some(2), "{metrics}");
    assert!(counter("hearsay_http_idle_closes_total ") >= Some(1), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_answered_503_and_closed() {
    use hearsay::api::server::ConnectionLimits;
    use std::time::Duration;
    const MAX: usize = 4;
    // No connections kept for peers: this is about the hard limit.
    let limits = ConnectionLimits { max_connections: MAX, peer_reserve: 0, ..ConnectionLimits::default() };
    let n = TestNode::start(NodeOpts { connections: limits, ..NodeOpts::default() }).await;
    let url = n.url.clone();
    let (served, refused) = tokio::task::spawn_blocking(move || {
        // The harness's own client may hold a pooled connection too, so
        // open more than the limit, ask on each, and sort them by the
        // answer: served ones stay open (keep-alive), refused ones close.
        let mut conns: Vec<_> = (0..MAX + 3).map(|_| raw(&url)).collect();
        for c in &mut conns {
            c.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        }
        let mut served = Vec::new();
        let mut refused = Vec::new();
        for mut c in conns.drain(..) {
            match read_until_closed(&mut c, std::time::Instant::now(), Duration::from_secs(3)) {
                (text, true, _) => refused.push(text),
                (text, false, _) => {
                    assert!(text.starts_with("HTTP/1.1 200 "), "a connection within the limit is served: {text:?}");
                    served.push(c);
                }
            }
        }
        let (held, refused_count) = (served.len(), refused.len());
        assert!(held <= MAX && refused_count >= 3, "{held} connections held open, {refused_count} refused");
        // A slot freed is a slot served.
        drop(served.pop());
        std::thread::sleep(Duration::from_millis(200));
        let mut again = raw(&url);
        again.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
        let (text, closed, _) = read_until_closed(&mut again, std::time::Instant::now(), Duration::from_secs(10));
        assert!(closed && text.starts_with("HTTP/1.1 200 "), "{text:?}");
        (held, refused)
    })
    .await
    .unwrap();
    for text in &refused {
        assert!(text.starts_with("HTTP/1.1 503 ") && text.contains("retry-after: 1"), "{text:?}");
        let body: serde_json::Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["error"], "too_many_connections", "{text}");
    }
    assert!(served >= 1, "the limit leaves room for connections");
    let metrics = n.client().get_path("/metrics").await.unwrap().text();
    let count = metrics.lines().find_map(|l| l.strip_prefix("hearsay_http_connections_refused_total ")).and_then(|v| v.parse::<u64>().ok());
    assert_eq!(count, Some(refused.len() as u64), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_hold_up_a_shutdown() {
    use hearsay::api::server::{ConnectionLimits, DRAIN_DEADLINE};
    use std::time::{Duration, Instant};
    let limits = ConnectionLimits { read_timeout: Duration::from_secs(120), ..ConnectionLimits::default() };
    let mut n = TestNode::start(NodeOpts { connections: limits, ..NodeOpts::default() }).await;
    let c = n.client();
    assert!(c.put(b"kept", "v", "").await.unwrap().status.is_success());
    let (mut half_head, mut slow_body) = (raw(&n.url), raw(&n.url));
    half_head.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n").unwrap();
    slow_body.write_all(b"PUT /v1/kv/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    n.stop().await;
    let took = start.elapsed();
    assert!(took < DRAIN_DEADLINE + Duration::from_secs(10), "the stop waited {took:?} on clients with 120 s to go");
    n.start_again().await;
    assert_eq!(c.get(b"kept", "").await.unwrap().text(), "v");
    assert_eq!(c.get(b"slow", "").await.unwrap().status, StatusCode::NOT_FOUND, "the cut-off body stored nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_served_past_the_client_connection_limit() {
    use hearsay::api::server::ConnectionLimits;
    const MAX: usize = 2;
    let limits = ConnectionLimits { max_connections: MAX, peer_reserve: 8, ..ConnectionLimits::default() };
    let n = TestNode::start(NodeOpts { connections: limits, ..NodeOpts::default() }).await;
    assert!(n.client().put(b"k", "v", "").await.unwrap().status.is_success());
    // Clients, each on a connection of its own and kept open, until one is
    // refused: the client slots are full then, whatever else held one.
    let mut clients = Vec::new();
    let refused = loop {
        assert!(clients.len() <= MAX + 1, "{} clients served with a limit of {MAX}", clients.len());
        let client = Client::new(&n.url).unwrap();
        let r = client.get(b"k", "").await.unwrap();
        if r.status != StatusCode::OK {
            break r;
        }
        clients.push(client);
    };
    assert_json_error(&refused, StatusCode::SERVICE_UNAVAILABLE, "too_many_connections");
    let peer = Client::new(&n.url).unwrap();
    let read = common::peer_send(&peer, hearsay::rpc::PATH_READ, &hearsay::rpc::ReadRequest { key: b"k".to_vec().into() }).await;
    assert_eq!(read.status, StatusCode::OK, "a peer is served past the client limit: {}", read.text());
}
