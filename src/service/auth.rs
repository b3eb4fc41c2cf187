//! Who may use the HTTP API and console: API tokens (stored hashed), console sessions (an
//! HttpOnly cookie plus a CSRF token for requests that change state), and a login rate limit.
//!
//! - Tokens are 32 random bytes (`vgl_` + 64 hex digits). Only their SHA-256 is stored, in
//!   `STATE_DIR/tokens.json` (mode 0600): a stolen file opens nothing. Tokens have so much
//!   entropy that a slow password hash would add nothing but latency to every request.
//! - `POST /api/login` trades a token for a session (12 h, in memory: a restart logs everyone out).
//!   A browser carries the cookie on every request by itself, so state-changing requests with a
//!   cookie must also send `X-CSRF-Token` (a page of another site cannot read it). Bearer tokens
//!   are not sent by browsers on their own and need no CSRF token.
//! - Failed logins are counted per client address: after [`LOGIN_FAILURES`] within
//!   [`LOGIN_WINDOW`], that address is refused until the window has passed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::flow::lock;

/// What a token or session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also creates, changes and deletes pipelines, and starts and stops sources.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown role `{other}`: admin or viewer")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Viewer => "viewer",
            Self::Admin => "admin",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a token file: {source}")]
    Format {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no random source: {0}")]
    Random(String),
    #[error("a token named `{0}` exists already")]
    Exists(String),
}

/// One stored token: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredToken {
    pub name: String,
    pub role: Role,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// Unix seconds.
    pub created: u64,
}

/// The token file of a state folder.
pub fn tokens_file(state_dir: &Path) -> PathBuf {
    state_dir.join("tokens.json")
}

/// The tokens stored under `state_dir` (none when the file does not exist yet).
pub fn read_tokens(state_dir: &Path) -> Result<Vec<StoredToken>, AuthError> {
    let path = tokens_file(state_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| AuthError::Format {
            path: path.clone(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(AuthError::Io { path, source }),
    }
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> Result<String, AuthError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Create a token named `name` with `role` under `state_dir`; returns the token (shown once).
pub fn create_token(state_dir: &Path, name: &str, role: Role) -> Result<String, AuthError> {
    let mut tokens = read_tokens(state_dir)?;
    if tokens.iter().any(|t| t.name == name) {
        return Err(AuthError::Exists(name.to_string()));
    }
    let token = format!("vgl_{}", random_hex(32)?);
    tokens.push(StoredToken {
        name: name.to_string(),
        role,
        sha256: crate::hash::sha256_hex(token.as_bytes()),
        created: unix_now(),
    });
    write_tokens(state_dir, &tokens)?;
    Ok(token)
}

/// Remove the token named `name`; whether there was one.
pub fn revoke_token(state_dir: &Path, name: &str) -> Result<bool, AuthError> {
    let mut tokens = read_tokens(state_dir)?;
    let before = tokens.len();
    tokens.retain(|t| t.name != name);
    if tokens.len() == before {
        return Ok(false);
    }
    write_tokens(state_dir, &tokens)?;
    Ok(true)
}

/// Write the token file atomically, readable by its owner only.
fn write_tokens(state_dir: &Path, tokens: &[StoredToken]) -> Result<(), AuthError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = tokens_file(state_dir);
    let io = |source| AuthError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let tmp = state_dir.join(".tokens.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    let json = serde_json::to_vec_pretty(tokens).map_err(|e| io(std::io::Error::other(e)))?;
    f.write_all(&json).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Who made a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// The session's CSRF token when the caller came with the session cookie.
    pub csrf: Option<String>,
}

/// A console session.
#[derive(Debug, Clone)]
struct Session {
    caller: Caller,
    expires: Instant,
}

/// How long a console session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed logins per client address within [`LOGIN_WINDOW`] before it is refused.
pub const LOGIN_FAILURES: usize = 5;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Sessions kept at most (oldest dropped): memory stays bounded whatever clients do.
const MAX_SESSIONS: usize = 1024;
/// Client addresses whose failures are remembered at most.
const MAX_LIMITED: usize = 4096;

/// Tokens, sessions and the login limiter of a running service.
pub struct Auth {
    state_dir: PathBuf,
    /// `(sha256, token)`, re-read when the file changes (`vigil token create` while serving).
    tokens: Mutex<(Option<SystemTime>, Vec<StoredToken>)>,
    /// By SHA-256 of the session id (a memory dump does not hand out sessions either).
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

impl Auth {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
            tokens: Mutex::new((None, Vec::new())),
            sessions: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// How many tokens exist (the service warns at start when none does).
    pub fn token_count(&self) -> usize {
        self.refresh();
        lock(&self.tokens).1.len()
    }

    /// Re-read the token file when it changed (cheap: one `stat`).
    fn refresh(&self) {
        let path = tokens_file(&self.state_dir);
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let mut g = lock(&self.tokens);
        if g.0 == modified && modified.is_some() {
            return;
        }
        match read_tokens(&self.state_dir) {
            Ok(t) => *g = (modified, t),
            Err(e) => tracing::error!("API tokens: {e}"),
        }
    }

    /// The caller a bearer token stands for.
    pub fn by_token(&self, token: &str) -> Option<Caller> {
        self.refresh();
        let sha = crate::hash::sha256_hex(token.as_bytes());
        lock(&self.tokens)
            .1
            .iter()
            .find(|t| constant_time_eq(t.sha256.as_bytes(), sha.as_bytes()))
            .map(|t| Caller {
                name: t.name.clone(),
                role: t.role,
                csrf: None,
            })
    }

    /// The caller of a live session.
    pub fn by_session(&self, id: &str) -> Option<Caller> {
        let key = crate::hash::sha256_hex(id.as_bytes());
        let mut sessions = lock(&self.sessions);
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.caller.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Log in from `ip` with `token`: `(session id, caller)`, or why not.
    pub fn login(&self, ip: IpAddr, token: &str) -> Result<(String, Caller), LoginRefused> {
        if let Some(wait) = self.limited(ip) {
            return Err(LoginRefused::TooMany(wait));
        }
        let Some(mut caller) = self.by_token(token) else {
            self.failed(ip);
            return Err(LoginRefused::BadToken);
        };
        let (id, csrf) = match (random_hex(32), random_hex(32)) {
            (Ok(id), Ok(csrf)) => (id, csrf),
            _ => return Err(LoginRefused::NoRandom),
        };
        caller.csrf = Some(csrf);
        let mut sessions = lock(&self.sessions);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            crate::hash::sha256_hex(id.as_bytes()),
            Session {
                caller: caller.clone(),
                expires: now + SESSION_TTL,
            },
        );
        Ok((id, caller))
    }

    pub fn logout(&self, id: &str) {
        lock(&self.sessions).remove(&crate::hash::sha256_hex(id.as_bytes()));
    }

    /// How long `ip` must wait before it may try again, when it is refused now.
    fn limited(&self, ip: IpAddr) -> Option<Duration> {
        let mut failures = lock(&self.failures);
        let now = Instant::now();
        let list = failures.get_mut(&ip)?;
        list.retain(|t| now.duration_since(*t) < LOGIN_WINDOW);
        if list.len() < LOGIN_FAILURES {
            return None;
        }
        let oldest = list.first().copied()?;
        Some(LOGIN_WINDOW.saturating_sub(now.duration_since(oldest)))
    }

    fn failed(&self, ip: IpAddr) {
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_LIMITED && !failures.contains_key(&ip) {
            let now = Instant::now();
            failures.retain(|_, l| l.iter().any(|t| now.duration_since(*t) < LOGIN_WINDOW));
        }
        failures.entry(ip).or_default().push(Instant::now());
    }
}

/// Why a login was refused.
#[derive(Debug)]
pub enum LoginRefused {
    BadToken,
    /// Too many failures from this address: retry after this long.
    TooMany(Duration),
    NoRandom,
}

/// Equal bytes, compared in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_found_by_value() {
        let dir = tempfile::tempdir().unwrap();
        let admin = create_token(dir.path(), "ops", Role::Admin).unwrap();
        let viewer = create_token(dir.path(), "wall", Role::Viewer).unwrap();
        let file = std::fs::read_to_string(tokens_file(dir.path())).unwrap();
        assert!(!file.contains(&admin) && !file.contains(&viewer[4..]));
        let auth = Auth::new(dir.path());
        assert_eq!(auth.by_token(&admin).unwrap().role, Role::Admin);
        assert_eq!(auth.by_token(&viewer).unwrap().role, Role::Viewer);
        assert!(auth.by_token("vgl_0").is_none());
        assert!(create_token(dir.path(), "ops", Role::Viewer).is_err());
        assert!(revoke_token(dir.path(), "ops").unwrap());
        assert!(Auth::new(dir.path()).by_token(&admin).is_none());
        assert_eq!(read_tokens(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn logins_are_limited_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let token = create_token(dir.path(), "ops", Role::Admin).unwrap();
        let auth = Auth::new(dir.path());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..LOGIN_FAILURES {
            assert!(matches!(
                auth.login(ip, "vgl_wrong"),
                Err(LoginRefused::BadToken)
            ));
        }
        assert!(matches!(
            auth.login(ip, &token),
            Err(LoginRefused::TooMany(_))
        ));
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let (id, caller) = auth.login(other, &token).unwrap();
        assert!(caller.csrf.is_some());
        assert_eq!(auth.by_session(&id).unwrap().name, "ops");
        auth.logout(&id);
        assert!(auth.by_session(&id).is_none());
    }
}
