//! docs/docker.md, run: its configuration file, the archiving settings of its compose `command`,
//! and every shell line that does not need Docker itself, in the order written, against a real
//! PostgreSQL 16 (the guide's image). The container's paths are mapped to a scratch directory;
//! `docker compose exec|run ... db CMD` runs CMD as the postgres user; lines marked `# docker:`
//! are the only ones left out. A guide whose commands stop working fails here.

use crate::common;

use common::fixture::*;
use common::pg::*;
use common::*;
use std::path::{Path, PathBuf};

fn guide() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/docker.md")).unwrap()
}

/// The fenced blocks of the guide, with their info string.
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut cur, line.strip_prefix("```")) {
            (None, Some(info)) => cur = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(_)) => out.push(cur.take().unwrap()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// The container's paths, and the image's postgres uid, as this machine has them.
struct Map {
    root: PathBuf,
    data: PathBuf,
    cfg: PathBuf,
    bin: PathBuf,
    owner: String,
}

impl Map {
    fn apply(&self, s: &str) -> String {
        let r = self.root.display().to_string();
        let mut s = s
            .replace("/var/lib/postgresql/data", &self.data.display().to_string())
            .replace("/etc/pgfrost/pgfrost.toml", &self.cfg.display().to_string())
            .replace("/etc/pgfrost/key", &format!("{r}/pgfrost/key"))
            .replace("/var/spool/pgfrost", &format!("{r}/pgfrost/spool"))
            .replace("/var/lib/pgfrost", &format!("{r}/pgfrost-repo"))
            .replace("/restore", &format!("{r}/postgres-restored"))
            .replace("70:70", &self.owner);
        // The command word: the binary, with the config file the container finds by default.
        let word = format!("{} --config {} ", self.bin.display(), self.cfg.display());
        if let Some(rest) = s.strip_prefix("pgfrost ") {
            s = format!("{word}{rest}");
        }
        s.replace(" pgfrost ", &format!(" {word}"))
    }
}

/// `docker compose exec [-T] -u postgres db CMD` or `docker compose run ... db CMD`: CMD.
fn in_container(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("docker compose ")?;
    let (_, cmd) = rest.split_once(" db ")?;
    assert!(
        rest.starts_with("exec") || rest.starts_with("run"),
        "a docker line the test does not know; mark it '# docker:' if it needs Docker: {line}"
    );
    assert!(
        rest.contains("-u postgres"),
        "the guide's commands run as postgres: {line}"
    );
    Some(cmd)
}

#[test]
fn the_docker_compose_guide_runs_as_written() {
    let text = guide();
    let blocks = blocks(&text);
    let dir = postgres_dir();
    let root = dir.path().to_path_buf();
    let bin = PgBin::npm(16);

    // The compose file's archiving settings, on a real cluster.
    let yaml = &blocks
        .iter()
        .find(|(i, _)| i == "yaml")
        .expect("a yaml block")
        .1;
    assert!(yaml.contains("image: postgres:16-alpine"), "{yaml}");
    let items: Vec<&str> = yaml
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("- "))
        .collect();
    let settings: Vec<(String, String)> = items
        .windows(2)
        .filter(|w| w[0] == "-c")
        .map(|w| {
            let (k, v) = w[1].split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert!(
        settings
            .iter()
            .any(|(k, v)| k == "archive_mode" && v == "on"),
        "{settings:?}"
    );
    let placeholder = Map {
        root: root.clone(),
        data: PathBuf::new(),
        cfg: root.join("pgfrost/pgfrost.toml"),
        bin: pgfrost_for_postgres(),
        owner: String::new(),
    };
    let quoted: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| {
            let v = if k == "archive_command" {
                placeholder.apply(v)
            } else {
                v.clone()
            };
            (k.clone(), format!("'{}'", v.replace('\'', "''")))
        })
        .collect();
    let refs: Vec<(&str, &str)> = quoted
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut c = Cluster::init(&bin, &refs);
    c.start();
    c.pgbench_init(2);
    let (uid, gid) = if is_root() {
        postgres_ids()
    } else {
        // SAFETY: getuid and getgid cannot fail.
        unsafe { (libc::getuid(), libc::getgid()) }
    };
    let map = Map {
        data: c.data.clone(),
        owner: format!("{uid}:{gid}"),
        ..placeholder
    };

    let sh: Vec<&str> = blocks
        .iter()
        .filter(|(i, _)| i == "sh")
        .flat_map(|(_, b)| b.lines())
        .collect();
    let mut ran = Vec::new();
    let mut config_written = false;
    for line in sh {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The configuration file goes in once the host's directories exist.
        if !config_written && (line.starts_with("docker") || line.contains(" pgfrost ")) {
            let toml = &blocks
                .iter()
                .find(|(i, _)| i == "toml")
                .expect("a toml block")
                .1;
            // The container reaches PostgreSQL on its default socket and port; here they are
            // the scratch cluster's.
            let text = format!(
                "{}pg-socket-path = '{}'\npg-port = {}\nkdf-memory = 1024\nkdf-iterations = 1\n",
                map.apply(toml),
                c.socket_dir.display(),
                c.port
            );
            std::fs::write(&map.cfg, text).unwrap();
            give_to_postgres(&map.cfg);
            config_written = true;
        }
        let mut cmd = match in_container(line) {
            Some(inner) => {
                let mut cmd = as_postgres("sh");
                cmd.arg("-c").arg(map.apply(inner));
                cmd.env("PGFROST_PASSPHRASE", "the guide's passphrase, long enough");
                cmd
            }
            None => {
                assert!(!line.starts_with("docker"), "unmarked docker line: {line}");
                let mut cmd = std::process::Command::new("sh");
                cmd.arg("-c").arg(map.apply(line));
                cmd
            }
        };
        cmd.current_dir(&root).stdin(std::process::Stdio::null());
        let r = run(cmd);
        assert_eq!(r.code, 0, "docs/docker.md: {line}\n{r:?}");
        ran.push((line.to_string(), r));
    }
    let said = |what: &str| {
        ran.iter()
            .find(|(l, _)| l.contains(what))
            .unwrap_or_else(|| panic!("the guide does not run '{what}'"))
            .1
            .stdout
            .clone()
    };
    for step in [
        "repo-create",
        "key unlock",
        "stanza-create",
        "backup --type full",
        "backup --type incr",
        "pgfrost verify",
        "restore --pg-path",
    ] {
        said(step);
    }
    assert!(said("pgfrost check").contains("archiving works"));
    let info = said("pgfrost info");
    assert!(
        info.contains("full") && info.contains("incr") && info.contains("diff"),
        "{info}"
    );
    assert!(said("--max-backup-age").starts_with("PGFROST OK"));
    assert!(std::fs::metadata(root.join("pgfrost/key/key.json")).is_ok());

    // The restored directory starts, replays the archive and holds the source's rows.
    let want = c.sql("SELECT count(*), sum(abalance) FROM pgbench_accounts");
    c.sql("SELECT pg_switch_wal()");
    wait_archived(&c);
    c.stop();
    let restored = root.join("postgres-restored");
    assert!(restored.join("postgresql.auto.conf").is_file());
    let mut rc = Cluster::from_data_dir(&bin, &restored, &[("archive_mode", "off")]);
    rc.start();
    assert!(wait_promoted(&rc), "{}", rc.log_tail(40));
    assert_eq!(
        rc.sql("SELECT count(*), sum(abalance) FROM pgbench_accounts"),
        want
    );
    rc.stop();
}
