//! `--remote-cache grpc://…`: the Remote Execution API's ActionCache and
//! CAS as the shared cache, against a real BuildGrid. What one workspace
//! builds, another with an empty local cache fetches (a blob over gRPC's
//! 4 MiB message limit included), byte for byte; a server that goes away
//! costs a warning, not the build.

mod common;

use common::Ws;

const GRAPH: &str = r#"
[[cmd]]
name = "small"
outs = ["small.txt"]
cmd = "echo hello > $OUT"

[[cmd]]
name = "big"
outs = ["big.bin"]
srcs = [":small"]
cmd = "yes $(cat $SRCS) | head -c 6291456 > $OUT"
"#;

#[test]
fn a_second_workspace_fetches_every_result_through_buildgrid() {
    let Some(server) = common::buildgrid::start() else {
        return;
    };
    let (first, second) = (Ws::new(), Ws::new());
    for ws in [&first, &second] {
        ws.package("p", GRAPH);
    }
    let url = server.url.clone();
    let url = url.as_str();
    let built = first.build_ok(&["//p:big", "--remote-cache", url]);
    assert_eq!(built.count("executed"), 2);
    let fetched = second.build_ok(&["//p:big", "--remote-cache", url]);
    assert_eq!(fetched.count("executed"), 0, "{:?}", fetched.all_ids());
    assert_eq!(fetched.count("remote_cached"), 2);
    let read = |ws: &Ws| std::fs::read(ws.output("p", "big", "big.bin")).expect("big.bin");
    assert_eq!(read(&second), read(&first));
    assert_eq!(read(&second).len(), 6 << 20);

    // The server gone: one warning, and the build goes on locally.
    drop(server);
    let third = Ws::new();
    third.package("p", GRAPH);
    let b = third.build(&["//p:big", "--remote-cache", url]);
    assert_eq!(b.run.code, 0, "{}", b.run.stderr);
    assert!(
        b.run.stderr.contains("continuing with the local cache only"),
        "{}",
        b.run.stderr
    );
}

#[test]
fn a_tls_server_is_reached_through_grpcs_with_the_teams_certificate_authority() {
    let Some(server) = common::buildgrid::start_tls() else {
        return;
    };
    let url = server.url.as_str();
    assert!(url.starts_with("grpcs://"), "{url}");
    let ca = server.ca.to_str().expect("utf-8 path");
    let (first, second, stranger) = (Ws::new(), Ws::new(), Ws::new());
    for ws in [&first, &second, &stranger] {
        ws.package("p", GRAPH);
    }
    let with_ca = |ws: &Ws| {
        let report = ws
            .kflow()
            .env("KFLOW_REMOTE_CA", ca)
            .args(["build", "//p:big", "--remote-cache", url])
            .output()
            .expect("run kflow");
        String::from_utf8_lossy(&report.stderr).into_owned()
    };
    let built = with_ca(&first);
    assert!(!built.contains("warning"), "{built}");
    let fetched = with_ca(&second);
    assert!(!fetched.contains("warning"), "{fetched}");
    assert_eq!(
        std::fs::read(second.output("p", "big", "big.bin")).expect("fetched big.bin"),
        std::fs::read(first.output("p", "big", "big.bin")).expect("built big.bin")
    );
    assert!(fetched.contains("0 executed"), "{fetched}");

    // A client that does not trust the certificate gets nothing from the
    // server, says so once, and builds locally.
    let b = stranger.build(&["//p:big", "--remote-cache", url]);
    assert_eq!(b.run.code, 0, "{}", b.run.stderr);
    assert_eq!(b.run.stderr.matches("warning").count(), 1, "{}", b.run.stderr);
    assert_eq!(b.report.expect("report").count("executed"), 2);
}
