//! Files from the Hugging Face hub, with timeouts and errors that say what happened.
//!
//! hf-hub's cache layout (`$HF_HOME/hub/<kind>s--owner--name/snapshots/<commit>/<file>`, found
//! with [`hf_hub::Cache`], so files hf-hub or Python fetched are reused and the other way
//! round), downloaded here over a ureq agent with connect and read timeouts (hf-hub 0.4's own
//! client has none: an endpoint that accepts the connection and never answers hung forever).
//! Failures are told apart ([`HubError`]): offline (`HF_HUB_OFFLINE`, or no route, or a
//! timeout), not found (naming repository and file), a server that does not behave like the
//! hub (no commit or ETag headers, not HTTP), and other HTTP errors. A download shows a
//! progress bar on a terminal and can be limited to a prefix of the file (a documented slice of
//! a large corpus instead of all of it).

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use hf_hub::{Repo, RepoType};
use indicatif::{ProgressBar, ProgressStyle};

/// Seconds to wait for a connection and for each read; `$STARMIND_HUB_TIMEOUT_S` overrides.
pub const DEFAULT_TIMEOUT_S: u64 = 20;
/// Environment variable overriding [`DEFAULT_TIMEOUT_S`].
pub const TIMEOUT_ENV: &str = "STARMIND_HUB_TIMEOUT_S";

/// One file of one hub repository at one revision.
#[derive(Debug, Clone)]
pub struct HubFile {
    pub kind: RepoType,
    pub repo: String,
    pub revision: String,
    pub file: String,
    /// Fetch only the first this many bytes (cached under `<file>.first-<n>-bytes`).
    pub prefix_bytes: Option<u64>,
}

/// Why a hub file could not be had.
#[derive(Debug)]
pub enum HubError {
    /// `HF_HUB_OFFLINE` is set and the file is not in the cache.
    OfflineMode { what: String, cache: PathBuf },
    /// No connection, or no answer within the timeout.
    Unreachable {
        endpoint: String,
        what: String,
        reason: String,
    },
    /// The hub says there is no such repository or file (HTTP 404, or 401 for a missing or
    /// private repository).
    NotFound {
        endpoint: String,
        repo: String,
        file: String,
    },
    /// The server answered, but not like the Hugging Face hub.
    NotAHub { endpoint: String, detail: String },
    /// Any other HTTP error status.
    Status {
        endpoint: String,
        what: String,
        code: u16,
        text: String,
    },
    /// Writing into the cache failed.
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::OfflineMode { what, cache } => write!(
                f,
                "offline (HF_HUB_OFFLINE is set) and {what} is not in the hf-hub cache {}",
                cache.display()
            ),
            HubError::Unreachable { endpoint, what, reason } => write!(
                f,
                "cannot reach the hub at {endpoint} for {what} ({reason}); set HF_HUB_OFFLINE=1 to use only the cache"
            ),
            HubError::NotFound { endpoint, repo, file } => write!(
                f,
                "not found on the hub at {endpoint}: {repo} has no file {file} (no such repository or file, or a private or gated one)"
            ),
            HubError::NotAHub { endpoint, detail } => write!(
                f,
                "{endpoint} does not answer like the Hugging Face hub ({detail}); check HF_ENDPOINT"
            ),
            HubError::Status { endpoint, what, code, text } => {
                write!(f, "the hub at {endpoint} answered HTTP {code} {text} for {what}")
            }
            HubError::Cache { path, .. } => {
                write!(f, "writing {} into the hf-hub cache", path.display())
            }
        }
    }
}

impl std::error::Error for HubError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HubError::Cache { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `HF_ENDPOINT`, else the public hub.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into())
        .trim_end_matches('/')
        .to_string()
}

/// Whether `HF_HUB_OFFLINE` asks for the cache only.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| !v.is_empty() && v != "0" && v.to_lowercase() != "false")
}

fn timeout() -> Duration {
    let seconds = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(DEFAULT_TIMEOUT_S as f64);
    Duration::from_secs_f64(seconds)
}

impl HubFile {
    /// The whole of `file` in the model repository `repo` at `revision`.
    pub fn model(repo: &str, revision: &str, file: &str) -> HubFile {
        HubFile {
            kind: RepoType::Model,
            repo: repo.to_string(),
            revision: revision.to_string(),
            file: file.to_string(),
            prefix_bytes: None,
        }
    }

    /// The whole of `file` in the dataset repository `repo` (revision `main`).
    pub fn dataset(repo: &str, file: &str) -> HubFile {
        HubFile {
            kind: RepoType::Dataset,
            ..HubFile::model(repo, "main", file)
        }
    }

    /// Only the first `bytes` bytes.
    pub fn prefix(mut self, bytes: u64) -> HubFile {
        self.prefix_bytes = Some(bytes);
        self
    }

    /// `owner/name/file` (with the prefix, if any), for messages.
    pub fn describe(&self) -> String {
        match self.prefix_bytes {
            Some(n) => format!("{}/{} (first {n} bytes)", self.repo, self.file),
            None => format!("{}/{}", self.repo, self.file),
        }
    }

    /// The name the file has in the cache.
    fn cache_name(&self) -> String {
        match self.prefix_bytes {
            Some(n) => format!("{}.first-{n}-bytes", self.file),
            None => self.file.clone(),
        }
    }

    fn cache_repo(&self) -> Repo {
        Repo::with_revision(self.repo.clone(), self.kind, self.revision.clone())
    }

    fn url(&self, endpoint: &str) -> String {
        let kind = match self.kind {
            RepoType::Model => "",
            RepoType::Dataset => "datasets/",
            RepoType::Space => "spaces/",
        };
        format!(
            "{endpoint}/{kind}{}/resolve/{}/{}",
            self.repo, self.revision, self.file
        )
    }

    /// The file from the hf-hub cache, or downloaded into it.
    pub fn get(&self) -> Result<PathBuf, HubError> {
        let cache = hf_hub::Cache::from_env();
        if let Some(path) = cache.repo(self.cache_repo()).get(&self.cache_name()) {
            return Ok(path);
        }
        if offline() {
            return Err(HubError::OfflineMode {
                what: self.describe(),
                cache: cache.path().clone(),
            });
        }
        self.download(&cache)
    }

    // ureq's error is large; it lives only until it is classified into a HubError.
    #[allow(clippy::result_large_err)]
    fn download(&self, cache: &hf_hub::Cache) -> Result<PathBuf, HubError> {
        let endpoint = endpoint();
        let what = self.describe();
        let builder = || {
            ureq::AgentBuilder::new()
                .timeout_connect(timeout())
                .timeout_read(timeout())
                .timeout_write(timeout())
                .try_proxy_from_env(true)
        };
        let no_redirects = builder().redirects(0).build();
        let range = self
            .prefix_bytes
            .map(|n| format!("bytes=0-{}", n.max(1) - 1));
        let request = |agent: &ureq::Agent, url: &str| {
            let mut r = agent.get(url);
            if let Some(range) = &range {
                r = r.set("Range", range);
            }
            if let Some(token) = cache.token() {
                r = r.set("Authorization", &format!("Bearer {token}"));
            }
            r.call()
        };
        let classify = |err: ureq::Error| -> HubError {
            match err {
                ureq::Error::Status(404 | 401, _) => HubError::NotFound {
                    endpoint: endpoint.clone(),
                    repo: self.repo.clone(),
                    file: self.file.clone(),
                },
                ureq::Error::Status(code, response) => HubError::Status {
                    endpoint: endpoint.clone(),
                    what: what.clone(),
                    code,
                    text: response.status_text().to_string(),
                },
                ureq::Error::Transport(t) => match t.kind() {
                    ureq::ErrorKind::BadStatus
                    | ureq::ErrorKind::BadHeader
                    | ureq::ErrorKind::TooManyRedirects
                    | ureq::ErrorKind::InvalidUrl
                    | ureq::ErrorKind::UnknownScheme => HubError::NotAHub {
                        endpoint: endpoint.clone(),
                        detail: t.to_string(),
                    },
                    _ => HubError::Unreachable {
                        endpoint: endpoint.clone(),
                        what: what.clone(),
                        reason: t.to_string(),
                    },
                },
            }
        };
        let first = request(&no_redirects, &self.url(&endpoint)).map_err(classify)?;
        // The hub names the commit and the file's ETag on its own answer, also when it
        // redirects a large file to its CDN.
        let header = |name: &str| first.header(name).map(str::to_string);
        let not_a_hub = |detail: &str| HubError::NotAHub {
            endpoint: endpoint.clone(),
            detail: detail.to_string(),
        };
        let commit = header("x-repo-commit")
            .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric()))
            .ok_or_else(|| not_a_hub("its answer has no x-repo-commit header"))?;
        if header("x-linked-etag").or(header("etag")).is_none() {
            return Err(not_a_hub("its answer has no ETag"));
        }
        let response = if (300..400).contains(&first.status()) {
            let location =
                header("location").ok_or_else(|| not_a_hub("a redirect without a location"))?;
            let location = match location.starts_with('/') {
                true => format!("{endpoint}{location}"),
                false => location,
            };
            request(&builder().build(), &location).map_err(classify)?
        } else {
            first
        };
        let total = response
            .header("content-range")
            .and_then(|r| r.rsplit('/').next())
            .and_then(|n| n.parse::<u64>().ok())
            .or_else(|| {
                response
                    .header("content-length")
                    .and_then(|n| n.parse().ok())
            });
        let length = match (self.prefix_bytes, total) {
            (Some(p), Some(t)) => Some(p.min(t)),
            (p, t) => p.or(t),
        };

        let mut dir = cache.path().join(self.cache_repo().folder_name());
        dir.push("snapshots");
        dir.push(&commit);
        let path = dir.join(self.cache_name());
        let cache_err = |path: &PathBuf| {
            let path = path.clone();
            move |source| HubError::Cache { path, source }
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(cache_err(&path))?;
        }
        let tmp = crate::fsio::temp_path(&path).map_err(|e| HubError::Cache {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        eprintln!(
            "fetching {what}{} from {endpoint} into {}",
            length.map_or(String::new(), |n| format!(", {:.1} MB", n as f64 / 1e6)),
            cache.path().display()
        );
        let bar = match std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            true => ProgressBar::new(length.unwrap_or(0)),
            false => ProgressBar::hidden(),
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(self.file.clone());
        let limit = self.prefix_bytes.unwrap_or(u64::MAX);
        let copied = (|| -> std::io::Result<()> {
            let mut body = response.into_reader().take(limit);
            let mut out = std::fs::File::create(&tmp)?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = body.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
                bar.inc(n as u64);
            }
            out.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        bar.finish_and_clear();
        if let Err(err) = copied {
            let _ = std::fs::remove_file(&tmp);
            // A read that timed out or was cut mid-body: the hub went away.
            return Err(match err.kind() {
                std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::UnexpectedEof => HubError::Unreachable {
                    endpoint,
                    what,
                    reason: err.to_string(),
                },
                _ => HubError::Cache { path, source: err },
            });
        }
        cache
            .repo(self.cache_repo())
            .create_ref(&commit)
            .map_err(cache_err(&path))?;
        Ok(path)
    }
}
