//! What verify and drill found, kept in the repository: `info` and `check` report the last run
//! and the last success from here, so a monitoring host that only reads the repository can tell
//! a drill that stopped running (or started failing) a month ago.
//!
//! One sealed document per run, `<stanza>/outcome/<command>/<when>-<random>`, create-once like
//! everything else; the writer then removes all but the newest [`KEEP`] of its command. `<when>`
//! is the run's end in UTC with microseconds, so names sort by time; the random suffix keeps two
//! runs ending in the same microsecond (two hosts) apart.

use super::Repository;
use super::crypto::{Kind, Opener, Sealer};
use crate::error::{Error, Result};
use crate::store::Put;
use serde::{Deserialize, Serialize};

pub const OUTCOME_FORMAT: &str = "pgfrost-outcome";
/// Documents kept per command: enough to see a pattern of failures, never a growing pile.
pub const KEEP: usize = 30;
/// Commands that record their outcome.
pub const COMMANDS: [&str; 2] = ["verify", "drill"];
const SUMMARY_MAX: usize = 4000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutcomeDoc {
    pub format: String,
    pub version: u32,
    /// `verify` or `drill`; equals the object's directory.
    pub command: String,
    pub passed: bool,
    /// Unix seconds (the repository's clock, crate::clock).
    pub started_unix: i64,
    pub ended_unix: i64,
    pub duration_seconds: f64,
    /// The drill's backup label; absent for verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// What was wrong (the first problems, the error), or a one-line result.
    pub summary: String,
    /// The pgfrost that ran it (`0.1.0 (commit ...)`).
    pub pgfrost: String,
}

impl OutcomeDoc {
    pub fn new(
        command: &str,
        passed: bool,
        started_unix: i64,
        duration_seconds: f64,
        summary: &str,
    ) -> OutcomeDoc {
        let mut summary = summary.to_string();
        if summary.len() > SUMMARY_MAX {
            let mut cut = SUMMARY_MAX;
            while !summary.is_char_boundary(cut) {
                cut -= 1;
            }
            summary.truncate(cut);
            summary.push_str(" ...");
        }
        OutcomeDoc {
            format: OUTCOME_FORMAT.into(),
            version: 1,
            command: command.into(),
            passed,
            started_unix,
            ended_unix: started_unix + duration_seconds.round() as i64,
            duration_seconds,
            backup: None,
            summary,
            pgfrost: crate::cli::version(),
        }
    }
}

fn dir(stanza: &str, command: &str) -> String {
    format!("{stanza}/outcome/{command}/")
}

/// `20261202T150405.123456Z-1a2b3c4d`: sortable, readable, unique across hosts.
fn name(ended_us: i64) -> String {
    let t = jiff::Timestamp::from_microsecond(ended_us).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let mut r = [0u8; 4];
    getrandom::fill(&mut r).expect("the operating system's random source failed");
    format!(
        "{}-{:02x}{:02x}{:02x}{:02x}",
        t.strftime("%Y%m%dT%H%M%S%.6fZ"),
        r[0],
        r[1],
        r[2],
        r[3]
    )
}

/// Whether `path` is where an outcome document belongs; its command when it is.
pub fn parse_path(stanza: &str, path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix(stanza)?.strip_prefix("/outcome/")?;
    let (command, name) = rest.split_once('/')?;
    let command = COMMANDS.into_iter().find(|c| *c == command)?;
    let b = name.as_bytes();
    let ok = b.len() == 32
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'.'
        && b[16..22].iter().all(u8::is_ascii_digit)
        && &b[22..24] == b"Z-"
        && b[24..]
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some(command)
}

/// Stores one run's outcome, then removes the command's documents beyond the newest [`KEEP`].
/// The path of the new document.
pub async fn record(repo: &Repository, stanza: &str, doc: &OutcomeDoc) -> Result<String> {
    let ended_us = doc.started_unix * 1_000_000 + (doc.duration_seconds * 1e6) as i64;
    let path = format!("{}{}", dir(stanza, &doc.command), name(ended_us));
    let json = serde_json::to_vec(doc).expect("outcome serializes");
    let sealed = Sealer::new(None).seal(&repo.keys, Kind::Outcome, path.as_bytes(), &json);
    if repo.store.put_new(&path, sealed.into()).await? == Put::AlreadyExists {
        return Err(Error::internal(format!(
            "outcome {path} already exists (a random name repeated)"
        )));
    }
    let mut listed = list_paths(repo, stanza, &doc.command).await?;
    if listed.len() > KEEP {
        listed.truncate(listed.len() - KEEP);
        for old in listed {
            // Best effort: a document left behind is removed by the next run.
            if let Err(e) = repo.store.delete(&old).await {
                log::debug!("cannot remove old outcome {old}: {e}");
            }
        }
    }
    Ok(path)
}

/// The command's documents, oldest first.
async fn list_paths(repo: &Repository, stanza: &str, command: &str) -> Result<Vec<String>> {
    let mut v: Vec<String> = repo
        .store
        .list(&dir(stanza, command))
        .await?
        .into_iter()
        .map(|l| l.path)
        .filter(|p| parse_path(stanza, p) == Some(command))
        .collect();
    v.sort();
    Ok(v)
}

/// Opens and checks one stored document.
pub fn open(repo: &Repository, path: &str, sealed: &[u8]) -> Result<OutcomeDoc> {
    let bad = |m: String| {
        Error::corrupt(format!(
            "outcome '{path}' in repository {}: {m}",
            repo.store.location()
        ))
    };
    let plain = Opener::new()
        .open(&repo.keys, Kind::Outcome, path.as_bytes(), sealed, 1 << 20)
        .map_err(|e| bad(e.to_string()))?;
    let doc: OutcomeDoc =
        serde_json::from_slice(&plain).map_err(|e| bad(format!("does not parse: {e}")))?;
    if doc.format != OUTCOME_FORMAT || doc.version != 1 {
        return Err(bad(format!(
            "format {} version {} is not supported",
            doc.format, doc.version
        )));
    }
    let stanza = path.split('/').next().unwrap_or_default();
    if parse_path(stanza, path) != Some(doc.command.as_str()) {
        return Err(bad(format!(
            "is filed away from its command {}",
            doc.command
        )));
    }
    Ok(doc)
}

/// The newest run of a command and its newest passing run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latest {
    pub last: Option<OutcomeDoc>,
    pub last_passed: Option<OutcomeDoc>,
    /// Documents that could not be read, each naming its object (verify says more).
    pub unreadable: Vec<String>,
}

/// Reads newest first until a passing run is found (at most [`KEEP`] and a few documents).
pub async fn latest(repo: &Repository, stanza: &str, command: &str) -> Result<Latest> {
    let mut out = Latest::default();
    for path in list_paths(repo, stanza, command).await?.into_iter().rev() {
        let doc = match repo
            .store
            .get(&path)
            .await
            .and_then(|b| open(repo, &path, &b))
        {
            Ok(d) => d,
            Err(e) => {
                out.unreadable.push(e.to_string());
                continue;
            }
        };
        if out.last.is_none() {
            out.last = Some(doc.clone());
        }
        if doc.passed {
            out.last_passed = Some(doc);
            break;
        }
    }
    Ok(out)
}

/// Records a run's outcome; a repository this user cannot write to only costs the record, not
/// the run's own result, so the failure is a warning.
pub async fn record_or_warn(repo: &Repository, stanza: &str, doc: &OutcomeDoc) {
    match record(repo, stanza, doc).await {
        Ok(p) => log::debug!("{} outcome recorded as {p}", doc.command),
        Err(e) => log::warn!(
            "could not record the {} outcome in the repository: {e}\nHINT: info and check report the last {} from the repository; give this user write access to it",
            doc.command,
            doc.command
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_parse() {
        let a = name(1_796_190_249_872_791);
        let b = name(1_796_190_249_872_792);
        assert!(a.starts_with("20261202T054409.872791Z-"), "{a}");
        assert!(a < b);
        let p = format!("main/outcome/drill/{a}");
        assert_eq!(parse_path("main", &p), Some("drill"));
        assert_eq!(parse_path("mai", &p), None);
        assert_eq!(
            parse_path("main", &format!("main/outcome/backup/{a}")),
            None
        );
        assert_eq!(
            parse_path("main", &format!("main/outcome/drill/{a}x")),
            None
        );
        assert_eq!(
            parse_path("main", &format!("main/outcome/drill/{}", a.to_uppercase())),
            None
        );
    }

    /// A month of nightly drills on a real (local) repository: the newest 30 stay, the last run
    /// and the last success are found, a damaged document is reported, not fatal.
    #[tokio::test]
    async fn keeps_the_newest_and_finds_the_last_success() {
        let dir = tempfile::tempdir().unwrap();
        let loc = crate::store::Location::parse(dir.path().to_str().unwrap()).unwrap();
        let store = crate::store::Store::open(&loc, true).unwrap();
        let cost = crate::repo::keys::Cost {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        let repo = Repository::create(store, b"pw", cost, "test")
            .await
            .unwrap();
        let day = 86_400;
        for i in 0..33i64 {
            // Passes until night 30, then fails.
            let d = OutcomeDoc::new("drill", i < 30, 1_790_000_000 + i * day, 40.0, "x");
            record(&repo, "main", &d).await.unwrap();
        }
        record(
            &repo,
            "main",
            &OutcomeDoc::new("verify", true, 1_790_000_000, 1.0, "ok"),
        )
        .await
        .unwrap();
        assert_eq!(
            list_paths(&repo, "main", "drill").await.unwrap().len(),
            KEEP
        );
        assert_eq!(list_paths(&repo, "main", "verify").await.unwrap().len(), 1);
        let l = latest(&repo, "main", "drill").await.unwrap();
        let last = l.last.unwrap();
        assert!(!last.passed);
        assert_eq!(last.started_unix, 1_790_000_000 + 32 * day);
        assert_eq!(
            l.last_passed.unwrap().started_unix,
            1_790_000_000 + 29 * day
        );
        assert!(l.unreadable.is_empty());

        // The newest document damaged: reported, and the one before it is the last run.
        let newest = list_paths(&repo, "main", "drill")
            .await
            .unwrap()
            .pop()
            .unwrap();
        let file = dir.path().join(&newest);
        let mut b = std::fs::read(&file).unwrap();
        let n = b.len();
        b[n - 1] ^= 1;
        std::fs::write(&file, b).unwrap();
        let l = latest(&repo, "main", "drill").await.unwrap();
        assert_eq!(l.unreadable.len(), 1, "{:?}", l.unreadable);
        assert!(l.unreadable[0].contains(&newest), "{:?}", l.unreadable);
        assert_eq!(l.last.unwrap().started_unix, 1_790_000_000 + 31 * day);
        // Filed under another command's name: refused.
        let drill_doc = list_paths(&repo, "main", "drill").await.unwrap()[0].clone();
        let sealed = repo.store.get(&drill_doc).await.unwrap();
        assert!(open(&repo, &drill_doc, &sealed).is_ok());
        let moved = drill_doc.replace("/drill/", "/verify/");
        assert!(open(&repo, &moved, &sealed).is_err());
    }

    #[test]
    fn long_summaries_are_cut_on_a_character() {
        let d = OutcomeDoc::new("verify", false, 10, 2.6, &"é".repeat(3000));
        assert!(d.summary.len() <= SUMMARY_MAX + 4);
        assert!(d.summary.ends_with(" ..."));
        assert_eq!(d.ended_unix, 13);
    }
}
