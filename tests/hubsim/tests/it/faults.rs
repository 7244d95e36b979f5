//! Every fault kind, set through the library API and through the control route.

use std::time::{Duration, Instant};

use hubsim::{Fault, FaultAction, Origin};

use super::common::{client, following, get_bytes, get_json, sha256, tiny};
use super::xet::xet_download;

#[test]
fn status_and_rate_limited_for_n_requests() {
    let sim = tiny();
    let url = format!("{}/acme/tiny/resolve/main/config.json", sim.hub_url());
    let id = sim.faults().add(
        Fault::new(
            Origin::Hub,
            "config.json",
            FaultAction::Status { code: 503 },
        )
        .times(2),
    );
    let c = client();
    assert_eq!(c.get(&url).send().unwrap().status(), 503);
    assert_eq!(c.get(&url).send().unwrap().status(), 503);
    assert_eq!(c.get(&url).send().unwrap().status(), 200);
    assert_eq!(sim.faults().fired(id), 2);
    sim.faults().add(Fault::new(
        Origin::Cdn,
        "/lfs/",
        FaultAction::RateLimited {
            retry_after_secs: 7,
        },
    ));
    let lfs = format!("{}/acme/tiny/resolve/main/lfs.bin", sim.hub_url());
    let r = following().get(&lfs).send().unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(following().get(&lfs).send().unwrap().status(), 200);
    // Method filter: HEAD is not affected by a GET-only fault.
    sim.faults()
        .add(Fault::new(Origin::Hub, "README", FaultAction::Status { code: 500 }).method("GET"));
    let readme = format!("{}/acme/tiny/resolve/main/README.md", sim.hub_url());
    assert_eq!(c.head(&readme).send().unwrap().status(), 200);
    assert_eq!(c.get(&readme).send().unwrap().status(), 500);
    assert!(
        sim.counters()
            .log
            .iter()
            .any(|r| r.faulted && r.status == 500)
    );
}

#[test]
fn cut_after_bytes_drops_the_connection() {
    let sim = tiny();
    let f = sim.info().file("acme/tiny", "lfs.bin");
    sim.faults().add(Fault::new(
        Origin::Cdn,
        &f.sha256,
        FaultAction::CutAfter { bytes: 100_000 },
    ));
    let r = following()
        .get(format!("{}/acme/tiny/resolve/main/lfs.bin", sim.hub_url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(f.size));
    assert!(r.bytes().is_err(), "body must end early with an error");
    let c = sim.counters();
    assert_eq!(c.bytes_from(Origin::Cdn), 100_000);
}

#[test]
fn flip_byte_keeps_length_but_changes_content() {
    let sim = tiny();
    let f = sim.info().file("acme/tiny", "lfs.bin");
    sim.faults().add(Fault::new(
        Origin::Cdn,
        "/lfs/",
        FaultAction::FlipByte {
            offset: Some(12345),
        },
    ));
    let body = get_bytes(&format!("{}/acme/tiny/resolve/main/lfs.bin", sim.hub_url()));
    assert_eq!(body.len() as u64, f.size);
    assert_ne!(sha256(&body), f.sha256);
    let good = get_bytes(&format!("{}/acme/tiny/resolve/main/lfs.bin", sim.hub_url()));
    let diff: Vec<usize> = (0..body.len()).filter(|&i| body[i] != good[i]).collect();
    assert_eq!(diff, vec![12345]);
}

#[test]
fn flip_byte_in_a_xorb_range_corrupts_hf_xet_output_silently() {
    let sim = tiny();
    let f = sim.info().file("acme/tiny", "xet-a.bin");
    let id = sim.faults().add(Fault::new(
        Origin::Cas,
        "/v1/fetch_term",
        FaultAction::FlipByte { offset: None },
    ));
    let data =
        xet_download(&sim, f.xet_hash.as_deref().unwrap(), f.size).expect("hf-xet does not notice");
    assert_eq!(sim.faults().fired(id), 1);
    assert_eq!(data.len() as u64, f.size);
    assert_ne!(sha256(&data), f.sha256, "one byte must differ");
}

#[test]
fn stall_before_headers_and_mid_body() {
    let sim = tiny();
    let url = format!("{}/acme/tiny/resolve/main/config.json", sim.hub_url());
    sim.faults().add(Fault::new(
        Origin::Hub,
        "config.json",
        FaultAction::Stall {
            secs: 0.8,
            after_bytes: None,
        },
    ));
    let t = Instant::now();
    assert_eq!(client().get(&url).send().unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(750));
    sim.faults().add(Fault::new(
        Origin::Cdn,
        "/lfs/",
        FaultAction::Stall {
            secs: 1.5,
            after_bytes: Some(1000),
        },
    ));
    let t = Instant::now();
    let r = following()
        .get(format!("{}/acme/tiny/resolve/main/lfs.bin", sim.hub_url()))
        .send()
        .unwrap();
    let headers_at = t.elapsed();
    let body = r.bytes().unwrap();
    assert!(
        headers_at < Duration::from_millis(1200),
        "headers came before the stall: {headers_at:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(1450));
    assert_eq!(body.len(), 4 * 1024 * 1024);
}

#[test]
fn wrong_content_length_is_seen_by_the_client() {
    let sim = tiny();
    sim.faults().add(Fault::new(
        Origin::Cdn,
        "/lfs/",
        FaultAction::WrongContentLength { delta: 1000 },
    ));
    let r = following()
        .get(format!("{}/acme/tiny/resolve/main/lfs.bin", sim.hub_url()))
        .send()
        .unwrap();
    assert_eq!(r.content_length(), Some(4 * 1024 * 1024 + 1000));
    assert!(
        r.bytes().is_err(),
        "a body shorter than Content-Length must fail"
    );
}

#[test]
fn stop_and_restart_the_cas() {
    let sim = tiny();
    let f = sim.info().file("acme/tiny", "xet-a.bin");
    sim.stop_cas();
    std::thread::sleep(Duration::from_millis(100));
    let err = client().get(format!("{}/health", sim.cas_url())).send();
    assert!(err.is_err(), "CAS port must refuse connections");
    sim.start_cas_blocking().unwrap();
    let data = xet_download(&sim, f.xet_hash.as_deref().unwrap(), f.size).unwrap();
    assert_eq!(sha256(&data), f.sha256);
}

#[test]
fn faults_over_the_control_route() {
    let sim = tiny();
    let c = client();
    let ctl = format!("{}/_hubsim/faults", sim.hub_url());
    let r = c
        .post(&ctl)
        .body(r#"[{"origin":"hub","path_contains":"config.json","times":1,"action":{"kind":"status","code":502}},
                 {"origin":"cas","path_contains":"","action":{"kind":"rate_limited","retry_after_secs":1}}]"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["ids"].as_array().unwrap().len(), 2);
    let list: Vec<hubsim::ActiveFault> = get_json(&ctl);
    assert_eq!(list.len(), 2);
    assert_eq!(
        c.get(format!(
            "{}/acme/tiny/resolve/main/config.json",
            sim.hub_url()
        ))
        .send()
        .unwrap()
        .status(),
        502
    );
    assert_eq!(c.delete(&ctl).send().unwrap().status(), 204);
    assert!(sim.faults().list().is_empty());
    assert_eq!(c.post(&ctl).body("{nope").send().unwrap().status(), 400);
    // Control requests are neither counted nor faulted.
    assert_eq!(sim.counters().total_requests.hub, 1);
    assert_eq!(
        c.post(format!("{}/_hubsim/stop-cas", sim.hub_url()))
            .send()
            .unwrap()
            .status(),
        204
    );
    assert!(
        client()
            .get(format!("{}/health", sim.cas_url()))
            .send()
            .is_err()
    );
    assert_eq!(
        c.post(format!("{}/_hubsim/start-cas", sim.hub_url()))
            .send()
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        client()
            .get(format!("{}/health", sim.cas_url()))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn ignore_range_answers_200_with_the_whole_body() {
    let sim = tiny();
    let f = sim.info().file("acme/tiny", "lfs.bin");
    let url = format!("{}/lfs/{}", sim.cdn_url(), f.sha256);
    let id = sim
        .faults()
        .add(Fault::new(Origin::Cdn, "/lfs/", FaultAction::IgnoreRange).times(2));
    let c = client();
    // A request without Range neither matches nor uses up the fault.
    let whole = c.get(&url).send().unwrap();
    assert_eq!(whole.status(), 200);
    let whole = whole.bytes().unwrap();
    assert_eq!(sim.faults().fired(id), 0);
    let ranged = || c.get(&url).header("range", "bytes=100-199").send().unwrap();
    for _ in 0..2 {
        let r = ranged();
        assert_eq!(r.status(), 200, "Range ignored");
        assert!(r.headers().get("content-range").is_none());
        assert_eq!(r.content_length(), Some(f.size));
        assert_eq!(r.bytes().unwrap(), whole);
    }
    assert_eq!(sim.faults().fired(id), 2);
    let r = ranged();
    assert_eq!(r.status(), 206, "honoured again once the fault is used up");
    assert_eq!(r.bytes().unwrap(), whole.slice(100..200));
    let log = sim.counters().log;
    let faulted: Vec<_> = log.iter().filter(|r| r.faulted).collect();
    assert_eq!(faulted.len(), 2);
    assert!(
        faulted
            .iter()
            .all(|r| r.status == 200 && r.range.as_deref() == Some("bytes=100-199")),
        "the log keeps the Range that was asked for"
    );
    // Over the control route.
    let ctl = format!("{}/_hubsim/faults", sim.hub_url());
    let r = c
        .post(&ctl)
        .body(r#"{"origin":"cdn","path_contains":"/lfs/","action":{"kind":"ignore_range"}}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ranged().status(), 200);
    assert_eq!(ranged().status(), 206);
}
