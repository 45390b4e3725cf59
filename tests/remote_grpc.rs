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
