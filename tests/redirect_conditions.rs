//! `_redirects` conditions through the real binary: `Language=` (Accept-Language),
//! `Cookie=` (a cookie's presence) and `Country=` (the trusted header the operator names),
//! with the matching `Vary` and never a memoized answer for the wrong request; `Country=`
//! refused at build when no country source is configured; inline comments accepted.

mod common;

use std::path::Path;

use common::process::Halo;

const TOKEN: &str = "conditions-test-token-0123456789";

const REDIRECTS: &str = "\
/home  /fr/          302  Language=fr,de   # French and German speakers
/home  /en/          302
/app   /beta.html    200  Cookie=beta,preview
/app   /stable.html  200
/shop  /shop-ca.html 200  Country=ca
/shop  /shop.html    200
/old   /new.html     301  # moved in 2023
";

fn write_site(dir: &Path, redirects: &str) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, body) in [
        ("index.html", "index"),
        ("beta.html", "beta"),
        ("stable.html", "stable"),
        ("shop-ca.html", "shop ca"),
        ("shop.html", "shop"),
        ("new.html", "new"),
        ("_redirects", redirects),
    ] {
        std::fs::write(dir.join(name), body).unwrap();
    }
}

async fn get(edge: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String, String) {
    let mut r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{edge}{path}"))
        .header("host", "cond.halo.test");
    for (n, v) in headers {
        r = r.header(*n, *v);
    }
    let r = r.send().await.unwrap();
    let header = |n: &str| {
        r.headers()
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (location, vary) = (header("location"), header("vary"));
    (r.status().as_u16(), r.text().await.unwrap(), location, vary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_choose_the_rule_and_say_so_in_vary() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start_env(
        &tmp.path().join("data"),
        Some(TOKEN),
        &[("HALO_COUNTRY_HEADER", "CF-IPCountry")],
    );
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    write_site(&site, REDIRECTS);
    common::cli_deploy(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "cond", "--prod"],
    );
    let edge = halo.edge.as_str();

    let (status, _, location, vary) =
        get(edge, "/home", &[("accept-language", "de-AT,en;q=0.5")]).await;
    assert_eq!((status, location.as_str()), (302, "/fr/"));
    assert!(vary.contains("accept-language"), "{vary}");
    let (_, _, location, vary) = get(edge, "/home", &[("accept-language", "en-GB")]).await;
    assert_eq!(
        (location.as_str(), vary.contains("accept-language")),
        ("/en/", true)
    );

    // Twice each way: a memoized answer must never reach the other kind of request.
    for _ in 0..2 {
        let (status, body, _, vary) = get(edge, "/app", &[]).await;
        assert_eq!((status, body.as_str()), (200, "stable"));
        assert!(vary.contains("cookie"), "{vary}");
        let (_, body, _, _) = get(edge, "/app", &[("cookie", "theme=dark; preview=1")]).await;
        assert_eq!(body, "beta");
    }
    for _ in 0..2 {
        let (_, body, _, vary) = get(edge, "/shop", &[("cf-ipcountry", "CA")]).await;
        assert_eq!(body, "shop ca");
        assert!(vary.contains("cf-ipcountry"), "{vary}");
        assert_eq!(
            get(edge, "/shop", &[("cf-ipcountry", "FR")]).await.1,
            "shop"
        );
        assert_eq!(get(edge, "/shop", &[]).await.1, "shop");
    }
    // An inline comment is a comment; unconditional answers carry no condition Vary.
    let (status, _, location, vary) = get(edge, "/old", &[]).await;
    assert_eq!((status, location.as_str()), (301, "/new.html"));
    assert!(
        !vary.contains("cookie") && !vary.contains("accept-language"),
        "{vary}"
    );
    let (_, body, _, vary) = get(edge, "/index.html", &[]).await;
    assert_eq!((body.as_str(), vary.as_str()), ("index", "accept-encoding"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn country_needs_a_country_source() {
    let tmp = tempfile::tempdir().unwrap();
    let halo = Halo::start(&tmp.path().join("data"), Some(TOKEN));
    let (site, cache) = (tmp.path().join("site"), tmp.path().join("cache"));
    write_site(&site, "/shop /shop-ca.html 200 Country=ca\n");
    let stderr = common::cli_deploy_fails(
        &halo.api,
        TOKEN,
        &cache,
        &[site.to_str().unwrap(), "--project", "nocountry", "--prod"],
    );
    assert!(stderr.contains("country_header"), "{stderr}");
}
