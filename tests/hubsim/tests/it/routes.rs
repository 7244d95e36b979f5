//! Hub and CDN routes, as the real Hub answers them.

use hubsim::{Origin, Storage};
use serde_json::Value;

use super::common::{client, following, get_json, sha256, shared};

fn hdr<'a>(r: &'a reqwest::blocking::Response, k: &str) -> &'a str {
    r.headers()
        .get(k)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("missing header {k}"))
}

#[test]
fn resolve_regular_file_with_range_etag_and_304() {
    let sim = shared();
    let repo = sim.info().repo("acme/tiny").unwrap();
    let f = repo.file("config.json").unwrap();
    let url = format!("{}/acme/tiny/resolve/main/config.json", sim.hub_url());
    let c = client();
    let head = c.head(&url).send().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(hdr(&head, "etag"), format!("\"{}\"", f.git_oid));
    assert_eq!(hdr(&head, "x-repo-commit"), repo.head);
    assert_eq!(hdr(&head, "content-length"), f.size.to_string());
    let body = c.get(&url).send().unwrap().bytes().unwrap();
    assert_eq!(sha256(&body), f.sha256);
    let r = c.get(&url).header("range", "bytes=2-5").send().unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(hdr(&r, "content-range"), format!("bytes 2-5/{}", f.size));
    assert_eq!(r.bytes().unwrap(), body.slice(2..6));
    let r = c
        .get(&url)
        .header("range", format!("bytes={}-", f.size))
        .send()
        .unwrap();
    assert_eq!(r.status(), 416);
    let r = c
        .head(&url)
        .header("if-none-match", format!("\"{}\"", f.git_oid))
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);
    // git blob oid is sha1("blob <len>\0" + content)
    let mut h = <sha1::Sha1 as sha1::Digest>::new();
    sha1::Digest::update(&mut h, format!("blob {}\0", body.len()).as_bytes());
    sha1::Digest::update(&mut h, &body);
    assert_eq!(hex::encode(sha1::Digest::finalize(h)), f.git_oid);
}

#[test]
fn resolve_lfs_and_xet_redirect_to_cdn_with_hub_headers() {
    let sim = shared();
    let repo = sim.info().repo("acme/tiny").unwrap();
    let c = client();
    let lfs = repo.file("lfs.bin").unwrap();
    assert_eq!(lfs.storage, Storage::Lfs);
    let r = c
        .head(format!("{}/acme/tiny/resolve/main/lfs.bin", sim.hub_url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        hdr(&r, "location"),
        format!("{}/lfs/{}", sim.cdn_url(), lfs.sha256)
    );
    assert_eq!(hdr(&r, "x-linked-etag"), format!("\"{}\"", lfs.sha256));
    assert_eq!(hdr(&r, "x-linked-size"), lfs.size.to_string());
    assert_eq!(hdr(&r, "x-repo-commit"), repo.head);
    assert!(r.headers().get("x-xet-hash").is_none());

    let xet = repo.file("xet-a.bin").unwrap();
    let xh = xet.xet_hash.clone().expect("xet hash");
    assert!(xh.len() == 64 && xh.bytes().all(|b| b.is_ascii_hexdigit()));
    let r = c
        .get(format!(
            "{}/acme/tiny/resolve/main/xet-a.bin",
            sim.hub_url()
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(hdr(&r, "x-xet-hash"), xh);
    assert_eq!(
        hdr(&r, "location"),
        format!("{}/xet-bridge/{xh}", sim.cdn_url())
    );
    let link = hdr(&r, "link");
    assert!(
        link.contains(&format!(
            "/api/models/acme/tiny/xet-read-token/{}>; rel=\"xet-auth\"",
            repo.head
        )),
        "{link}"
    );
    assert!(link.contains(&format!(
        "{}/v1/reconstructions/{xh}>; rel=\"xet-reconstruction-info\"",
        sim.cas_url()
    )));

    // Following the redirect gives the bytes; CDN serves ranges.
    let body = following()
        .get(format!(
            "{}/acme/tiny/resolve/main/xet-a.bin",
            sim.hub_url()
        ))
        .send()
        .unwrap();
    assert_eq!(hdr(&body, "etag"), format!("\"{}\"", xet.sha256));
    assert_eq!(sha256(&body.bytes().unwrap()), xet.sha256);
    let r = c
        .get(format!("{}/lfs/{}", sim.cdn_url(), lfs.sha256))
        .header("range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().len(), 100);
    assert_eq!(
        c.get(format!("{}/lfs/{}", sim.cdn_url(), "0".repeat(64)))
            .send()
            .unwrap()
            .status(),
        404
    );
}

#[test]
fn revisions_branches_with_slash_tags_prs_and_shas() {
    let sim = shared();
    let repo = sim.info().repo("acme/tiny").unwrap();
    let c = client();
    let commit_of = |rev: &str| -> String {
        let r = c
            .head(format!(
                "{}/acme/tiny/resolve/{rev}/README.md",
                sim.hub_url()
            ))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "rev {rev}");
        hdr(&r, "x-repo-commit").to_string()
    };
    assert_eq!(commit_of("dev%2Ffeature"), repo.branches["dev/feature"]);
    assert_eq!(commit_of("dev/feature"), repo.branches["dev/feature"]);
    assert_eq!(commit_of("v1.0"), repo.tags["v1.0"]);
    assert_eq!(commit_of("refs%2Fpr%2F1"), repo.prs["refs/pr/1"]);
    assert_eq!(commit_of("refs/pr/1"), repo.prs["refs/pr/1"]);
    assert_eq!(commit_of(&repo.commits[0].sha), repo.commits[0].sha);
    assert_ne!(repo.branches["dev/feature"], repo.head);
    // feature.txt only exists on the branch
    let r = c
        .head(format!(
            "{}/acme/tiny/resolve/dev%2Ffeature/feature.txt",
            sim.hub_url()
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let info: Value = get_json(&format!(
        "{}/api/models/acme/tiny/revision/dev%2Ffeature",
        sim.hub_url()
    ));
    assert_eq!(info["sha"], repo.branches["dev/feature"].as_str());
}

#[test]
fn hub_errors_carry_x_error_code() {
    let sim = shared();
    let c = client();
    let h = sim.hub_url();
    let check = |url: String, auth: Option<&str>, status: u16, code: &str| {
        let mut rb = c.get(&url);
        if let Some(t) = auth {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().unwrap();
        assert_eq!(r.status().as_u16(), status, "{url}");
        assert_eq!(hdr(&r, "x-error-code"), code, "{url}");
        r
    };
    check(
        format!("{h}/acme/nope/resolve/main/x"),
        None,
        401,
        "RepoNotFound",
    );
    check(
        format!("{h}/api/models/acme/nope"),
        None,
        401,
        "RepoNotFound",
    );
    check(
        format!("{h}/acme/private/resolve/main/config.json"),
        None,
        401,
        "RepoNotFound",
    );
    check(
        format!("{h}/acme/private/resolve/main/config.json"),
        Some("wrong"),
        401,
        "RepoNotFound",
    );
    check(
        format!("{h}/api/models/acme/private"),
        None,
        401,
        "RepoNotFound",
    );
    check(
        format!("{h}/acme/tiny/resolve/nosuchbranch/config.json"),
        None,
        404,
        "RevisionNotFound",
    );
    let r = check(
        format!("{h}/acme/tiny/resolve/main/missing.txt"),
        None,
        404,
        "EntryNotFound",
    );
    assert_eq!(
        hdr(&r, "x-repo-commit"),
        sim.info().repo("acme/tiny").unwrap().head
    );
    check(
        format!("{h}/acme/gated/resolve/main/config.json"),
        None,
        401,
        "GatedRepo",
    );
    check(
        format!("{h}/api/models/acme/gated/xet-read-token/main"),
        None,
        401,
        "GatedRepo",
    );
    // Gated metadata is public; with the token everything works.
    assert_eq!(
        c.get(format!("{h}/api/models/acme/gated"))
            .send()
            .unwrap()
            .status(),
        200
    );
    let ok = c
        .get(format!("{h}/acme/gated/resolve/main/config.json"))
        .bearer_auth(sim.token())
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok = c
        .get(format!("{h}/acme/private/resolve/main/config.json"))
        .bearer_auth(sim.token())
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        c.get(format!("{h}/api/agent-harnesses"))
            .send()
            .unwrap()
            .status(),
        404
    );
}

#[test]
fn model_dataset_space_info() {
    let sim = shared();
    let c = client();
    let h = sim.hub_url();
    let v: Value = get_json(&format!("{h}/api/models/acme/tiny?blobs=true"));
    let repo = sim.info().repo("acme/tiny").unwrap();
    assert_eq!(v["id"], "acme/tiny");
    assert_eq!(v["sha"], repo.head.as_str());
    let sib = v["siblings"].as_array().unwrap();
    assert_eq!(sib.len(), repo.files.len());
    let lfs = sib.iter().find(|s| s["rfilename"] == "lfs.bin").unwrap();
    assert_eq!(
        lfs["lfs"]["sha256"],
        repo.file("lfs.bin").unwrap().sha256.as_str()
    );
    let v: Value = get_json(&format!("{h}/api/datasets/acme/many-small"));
    assert_eq!(v["id"], "acme/many-small");
    let v: Value = get_json(&format!("{h}/api/spaces/acme/space/revision/main"));
    assert_eq!(
        v["sha"],
        sim.info().repo("acme/space").unwrap().head.as_str()
    );
    // Wrong type prefix is a missing repo.
    assert_eq!(
        c.get(format!("{h}/api/datasets/acme/tiny"))
            .send()
            .unwrap()
            .status(),
        401
    );
    let r = c
        .head(format!(
            "{h}/datasets/acme/many-small/resolve/main/README.md"
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .head(format!("{h}/spaces/acme/space/resolve/main/app.py"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn tree_is_recursive_and_paginated_with_link_next() {
    let sim = shared();
    let c = client();
    let repo = sim.info().repo("acme/many-small").unwrap();
    let mut url = format!(
        "{}/api/datasets/acme/many-small/tree/main?recursive=true",
        sim.hub_url()
    );
    let (mut files, mut dirs, mut pages) = (0, 0, 0);
    loop {
        let r = c.get(&url).send().unwrap();
        assert_eq!(r.status(), 200);
        let next = r.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            assert!(l.ends_with("rel=\"next\""), "{l}");
            l[1..l.find('>').unwrap()].to_string()
        });
        let page: Vec<Value> = r.json().unwrap();
        assert!(page.len() <= 100);
        for e in &page {
            match e["type"].as_str().unwrap() {
                "file" => files += 1,
                "directory" => dirs += 1,
                t => panic!("type {t}"),
            }
        }
        pages += 1;
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    assert_eq!(files, repo.files.len());
    assert_eq!(dirs, 7); // data + 6 parts
    assert!(pages >= 4);
    // Non-recursive listing of a sub-folder; LFS/Xet entries carry lfs + xetHash.
    let v: Vec<Value> = get_json(&format!(
        "{}/api/models/acme/tiny/tree/main/sub",
        sim.hub_url()
    ));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["type"], "directory");
    assert_eq!(v[0]["path"], "sub/dir");
    let v: Vec<Value> = get_json(&format!("{}/api/models/acme/tiny/tree/main", sim.hub_url()));
    let xet = v.iter().find(|e| e["path"] == "w.safetensors").unwrap();
    let fi = sim.info().file("acme/tiny", "w.safetensors");
    assert_eq!(xet["xetHash"], fi.xet_hash.as_deref().unwrap());
    assert_eq!(xet["lfs"]["oid"], fi.sha256.as_str());
    assert_eq!(xet["oid"], fi.git_oid.as_str());
    let r = c
        .get(format!(
            "{}/api/models/acme/tiny/tree/main/nope",
            sim.hub_url()
        ))
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-error-code"], "EntryNotFound");
}

#[test]
fn traversal_repo_lists_hostile_names() {
    let sim = shared();
    let v: Vec<Value> = client()
        .get(format!(
            "{}/api/models/evil/traversal/tree/main?recursive=true",
            sim.hub_url()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let paths: Vec<&str> = v.iter().map(|e| e["path"].as_str().unwrap()).collect();
    for p in ["../../evil", "/abs/path", "sub/../../x", "ok.txt"] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
}

#[test]
fn paths_info_accepts_json_and_form() {
    let sim = shared();
    let c = client();
    let url = format!("{}/api/models/acme/tiny/paths-info/main", sim.hub_url());
    let v: Vec<Value> = c
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"paths":["lfs.bin","sub","missing"]}"#)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["lfs"]["size"], 4 * 1024 * 1024);
    assert_eq!(v[1]["type"], "directory");
    let v: Vec<Value> = c
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("paths=config.json&paths=sub%2Fdir%2Fnotes.txt&expand=True")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v.len(), 2);
    assert!(v[0]["lastCommit"]["id"].is_string());
}

#[test]
fn xet_read_token_json_and_headers() {
    let sim = shared();
    let r = client()
        .get(format!(
            "{}/api/models/acme/tiny/xet-read-token/main",
            sim.hub_url()
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, "x-xet-cas-url"), sim.cas_url());
    let tok = hdr(&r, "x-xet-access-token").to_string();
    let exp: u64 = hdr(&r, "x-xet-token-expiration").parse().unwrap();
    let v: Value = r.json().unwrap();
    assert_eq!(v["casUrl"], sim.cas_url());
    assert_eq!(v["accessToken"], tok.as_str());
    assert_eq!(v["exp"], exp);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(exp > now + 3600);
}

#[test]
fn lfs_batch_download_points_at_cdn() {
    let sim = shared();
    let repo = sim.info().repo("acme/tiny").unwrap();
    let lfs = repo.file("lfs.bin").unwrap();
    let xet = repo.file("xet-a.bin").unwrap();
    let body = serde_json::json!({
        "operation": "download", "transfers": ["basic"], "hash_algo": "sha256",
        "objects": [{"oid": lfs.sha256, "size": lfs.size}, {"oid": xet.sha256, "size": xet.size}, {"oid": "ab".repeat(32), "size": 1}]
    });
    let r = client()
        .post(format!(
            "{}/acme/tiny.git/info/lfs/objects/batch",
            sim.hub_url()
        ))
        .header("content-type", "application/vnd.git-lfs+json")
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, "content-type"), "application/vnd.git-lfs+json");
    let v: Value = r.json().unwrap();
    assert_eq!(v["transfer"], "basic");
    let objs = v["objects"].as_array().unwrap();
    let href = objs[0]["actions"]["download"]["href"].as_str().unwrap();
    assert_eq!(href, format!("{}/lfs/{}", sim.cdn_url(), lfs.sha256));
    assert!(objs[1]["actions"]["download"]["href"].is_string());
    assert_eq!(objs[2]["error"]["code"], 404);
    let got = client().get(href).send().unwrap().bytes().unwrap();
    assert_eq!(sha256(&got), lfs.sha256);
    // Private repo without the token.
    let r = client()
        .post(format!(
            "{}/acme/private.git/info/lfs/objects/batch",
            sim.hub_url()
        ))
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn refs_and_commits() {
    let sim = shared();
    let repo = sim.info().repo("acme/evolving").unwrap();
    let v: Value = client()
        .get(format!(
            "{}/api/models/acme/evolving/refs?include_prs=1",
            sim.hub_url()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["branches"][0]["name"], "main");
    assert_eq!(v["branches"][0]["targetCommit"], repo.head.as_str());
    assert_eq!(v["tags"][0]["targetCommit"], repo.commits[0].sha.as_str());
    let v: Vec<Value> = client()
        .get(format!(
            "{}/api/models/acme/evolving/commits/main",
            sim.hub_url()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["id"], repo.head.as_str());
    // The evolving file differs between the two commits.
    let a = repo.commits[0]
        .files
        .iter()
        .find(|f| f.path == "model.bin")
        .unwrap();
    let b = repo.commits[1]
        .files
        .iter()
        .find(|f| f.path == "model.bin")
        .unwrap();
    assert_ne!(a.sha256, b.sha256);
    assert_eq!(a.size, b.size);
}

#[test]
fn counters_see_token_on_hub_but_never_on_cdn() {
    // Own simulator: counters must not see other tests' traffic.
    let sim = super::common::tiny();
    let url = format!("{}/acme/tiny/resolve/main/lfs.bin", sim.hub_url());
    let body = following()
        .get(&url)
        .bearer_auth(sim.token())
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let f = sim.info().file("acme/tiny", "lfs.bin");
    assert_eq!(sha256(&body), f.sha256);
    let c = sim.counters();
    assert_eq!(c.requests_to(Origin::Hub, "resolve"), 1);
    assert_eq!(c.requests_to(Origin::Cdn, "lfs"), 1);
    assert!(c.auth_seen.hub);
    assert!(
        !c.auth_seen.cdn,
        "reqwest must drop the token on the cross-origin redirect"
    );
    assert_eq!(c.bytes_from(Origin::Cdn), f.size);
    assert_eq!(c.log.len(), 2);
    assert_eq!(c.log[1].bytes, f.size);
    // Over HTTP too, and reset.
    let v: Value = client()
        .get(format!("{}/_hubsim/counters", sim.hub_url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["bytes"]["cdn"], f.size);
    assert_eq!(v["requests"]["hub:resolve"], 1);
    assert_eq!(
        client()
            .post(format!("{}/_hubsim/reset-counters", sim.hub_url()))
            .send()
            .unwrap()
            .status(),
        204
    );
    let c = sim.counters();
    assert_eq!(c.bytes_from(Origin::Cdn), 0);
    assert!(c.log.is_empty());
    let info: hubsim::SimInfo = client()
        .get(format!("{}/_hubsim/info", sim.hub_url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(&info, sim.info());
}
