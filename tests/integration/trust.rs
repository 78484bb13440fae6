//! Never damage what is already there: a restore or a backup run as root over directories the
//! cluster's owner controls follows none of the links that owner can plant, and objects written
//! by a command run as root stay usable by the commands postgres runs.

use crate::common;

use common::fixture::*;
use common::pg::*;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A directory of root's, 0755, holding a root-owned file of each kind a planted link could aim
/// at: a 0644 file, a 0600 secret and a directory with a file in it.
struct Victims {
    dir: tempfile::TempDir,
}

impl Victims {
    fn new() -> Victims {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("file"), "root's file\n").unwrap();
        std::fs::set_permissions(dir.path().join("file"), PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::write(dir.path().join("secret"), "ROOT SECRET\n").unwrap();
        std::fs::set_permissions(dir.path().join("secret"), PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::create_dir(dir.path().join("dir")).unwrap();
        std::fs::write(dir.path().join("dir/kept"), "kept\n").unwrap();
        Victims { dir }
    }
    fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }
    /// Contents, modes and owners of everything here.
    fn state(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in snapshot(self.dir.path()) {
            let md = std::fs::symlink_metadata(self.dir.path().join(&k)).unwrap();
            out.push(format!(
                "{k}: {v} mode {:o} owner {}:{}",
                md.mode(),
                md.uid(),
                md.gid()
            ));
        }
        let md = std::fs::metadata(self.dir.path()).unwrap();
        out.push(format!("top mode {:o} owner {}", md.mode(), md.uid()));
        out
    }
}

fn link_as_postgres(target: &Path, at: &Path) {
    std::os::unix::fs::symlink(target, at).unwrap();
    let (uid, gid) = postgres_ids();
    std::os::unix::fs::lchown(at, Some(uid), Some(gid)).unwrap();
}

/// The pgfrost binary run as root (the test runs as root), with the archive's config.
fn as_root(a: &Archive, args: &[&str]) -> Command {
    let mut c = Command::new(&a.bin);
    c.arg("--config")
        .arg(&a.cfg)
        .args(args)
        .env_remove("PGFROST_PASSPHRASE")
        .current_dir(a.dir.path());
    c
}

fn restore_over_planted_links(repo: Repo, mode: &str) {
    assert!(is_root(), "this test is about root and runs as root");
    let bin = PgBin::pg15();
    let a = Archive::new(repo, &[]);
    let c = cluster(&bin, &a);
    c.sql("CREATE TABLE kept AS SELECT generate_series(1, 1000) g");
    backup(&a, &c, "full");
    let db_oid = c.sql("SELECT oid FROM pg_database WHERE datname = 'postgres'");

    // The old data directory, the postgres user's: restored once, then links planted where the
    // backup has a file, a directory, an intermediate directory and a recovery file.
    let v = Victims::new();
    let before = v.state();
    let dir = postgres_dir();
    let data = dir.path().join("data");
    let r = run(a.cmd(&["restore", "--pg-path", data.to_str().unwrap()]));
    assert_eq!(r.code, 0, "{r:?}");
    let plant = |rel: &str, target: &Path| {
        let p = data.join(rel);
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
        link_as_postgres(target, &p);
    };
    plant("PG_VERSION", &v.path("file"));
    plant(&format!("base/{db_oid}"), &v.path("dir"));
    plant("global", &v.path("dir"));
    plant("postgresql.auto.conf", &v.path("secret"));
    plant("backup_label", &v.path("secret"));

    let r = run(as_root(
        &a,
        &[
            "restore",
            mode,
            "--pg-path",
            data.to_str().unwrap(),
            "--type",
            "immediate",
            "--target-action",
            "promote",
            "--archive-mode",
            "off",
        ],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        v.state(),
        before,
        "a restore as root changed what the links pointed to"
    );
    for rel in [
        "PG_VERSION",
        "global",
        "global/pg_control",
        "postgresql.auto.conf",
        "backup_label",
    ] {
        let md = std::fs::symlink_metadata(data.join(rel)).unwrap();
        assert!(!md.file_type().is_symlink(), "{rel} is still a link");
        assert_eq!(md.uid(), postgres_ids().0, "{rel} is not postgres's");
    }
    let md = std::fs::symlink_metadata(data.join(format!("base/{db_oid}"))).unwrap();
    assert!(md.is_dir() && !md.file_type().is_symlink());

    let mut rc = Cluster::from_data_dir_as_is(&bin, &data, &[]);
    rc.start();
    assert!(wait_promoted(&rc), "{}", rc.log_tail(40));
    assert_eq!(rc.sql("SELECT count(*) FROM kept"), "1000");
    rc.stop();
    // Nothing in the repository was lost.
    assert_eq!(a.on(&c, &["verify"]).code, 0);
}

#[test]
fn a_delta_restore_as_root_replaces_planted_links_and_writes_nothing_through_them() {
    restore_over_planted_links(Repo::Local, "--delta=y");
}

#[test]
fn a_forced_restore_as_root_from_s3_replaces_planted_links() {
    let s3 = S3Server::start();
    restore_over_planted_links(Repo::S3(&s3), "--force=y");
}

/// The cluster's owner swaps a file for a link to root's secret, and retargets a linked config
/// file to it, between the walk and the read: the backup reads neither, and a link to a file
/// the owner cannot read is not backed up at all.
fn backup_over_swapped_files(repo: Repo) {
    assert!(is_root(), "this test is about root and runs as root");
    let bin = PgBin::pg15();
    let a = Archive::new(repo, &[]);
    let c = cluster(&bin, &a);
    let v = Victims::new();
    let own = postgres_dir();
    let ident = own.path().join("ident.conf");
    std::fs::copy(c.data.join("pg_ident.conf"), &ident).unwrap();
    give_to_postgres(&ident);
    std::fs::remove_file(c.data.join("pg_ident.conf")).unwrap();
    link_as_postgres(&ident, &c.data.join("pg_ident.conf"));
    std::fs::write(c.data.join("notes.txt"), "the owner's notes\n").unwrap();
    give_to_postgres(&c.data.join("notes.txt"));
    link_as_postgres(&v.path("secret"), &c.data.join("linked-secret.conf"));

    let gate = own.path().join("go");
    let mut cmd = as_root(&a, &["backup", "--type", "full", "--start-fast", "y"]);
    cmd.args(Archive::pg_args(&c))
        .env("PGFROST_TEST_AFTER_WALK", &gate);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(120), || gate
            .with_extension("walked")
            .exists()),
        "the backup never finished its walk"
    );
    std::fs::remove_file(c.data.join("notes.txt")).unwrap();
    link_as_postgres(&v.path("secret"), &c.data.join("notes.txt"));
    std::fs::remove_file(c.data.join("pg_ident.conf")).unwrap();
    link_as_postgres(&v.path("secret"), &c.data.join("pg_ident.conf"));
    std::fs::write(&gate, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for f in ["notes.txt", "pg_ident.conf", "linked-secret.conf"] {
        assert!(
            stderr.contains(f) && stderr.contains("not backed up"),
            "no warning for {f}: {stderr}"
        );
    }

    let dir = postgres_dir();
    let data = dir.path().join("data");
    let r = run(a.cmd(&["restore", "--pg-path", data.to_str().unwrap()]));
    assert_eq!(r.code, 0, "{r:?}");
    for p in files_under(&data) {
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            !bytes.windows(11).any(|w| w == b"ROOT SECRET"),
            "{} holds root's secret",
            p.display()
        );
    }
    for f in ["notes.txt", "pg_ident.conf", "linked-secret.conf"] {
        assert!(!data.join(f).exists(), "{f} was restored");
    }
    assert_eq!(a.on(&c, &["verify"]).code, 0);
}

#[test]
fn a_backup_as_root_never_reads_a_file_swapped_for_a_link_after_the_walk() {
    backup_over_swapped_files(Repo::Local);
}

#[test]
fn a_backup_as_root_to_s3_never_reads_a_file_swapped_for_a_link_after_the_walk() {
    let s3 = S3Server::start();
    backup_over_swapped_files(Repo::S3(&s3));
}

/// Every entry under a local repository: owned by the repository directory's owner, objects
/// 0640, directories 0750.
fn wrongly_owned(repo: &Path) -> Vec<String> {
    let top = std::fs::metadata(repo).unwrap();
    let mut wrong = Vec::new();
    for e in walkdir::WalkDir::new(repo).min_depth(1) {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        let mode = if md.is_dir() { 0o750 } else { 0o640 };
        if (md.uid(), md.gid()) != (top.uid(), top.gid()) || md.mode() & 0o7777 != mode {
            wrong.push(format!(
                "{} {}:{} {:o}",
                e.path().display(),
                md.uid(),
                md.gid(),
                md.mode() & 0o7777
            ));
        }
    }
    wrong
}

#[test]
fn objects_written_as_root_are_the_repositorys_owners_and_postgres_goes_on_using_them() {
    assert!(is_root(), "this test is about root and runs as root");
    let bin = PgBin::pg15();
    let a = Archive::new(Repo::Local, &[]);
    let c = cluster(&bin, &a);
    c.sql("CREATE TABLE kept AS SELECT generate_series(1, 1000) g");
    let repo = a.dir.path().join("repo");
    assert_eq!(std::fs::metadata(&repo).unwrap().uid(), postgres_ids().0);
    for _ in 0..2 {
        let mut cmd = as_root(&a, &["backup", "--type", "full", "--start-fast", "y"]);
        cmd.args(Archive::pg_args(&c));
        let r = run(cmd);
        assert_eq!(r.code, 0, "backup as root: {r:?}");
    }
    let wrong = wrongly_owned(&repo);
    assert!(wrong.is_empty(), "after a backup as root: {wrong:?}");

    // Then postgres: archive-push (PostgreSQL's archive_command), verify, expire.
    switch_segments(&c, 3);
    wait_archived(&c);
    let r = a.on(&c, &["verify"]);
    assert_eq!(r.code, 0, "verify as postgres: {r:?}");
    let r = a.on(&c, &["expire", "--retention-full", "1"]);
    assert_eq!(r.code, 0, "expire as postgres: {r:?}");
    let r = a.on(&c, &["verify"]);
    assert_eq!(r.code, 0, "verify after expire: {r:?}");
    let wrong = wrongly_owned(&repo);
    assert!(wrong.is_empty(), "after postgres's commands: {wrong:?}");
    let dir = postgres_dir();
    let r = restore_promoted(&a, &dir.path().join("data"), &[]);
    assert_eq!(r.code, 0, "restore as postgres: {r:?}");
}

fn two_backups_at_once(repo: Repo) {
    let bin = PgBin::pg15();
    let a = Archive::new(repo, &[]);
    let c = cluster(&bin, &a);
    c.sql("CREATE TABLE kept AS SELECT generate_series(1, 100000) g");
    backup(&a, &c, "full");
    let spawn = || {
        // debug: the "complete" line (the result says it at info) marks when each ended.
        let mut cmd = a.cmd(&[
            "backup",
            "--type",
            "incr",
            "--start-fast",
            "y",
            "--log-level",
            "debug",
        ]);
        cmd.args(Archive::pg_args(&c))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let (one, two) = (spawn(), spawn());
    let (one, two) = (
        one.wait_with_output().unwrap(),
        two.wait_with_output().unwrap(),
    );
    let mut codes = [one.status.code(), two.status.code()];
    codes.sort();
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    // When the line starting with `what` was logged (RFC 3339 UTC, so it orders as text).
    let at = |o: &std::process::Output, what: &str| -> String {
        err(o)
            .lines()
            .find(|l| l.contains(what))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .unwrap_or_else(|| panic!("no '{what}' in {}", err(o)))
    };
    let recorded = if codes == [Some(0), Some(17)] {
        let loser = if one.status.code() == Some(17) {
            &one
        } else {
            &two
        };
        let text = err(loser);
        assert!(
            text.contains("another backup of stanza 'main' is running"),
            "{text}"
        );
        // It refused before any work: it never started a backup on the server.
        assert!(!text.contains("starting"), "{text}");
        2
    } else {
        // A backup that sees a later lease waits for its holder to decide; a fast one may
        // have finished by then, and the waiter goes on after it: never two at once.
        assert_eq!(
            codes,
            [Some(0), Some(0)],
            "one backup runs, the other refuses or waits\n{}\n{}",
            err(&one),
            err(&two)
        );
        let (a1, a2) = (at(&one, "starting"), at(&two, "starting"));
        let (first, second) = if a1 < a2 { (&one, &two) } else { (&two, &one) };
        assert!(
            at(first, " complete: ") < at(second, "starting"),
            "the two backups overlapped\n{}\n{}",
            err(&one),
            err(&two)
        );
        3
    };
    let r = a.on(&c, &["info", "--output", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let n = v.to_string().matches("\"label\"").count();
    assert_eq!(n, recorded, "backups recorded: {}", r.stdout);
    assert_eq!(a.on(&c, &["verify"]).code, 0);
}

#[test]
fn of_two_backups_started_together_one_refuses_at_once() {
    two_backups_at_once(Repo::Local);
}

#[test]
fn of_two_backups_to_s3_started_together_one_refuses_at_once() {
    let s3 = S3Server::start();
    two_backups_at_once(Repo::S3(&s3));
}

/// Issue 13, item 7: a slot whose salt (or check value) is damaged is reported as damage, exit
/// 13 naming the slot, with either passphrase: the salt feeds the key derivation, so without the
/// slot's integrity value it would read as a wrong passphrase. An intact slot's wrong passphrase
/// is still exit 12. Nothing stored changes.
fn damaged_slot_check(repo: Repo) {
    let a = Archive::new(repo, &[]);
    let store = pgfrost::store::Store::open(&a.location, false).unwrap();
    let rt = rt();
    let slots = rt.block_on(store.list("keys")).unwrap();
    assert_eq!(slots.len(), 1);
    let path = slots[0].path.clone();
    let unlock = |pass: &str| {
        let mut c = a.cmd(&["key", "unlock"]);
        c.env("PGFROST_PASSPHRASE", pass);
        run(c)
    };
    // A really wrong passphrase on an intact slot is one.
    assert_eq!(unlock("not it").code, 12);
    let bytes = rt.block_on(store.get(&path)).unwrap();
    let intact: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let flip = |hex: &str| {
        let f = if hex.starts_with('0') { "1" } else { "0" };
        format!("{f}{}", &hex[1..])
    };
    for field in ["salt", "check"] {
        let mut slot = intact.clone();
        if field == "salt" {
            let salt = slot["kdf"]["salt"].as_str().unwrap().to_string();
            slot["kdf"]["salt"] = flip(&salt).into();
        } else {
            let check = slot["check"].as_str().unwrap().to_string();
            slot["check"] = flip(&check).into();
        }
        let damaged = serde_json::to_vec(&slot).unwrap();
        rt.block_on(store.delete(&path)).unwrap();
        rt.block_on(store.put_new(&path, damaged.clone().into()))
            .unwrap();
        for pass in [PASS, "not it"] {
            let r = unlock(pass);
            assert_eq!(r.code, 13, "{field}, {pass}: {r:?}");
            assert!(
                r.stderr.contains(&path)
                    && r.stderr.contains("damaged")
                    && r.stderr.contains("HINT"),
                "{field}, {pass}: {r:?}"
            );
            assert!(!r.stderr.contains("wrong passphrase"), "{r:?}");
            let now = rt.block_on(store.get(&path)).unwrap();
            assert_eq!(
                now.as_ref(),
                &damaged[..],
                "{field}: the slot was rewritten"
            );
        }
    }
}

#[test]
fn a_damaged_key_slot_is_reported_as_damage_naming_the_slot() {
    damaged_slot_check(Repo::Local);
}

#[test]
fn a_damaged_key_slot_on_s3_is_reported_as_damage_naming_the_slot() {
    let s3 = S3Server::start();
    damaged_slot_check(Repo::S3(&s3));
}

/// The README's walk-through for a root operator: `repo-create` as root leaves a repository the
/// postgres user can use (it is given to postgres), `--repo-owner root` keeps it root's, and then
/// postgres's `key unlock` fails before asking for a passphrase, saying whose it is and what to
/// run. Not root, `--repo-owner` is refused.
#[test]
fn repo_create_as_root_gives_the_repository_to_postgres() {
    let dir = postgres_dir();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    give_to_postgres(&home);
    let create = |repo: &Path, extra: &[&str]| {
        let mut c = pgfrost(&home);
        c.arg("--repo")
            .arg(repo)
            .arg("repo-create")
            .args(extra)
            .env("PGFROST_PASSPHRASE", "a long enough passphrase");
        run(c)
    };
    let as_pg = |repo: &Path, args: &[&str], pass: bool| {
        let mut c = as_postgres("env");
        c.arg(format!("HOME={}", home.display()))
            .arg(format!(
                "PGFROST_CONFIG={}",
                home.join("none.toml").display()
            ))
            .arg("PGFROST_KDF_MEMORY=1024");
        if pass {
            c.arg("PGFROST_PASSPHRASE=a long enough passphrase");
        }
        c.arg(bin()).arg("--repo").arg(repo).args(args);
        c.stdin(std::process::Stdio::null());
        run(c)
    };
    let repo = dir.path().join("repo");
    if !is_root() {
        let r = create(&repo, &["--repo-owner", "postgres"]);
        assert_eq!(r.code, 3, "{r:?}");
        assert!(r.stderr.contains("only root"), "{r:?}");
        return;
    }
    let r = create(&repo, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("owned by postgres"), "{r:?}");
    let (uid, _) = postgres_ids();
    for p in [repo.clone(), repo.join("config"), repo.join("keys")] {
        assert_eq!(std::fs::metadata(&p).unwrap().uid(), uid, "{}", p.display());
    }
    let key = home.join("pg-key.json");
    let r = as_pg(
        &repo,
        &["key", "unlock", "--key-file", key.to_str().unwrap()],
        true,
    );
    assert_eq!(r.code, 0, "{r:?}");
    // Root adds a key slot afterwards: postgres can still read every slot.
    let mut c = pgfrost(&home);
    c.arg("--repo")
        .arg(&repo)
        .args(["key", "add", "--key-comment", "second"])
        .env("PGFROST_PASSPHRASE", "a long enough passphrase")
        .env("PGFROST_NEW_PASSPHRASE", "another long passphrase");
    let r = run(c);
    assert_eq!(r.code, 0, "{r:?}");
    let r = as_pg(&repo, &["key", "list"], true);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("second"), "{r:?}");

    // Kept root's: postgres is told why and what to do, before any passphrase is asked for.
    let root_repo = dir.path().join("root-repo");
    let r = create(&root_repo, &["--repo-owner", "root"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::metadata(&root_repo).unwrap().uid(), 0);
    let r = as_pg(&root_repo, &["key", "unlock"], false);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("Permission denied")
            && r.stderr.contains("HINT: the repository directory")
            && r.stderr.contains("belongs to root")
            && r.stderr.contains("runs as postgres")
            && r.stderr.contains("chown -R postgres:")
            && !r.stderr.contains("passphrase"),
        "{r:?}"
    );
    let r = create(&dir.path().join("r3"), &["--repo-owner", "nobody-here"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("no user 'nobody-here'"), "{r:?}");
}
