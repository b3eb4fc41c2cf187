//! The service's API (issue 19): every endpoint the OpenAPI document lists needs a token unless
//! the document marks it public; a viewer changes nothing; tokens never reach the log; the
//! console's session needs its CSRF token; logins are rate-limited; a pipeline created through
//! the API is validated, survives a restart of `vigil serve`, and can be deleted.

use std::path::Path;
use std::time::Duration;

use super::common::free_port;
use super::common::{heavy, model, vigil};
use super::service::{
    Reaped, by_name, frames_in, pattern_pipeline, serve, sigterm, token_of, wait_for,
};
use vigil::service::auth::{Role, create_token};

/// An HTTP client that returns 4xx/5xx answers instead of failing on them.
pub(super) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// `(status, body)` of `method path` with optional bearer `token`, cookie and body.
pub(super) fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, Option<String>) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut req = ureq::http::Request::builder().method(method).uri(&url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = req.body(body.unwrap_or("").to_string()).unwrap();
    let mut resp = agent().run(req).unwrap();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = resp.status().as_u16();
    let text = if path.ends_with("/live") || path.ends_with("stream") {
        String::new() // endless streams: the status is the answer
    } else {
        String::from_utf8_lossy(&resp.body_mut().read_to_vec().unwrap_or_default()).into_owned()
    };
    (status, text, cookie)
}

/// Every `(method, path)` of the OpenAPI document with its parameters filled in, and whether
/// the document marks it public (`security: []`).
fn documented_operations() -> Vec<(String, String, bool)> {
    let doc: serde_json::Value = serde_json::from_str(vigil::service::console::OPENAPI).unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let filled = path
            .replace("{pipeline}", "yard")
            .replace("{source}", "pattern")
            .replace("{name}", "yard")
            .replace("{output}", "0")
            .replace("{file}", "x.jpg");
        for (method, op) in item.as_object().unwrap() {
            if ["get", "put", "post", "delete"].contains(&method.as_str()) {
                let public = op["security"].as_array().is_some_and(Vec::is_empty);
                ops.push((method.to_uppercase(), filled.clone(), public));
            }
        }
    }
    assert!(ops.len() >= 25, "{ops:?}");
    ops
}

/// The state folder `serve` gives the service of config folder `dir`.
fn state(dir: &Path) -> std::path::PathBuf {
    dir.join(".state")
}

#[test]
fn every_endpoint_needs_a_token_and_a_viewer_changes_nothing() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    pattern_pipeline(&conf, "yard", "0.25");
    let http = free_port();
    let log = dir.path().join("serve.log");
    let child = serve(&conf, http, "500ms", &log, &[]);
    let admin = token_of(http);
    let viewer = create_token(&state(&conf), "wall", Role::Viewer).unwrap();

    for (method, path, public) in documented_operations() {
        let (code, body, _) = call(http, &method, &path, None, &[], Some("{}"));
        if public {
            assert_ne!(code, 401, "{method} {path} is documented public: {body}");
        } else {
            assert_eq!(code, 401, "{method} {path} without a token: {body}");
        }
    }
    let before = super::service::pipelines(http);
    let viewer_may = ["/api/login", "/api/check", "/api/logout"];
    for (method, path, _) in documented_operations() {
        if method == "GET" || viewer_may.contains(&path.as_str()) {
            continue;
        }
        let (code, body, _) = call(
            http,
            &method,
            &path,
            Some(&viewer),
            &[],
            Some("name: yard\n"),
        );
        assert_eq!(code, 403, "{method} {path} with a viewer token: {body}");
    }
    let after = super::service::pipelines(http);
    assert_eq!(before.len(), after.len());
    assert_eq!(
        by_name(&after, "yard")["starts"],
        1,
        "a viewer restarted nothing"
    );
    assert!(
        std::fs::read_dir(state(&conf).join("pipelines"))
            .unwrap()
            .next()
            .is_none()
    );

    // the console: login → cookie; a change needs the CSRF token too
    let login = serde_json::json!({ "token": admin }).to_string();
    let (code, body, cookie) = login_with(http, &login);
    assert_eq!(code, 200, "{body}");
    let cookie = cookie.expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let csrf = serde_json::from_str::<serde_json::Value>(&body).unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    let pipeline = added_pipeline("api");
    let (code, _, _) = call(
        http,
        "PUT",
        "/api/pipelines/api",
        None,
        &[("Cookie", &session)],
        Some(&pipeline),
    );
    assert_eq!(code, 403, "a cookie without the CSRF token changes nothing");
    let (code, body, _) = call(
        http,
        "PUT",
        "/api/pipelines/api",
        None,
        &[("Cookie", &session), ("X-CSRF-Token", &csrf)],
        Some(&pipeline),
    );
    assert_eq!(code, 201, "{body}");
    let (code, _, _) = call(
        http,
        "GET",
        "/api/session",
        None,
        &[("Cookie", &session)],
        None,
    );
    assert_eq!(code, 200);

    // five wrong tokens from one address, then even the right one waits
    let wrong = "vgl_0000000000000000000000000000000000000000000000000000000000000000";
    for _ in 0..5 {
        let body = serde_json::json!({ "token": wrong }).to_string();
        assert_eq!(login_with(http, &body).0, 401);
    }
    let (code, body, _) = login_with(http, &login);
    assert_eq!(code, 429, "{body}");

    sigterm(&child.0);
    let mut child = child;
    let status = super::common::wait_exit(&mut child.0, Duration::from_secs(60));
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [
        admin.as_str(),
        viewer.as_str(),
        wrong,
        &session[session.find('=').unwrap() + 1..],
        &csrf,
    ] {
        assert!(!text.contains(secret), "a secret reached the log:\n{text}");
    }
    assert!(
        text.contains("console login"),
        "logins are logged (without tokens):\n{text}"
    );
}

/// `POST /api/login` with the JSON `body`.
fn login_with(port: u16, body: &str) -> (u16, String, Option<String>) {
    call(
        port,
        "POST",
        "/api/login",
        None,
        &[("Content-Type", "application/json")],
        Some(body),
    )
}

/// A small pipeline named `name` on a test pattern.
fn added_pipeline(name: &str) -> String {
    format!(
        "name: {name}\nsources:\n  - id: cam\n    uri: test:ball?width=160&height=120&fps=5\n\
         detector:\n  model: {}\n",
        model().display()
    )
}

fn serve_on(conf: &Path, log: &Path, extra: &[&str]) -> (Reaped, u16) {
    let http = free_port();
    let mut cmd = vigil();
    cmd.args(["serve", "--config-dir"])
        .arg(conf)
        .args(["--http", &format!("127.0.0.1:{http}"), "--poll", "500ms"])
        .args(super::service::state_args(conf, http))
        .args(extra)
        .stderr(std::fs::File::create(log).unwrap());
    let child = Reaped(cmd.spawn().unwrap());
    wait_for("/readyz", Duration::from_secs(60), || {
        super::service::get(http, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    (child, http)
}

#[test]
fn a_pipeline_created_through_the_api_is_checked_survives_a_restart_and_can_be_deleted() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    pattern_pipeline(&conf, "yard", "0.25");
    let log = dir.path().join("serve.log");
    let (child, http) = serve_on(&conf, &log, &["--max-sources", "2"]);
    let admin = token_of(http);
    let put = |name: &str, text: &str| {
        call(
            http,
            "PUT",
            &format!("/api/pipelines/{name}"),
            Some(&admin),
            &[],
            Some(text),
        )
    };

    let broken = added_pipeline("gate").replace("detector:\n", "detector:\n  confidence: high\n");
    let (code, body, _) = put("gate", &broken);
    assert_eq!(code, 422, "{body}");
    let problems = &serde_json::from_str::<serde_json::Value>(&body).unwrap()["problems"];
    assert_eq!(problems[0]["line"], 6, "{body}");
    let (code, body, _) = put("gate", &added_pipeline("other"));
    assert_eq!(code, 422, "the name inside must be the name saved: {body}");
    let two =
        added_pipeline("gate").replace("detector:", "  - id: cam2\n    uri: test:smpte\ndetector:");
    let (code, body, _) = put("gate", &two);
    assert_eq!(code, 422, "over --max-sources with the running one: {body}");
    let (code, body, _) = put("yard", &added_pipeline("yard"));
    assert_eq!(
        code, 409,
        "the config folder's pipelines are read-only here: {body}"
    );
    assert!(
        !state(&conf).join("pipelines/gate.yaml").exists(),
        "nothing refused is written"
    );

    let (code, body, _) = put("gate", &added_pipeline("gate"));
    assert_eq!(code, 201, "{body}");
    wait_for(
        "frames of the new pipeline",
        Duration::from_secs(120),
        || frames_in(by_name(&super::service::pipelines(http), "gate")) > 0,
    );
    let (code, body, _) = call(
        http,
        "POST",
        "/api/sources/gate/cam/stop",
        Some(&admin),
        &[],
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["state"],
        "paused"
    );

    sigterm(&child.0);
    let mut child = child;
    assert!(super::common::wait_exit(&mut child.0, Duration::from_secs(60)).success());

    let (child, http) = serve_on(&conf, &log, &[]);
    let admin = token_of(http);
    // a source stopped through the API stays stopped across a restart of the service
    let (_, body, _) = call(http, "GET", "/api/sources", Some(&admin), &[], None);
    let sources: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let cam = sources
        .iter()
        .find(|s| s["pipeline"] == "gate")
        .expect("gate's source");
    assert_eq!(cam["paused"], true, "{body}");
    let (code, body, _) = call(
        http,
        "POST",
        "/api/sources/gate/cam/start",
        Some(&admin),
        &[],
        None,
    );
    assert_eq!(code, 200, "{body}");
    wait_for("frames after the restart", Duration::from_secs(120), || {
        frames_in(by_name(&super::service::pipelines(http), "gate")) > 0
    });
    let gate = by_name(&super::service::pipelines(http), "gate").clone();
    assert_eq!(gate["managed"], true);
    assert_eq!(gate["state"], "running");
    let (code, body, _) = call(http, "GET", "/api/pipelines/gate", Some(&admin), &[], None);
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["yaml"],
        added_pipeline("gate")
    );
    let (code, jpeg, _) = call(
        http,
        "GET",
        "/api/sources/gate/cam/frame.jpg",
        Some(&admin),
        &[],
        None,
    );
    assert_eq!(code, 200);
    assert!(!jpeg.is_empty());

    let (code, _, _) = call(
        http,
        "DELETE",
        "/api/pipelines/gate",
        Some(&admin),
        &[],
        None,
    );
    assert_eq!(code, 204);
    assert!(!state(&conf).join("pipelines/gate.yaml").exists());
    assert!(
        super::service::pipelines(http)
            .iter()
            .all(|p| p["name"] != "gate")
    );
    let (code, _, _) = call(
        http,
        "DELETE",
        "/api/pipelines/yard",
        Some(&admin),
        &[],
        None,
    );
    assert_eq!(code, 409);
    sigterm(&child.0);
    let mut child = child;
    assert!(super::common::wait_exit(&mut child.0, Duration::from_secs(60)).success());
}
