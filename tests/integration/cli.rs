//! The binary as operators and scripts use it: exit codes, messages, options, key management.

use crate::common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn repo_create(home: &Path, repo: &Path) -> Run {
    let mut c = pgfrost(home);
    c.args(["repo-create", "--repo"])
        .arg(repo)
        .env("PGFROST_PASSPHRASE", PASS);
    run(c)
}

#[test]
fn create_exists_missing_wrong_passphrase() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("repo");
    let r = repo_create(home.path(), &repo);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("created repository"), "{r:?}");
    let config_before = std::fs::read(repo.join("config")).unwrap();

    // Already exists: its own exit code, and nothing is touched.
    let r = repo_create(home.path(), &repo);
    assert_eq!(r.code, 11, "{r:?}");
    assert!(
        r.stderr.contains("ERROR: a repository already exists at"),
        "{r:?}"
    );
    assert!(r.stderr.contains("HINT:"), "{r:?}");
    assert_eq!(std::fs::read(repo.join("config")).unwrap(), config_before);
    assert_eq!(std::fs::read_dir(repo.join("keys")).unwrap().count(), 1);

    // Missing repository.
    let mut c = pgfrost(home.path());
    c.args(["dev", "check", "--stanza", "main", "--repo"])
        .arg(home.path().join("nope"))
        .env("PGFROST_PASSPHRASE", PASS);
    let r = run(c);
    assert_eq!(r.code, 10, "{r:?}");
    assert!(r.stderr.contains("no repository at"), "{r:?}");
    // A directory that exists but holds no repository.
    let mut c = pgfrost(home.path());
    c.args(["dev", "check", "--stanza", "main", "--repo"])
        .arg(home.path())
        .env("PGFROST_PASSPHRASE", PASS);
    assert_eq!(run(c).code, 10);

    // Wrong passphrase: one ERROR line, a hint, exit 12.
    let mut c = pgfrost(home.path());
    c.args(["dev", "check", "--stanza", "main", "--repo"])
        .arg(&repo)
        .env("PGFROST_PASSPHRASE", "not it");
    let r = run(c);
    assert_eq!(r.code, 12, "{r:?}");
    let errors: Vec<_> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("ERROR:"))
        .collect();
    assert_eq!(errors.len(), 1, "{r:?}");
    assert!(errors[0].contains("wrong passphrase"), "{r:?}");
    assert!(r.stderr.contains("HINT:"), "{r:?}");

    // No passphrase source and no terminal: a clear config error, not a hang.
    let mut c = pgfrost(home.path());
    c.args(["dev", "check", "--stanza", "main", "--repo"])
        .arg(&repo);
    let r = run(c);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("PGFROST_PASSPHRASE"), "{r:?}");

    // Passphrase from a file (trailing newline ignored).
    let pf = home.path().join("pass");
    std::fs::write(&pf, format!("{PASS}\n")).unwrap();
    let mut c = pgfrost(home.path());
    c.args(["dev", "check", "--stanza", "main", "--repo"])
        .arg(&repo)
        .arg("--passphrase-file")
        .arg(&pf);
    let r = run(c);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn key_slots_add_change_remove() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("repo");
    assert_eq!(repo_create(home.path(), &repo).code, 0);
    let with = |pw: &str, args: &[&str]| {
        let mut c = pgfrost(home.path());
        c.args(args)
            .arg("--repo")
            .arg(&repo)
            .env("PGFROST_PASSPHRASE", pw);
        c
    };
    let list = || {
        let r = run(with(PASS, &["key", "list", "--output", "json"]));
        assert_eq!(r.code, 0, "{r:?}");
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        v["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let first = list();
    assert_eq!(first.len(), 1);

    // Add a second passphrase; both open the repository.
    let mut c = with(PASS, &["key", "add", "--key-comment", "dr site"]);
    c.env("PGFROST_NEW_PASSPHRASE", "second passphrase here");
    let r = run(c);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(list().len(), 2);
    let r = run(with(
        "second passphrase here",
        &["dev", "check", "--stanza", "main"],
    ));
    assert_eq!(r.code, 0, "{r:?}");

    // Change the first passphrase: old one stops working, new one works, data untouched.
    let data = home.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), b"some table data ".repeat(3000)).unwrap();
    let r = run(with(
        PASS,
        &["dev", "put-dir", "--stanza", "main", data.to_str().unwrap()],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    let catalog = home.path().join("catalog.json");
    std::fs::write(&catalog, &r.stdout).unwrap();
    let packs_before = files_under(&repo.join("main"));
    let mut c = with(PASS, &["key", "change"]);
    c.env("PGFROST_NEW_PASSPHRASE", "third passphrase here");
    let r = run(c);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        files_under(&repo.join("main")),
        packs_before,
        "a passphrase change touched data"
    );
    let r = run(with(PASS, &["dev", "check", "--stanza", "main"]));
    assert_eq!(r.code, 12, "old passphrase still works: {r:?}");
    let out = home.path().join("out");
    let r = run(with(
        "third passphrase here",
        &[
            "dev",
            "get-dir",
            "--stanza",
            "main",
            catalog.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        std::fs::read(out.join("f")).unwrap(),
        std::fs::read(data.join("f")).unwrap()
    );

    // Remove: unknown slot, then a real one, then refuse the last one.
    let r = run(with(
        "third passphrase here",
        &["key", "remove", "0123456789abcdef0123456789abcdef"],
    ));
    assert_eq!(r.code, 14, "{r:?}");
    let slots = {
        let r = run(with("x", &["key", "list", "--output", "json"]));
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        v["slots"].as_array().unwrap().clone()
    };
    let dr = slots.iter().find(|s| s["comment"] == "dr site").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = slots.iter().find(|s| s["comment"] != "dr site").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = run(with("third passphrase here", &["key", "remove", &dr]));
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(with("third passphrase here", &["key", "remove", &other]));
    assert_eq!(r.code, 17, "{r:?}");
    assert!(r.stderr.contains("only key slot"), "{r:?}");
    assert!(repo.join("keys").join(&other).exists());
}

#[test]
fn key_file_unlock_and_lock() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("repo");
    assert_eq!(repo_create(home.path(), &repo).code, 0);
    let mut c = pgfrost(home.path());
    c.args(["key", "unlock", "--output", "json", "--repo"])
        .arg(&repo)
        .env("PGFROST_PASSPHRASE", PASS);
    let r = run(c);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let kf = Path::new(v["key_file"].as_str().unwrap()).to_path_buf();
    assert!(
        kf.starts_with(home.path().join(".config/pgfrost/keys")),
        "{kf:?}"
    );
    assert_eq!(
        std::fs::metadata(&kf).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // No passphrase anywhere: the key file opens the repository.
    let check = || {
        let mut c = pgfrost(home.path());
        c.args(["dev", "check", "--stanza", "main", "--repo"])
            .arg(&repo);
        run(c)
    };
    let r = check();
    assert_eq!(r.code, 0, "{r:?}");

    // A key file others can read is refused, with the fix in the hint.
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = check();
    assert_eq!(r.code, 16, "{r:?}");
    assert!(r.stderr.contains("HINT: chmod 600"), "{r:?}");
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A key file of another repository is refused, naming both.
    let repo2 = home.path().join("repo2");
    assert_eq!(repo_create(home.path(), &repo2).code, 0);
    let mut c = pgfrost(home.path());
    c.args(["dev", "check", "--stanza", "main", "--repo"])
        .arg(&repo2)
        .arg("--key-file")
        .arg(&kf);
    let r = run(c);
    assert_eq!(r.code, 16, "{r:?}");
    assert!(r.stderr.contains("belongs to repository"), "{r:?}");

    // lock removes it; then the passphrase is needed again.
    let mut c = pgfrost(home.path());
    c.args(["key", "lock", "--repo"]).arg(&repo);
    assert_eq!(run(c).code, 0);
    assert!(!kf.exists());
    assert_eq!(check().code, 3);
}

#[test]
fn options_from_file_env_and_flags() {
    let home = tempfile::tempdir().unwrap();
    let (a, b, c_) = (
        home.path().join("a"),
        home.path().join("b"),
        home.path().join("c"),
    );
    for r in [&a, &b, &c_] {
        assert_eq!(repo_create(home.path(), r).code, 0);
    }
    let cfg = home.path().join("pgfrost.toml");
    std::fs::write(
        &cfg,
        format!("[global]\nrepo = '{}'\nlog-level = 'warn'\n", a.display()),
    )
    .unwrap();
    let repo_id = |r: &Path| {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(r.join("config")).unwrap()).unwrap();
        v["repo_id"].as_str().unwrap().to_string()
    };
    let unlock = |extra: &[(&str, &Path)], env: &[(&str, &Path)]| {
        let mut c = pgfrost(home.path());
        c.args(["key", "unlock", "--output", "json"])
            .env("PGFROST_PASSPHRASE", PASS)
            .env("PGFROST_CONFIG", &cfg);
        for (k, v) in extra {
            c.arg(k).arg(v);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let r = run(c);
        assert_eq!(r.code, 0, "{r:?}");
        r.stdout
    };
    // The key file is named after the repository id, which tells us which repository was used.
    assert!(unlock(&[], &[]).contains(&repo_id(&a)));
    assert!(unlock(&[], &[("PGFROST_REPO", &b)]).contains(&repo_id(&b)));
    assert!(unlock(&[("--repo", &c_)], &[("PGFROST_REPO", &b)]).contains(&repo_id(&c_)));
    // --config on the command line beats PGFROST_CONFIG.
    let cfg2 = home.path().join("other.toml");
    std::fs::write(&cfg2, format!("repo = '{}'\n", b.display())).unwrap();
    assert!(unlock(&[("--config", &cfg2)], &[]).contains(&repo_id(&b)));

    // Bad values name where they came from.
    let mut c = pgfrost(home.path());
    c.args(["key", "list", "--repo"])
        .arg(&a)
        .env("PGFROST_PROCESS_MAX", "lots");
    let r = run(c);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("PGFROST_PROCESS_MAX"), "{r:?}");
    std::fs::write(&cfg, "[global]\nrepo-path = '/x'\n").unwrap();
    let mut c = pgfrost(home.path());
    c.args(["key", "list"]).env("PGFROST_CONFIG", &cfg);
    let r = run(c);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("unknown option 'repo-path'"), "{r:?}");
    let mut c = pgfrost(home.path());
    c.args(["key", "list"]);
    let r = run(c);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("option repo is required") && r.stderr.contains("PGFROST_REPO"),
        "{r:?}"
    );
}

/// docs/cli.md is the reference for options: every option the code knows is in it.
#[test]
fn every_option_is_documented() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md")).unwrap();
    let missing: Vec<&str> = pgfrost::config::OPTIONS
        .iter()
        .map(|o| o.name)
        .filter(|n| !doc.contains(&format!("`{n}`")) && !doc.contains(&format!("--{n}")))
        .collect();
    assert!(missing.is_empty(), "docs/cli.md lacks {missing:?}");
}

#[test]
fn help_describes_options() {
    let home = tempfile::tempdir().unwrap();
    let mut c = pgfrost(home.path());
    c.arg("help");
    let r = run(c);
    assert_eq!(r.code, 0, "{r:?}");
    for o in pgfrost::config::OPTIONS
        .iter()
        .filter(|o| o.commands.is_empty())
    {
        assert!(
            r.stdout.contains(&format!("--{}", o.name)),
            "help lacks --{}:\n{}",
            o.name,
            r.stdout
        );
    }
    assert!(
        r.stdout.contains("repo-create") && r.stdout.contains("key"),
        "{r:?}"
    );
    let mut c = pgfrost(home.path());
    c.args(["key", "add", "--help"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("--new-passphrase-file") && r.stdout.contains("PGFROST_NEW_PASSPHRASE"),
        "{r:?}"
    );
    // No passphrase option exists on the command line at all.
    assert!(!r.stdout.contains("--passphrase "), "{r:?}");
}

#[test]
fn s3_repository_from_the_cli() {
    let server = S3Server::start();
    let home = tempfile::tempdir().unwrap();
    let cmd = |args: &[&str]| {
        let mut c = pgfrost(home.path());
        c.args(args).env("PGFROST_PASSPHRASE", PASS);
        server.args(&mut c, "cli/repo");
        c
    };
    let r = run(cmd(&["repo-create"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(run(cmd(&["repo-create"])).code, 11);
    let data = home.path().join("data");
    std::fs::create_dir_all(data.join("base/1")).unwrap();
    for i in 0..5 {
        std::fs::write(
            data.join(format!("base/1/{i}")),
            format!("row {i};").repeat(5000),
        )
        .unwrap();
    }
    let r = run(cmd(&[
        "dev",
        "put-dir",
        "--stanza",
        "main",
        data.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    let catalog = home.path().join("catalog.json");
    std::fs::write(&catalog, &r.stdout).unwrap();
    let out = home.path().join("out");
    let r = run(cmd(&[
        "dev",
        "get-dir",
        "--stanza",
        "main",
        catalog.to_str().unwrap(),
        out.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    for i in 0..5 {
        let p = format!("base/1/{i}");
        assert_eq!(
            std::fs::read(out.join(&p)).unwrap(),
            std::fs::read(data.join(&p)).unwrap()
        );
    }
    assert!(server.bucket_dir().join("cli/repo/config").is_file());
}

/// Bad restore options fail with exit 3 and a hint before anything is written: the target
/// directory is not even created, and the repository is not opened.
#[test]
fn bad_restore_options_fail_before_any_write() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("repo");
    assert_eq!(repo_create(home.path(), &repo).code, 0);
    let listing = || {
        let mut v: Vec<_> = files_under(&repo);
        v.sort();
        v
    };
    let before = listing();
    let target = home.path().join("new/data");
    for (flag, value, names) in [
        ("--archive-mode", "on", "archive-mode"),
        ("--target-action", "explode", "target-action"),
        ("--link-map", "pg_wal", "link-map"),
        ("--link-map", "pg_wal=relative", "link-map"),
        ("--link-map", "/abs=/tmp/x", "link-map"),
        ("--link-map", "pg_wal=/a,pg_wal=/b", "link-map"),
        ("--tablespace-map", "spc=/tmp/x", "tablespace-map"),
        ("--delta", "maybe", "delta"),
    ] {
        let mut c = pgfrost(home.path());
        c.args(["restore", "--stanza", "main", "--repo"])
            .arg(&repo)
            .arg("--pg-path")
            .arg(&target)
            .args([flag, value])
            .env("PGFROST_PASSPHRASE", PASS);
        let r = run(c);
        assert_eq!(r.code, 3, "{flag} {value}: {r:?}");
        assert!(r.stderr.contains(names), "{flag} {value}: {r:?}");
        assert!(!target.parent().unwrap().exists(), "{flag} {value}: wrote");
    }
    // The same from the environment names it.
    let mut c = pgfrost(home.path());
    c.args(["restore", "--stanza", "main", "--repo"])
        .arg(&repo)
        .arg("--pg-path")
        .arg(&target)
        .env("PGFROST_ARCHIVE_MODE", "sometimes");
    let r = run(c);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("PGFROST_ARCHIVE_MODE"), "{r:?}");
    assert_eq!(listing(), before);
}

/// Every command checks every option it could read before it does any work (issue 13, item 8):
/// a bad value anywhere exits 3 naming the option, with a HINT, before the repository, the
/// cluster or the target is touched. The stanza does not exist and nothing listens on the
/// port: a command that got past its options would fail otherwise (14, or a connection error).
#[test]
fn bad_options_fail_before_any_work_for_every_command() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("repo");
    assert_eq!(repo_create(home.path(), &repo).code, 0);
    let listing = || {
        let mut v: Vec<_> = files_under(&repo)
            .into_iter()
            .map(|p| (std::fs::read(&p).unwrap(), p))
            .collect();
        v.sort();
        v
    };
    let before = listing();
    let target = home.path().join("new/data");
    let cases: &[(&[&str], &str)] = &[
        (
            &["backup", "--fail-on-page-error", "maybe"],
            "fail-on-page-error",
        ),
        (&["backup", "--wal-summary", "sometimes"], "wal-summary"),
        (&["backup", "--start-fast", "2"], "start-fast"),
        (
            &["backup", "--expire-auto", "y", "--retention-full", "two"],
            "retention-full",
        ),
        (&["backup", "--retention-diff", "0"], "retention-diff"),
        (&["backup", "--pg-port", "99999"], "pg-port"),
        (&["check", "--pg-port", "port"], "pg-port"),
        (
            &["stanza-create", "--repo-s3-endpoint", "ftp://example"],
            "repo-s3-endpoint",
        ),
        (&["expire", "--retention-archive=-1"], "retention-archive"),
        (&["expire", "--set", "yesterday"], "set"),
        (&["verify", "--retention-full", "10000"], "retention-full"),
        (&["info", "--output", "yaml"], "output"),
        (
            &[
                "archive-get",
                "--archive-get-queue-max",
                "lots",
                "000000010000000000000001",
                "/tmp/x",
            ],
            "archive-get-queue-max",
        ),
        (
            &[
                "archive-push",
                "--archive-async",
                "often",
                "/nonexistent/000000010000000000000001",
            ],
            "archive-async",
        ),
        (&["drill", "--set", "20261301-250000X"], "set"),
        (&["restore", "--set", "latest"], "set"),
        (&["restore", "--force", "please"], "force"),
    ];
    for (args, name) in cases {
        let mut c = pgfrost(home.path());
        c.args(*args)
            .env("PGFROST_STANZA", "main")
            .env("PGFROST_REPO", &repo)
            .env("PGFROST_PG_PORT", "1")
            .env("PGFROST_PG_PATH", &target)
            .env("PGFROST_PASSPHRASE", PASS);
        let r = run(c);
        // archive-get is restore_command: any failure is 128 + its code, so that PostgreSQL
        // stops recovery instead of taking it for the end of the archive.
        let want = if args[0] == "archive-get" { 128 + 3 } else { 3 };
        assert_eq!(r.code, want, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(name) && r.stderr.contains("HINT"),
            "{args:?}: {r:?}"
        );
        assert!(!target.parent().unwrap().exists(), "{args:?}: wrote");
        assert!(listing() == before, "{args:?} changed the repository");
    }
    // A bad repo location is refused by every command before anything else.
    let mut c = pgfrost(home.path());
    c.args(["info", "--repo", "relative/repo"]);
    let r = run(c);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("option repo") && r.stderr.contains("HINT"),
        "{r:?}"
    );
}

/// A damaged key slot is reported as damage (exit 13) naming the slot, never as a wrong
/// passphrase (exit 12), even where the damage (to the salt) changes the key derived from the
/// passphrase; and reporting it writes nothing.
#[test]
fn damaged_key_slot_is_not_a_wrong_passphrase() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("repo");
    assert_eq!(repo_create(home.path(), &repo).code, 0);
    let with = |pw: &str, args: &[&str]| {
        let mut c = pgfrost(home.path());
        c.args(args)
            .arg("--repo")
            .arg(&repo)
            .env("PGFROST_PASSPHRASE", pw);
        run(c)
    };
    let slot_ids = || {
        let mut v: Vec<String> = std::fs::read_dir(repo.join("keys"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let first = slot_ids().pop().unwrap();
    let first_path = repo.join("keys").join(&first);
    let intact = std::fs::read(&first_path).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&intact).unwrap();
    assert!(
        doc["integrity"].is_string(),
        "new slot without integrity: {doc}"
    );
    // One hex digit of the salt changed, the document otherwise as written.
    let damage = |path: &Path| {
        let mut doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let salt = doc["kdf"]["salt"].as_str().unwrap().to_string();
        let c = if salt.starts_with('0') { "1" } else { "0" };
        doc["kdf"]["salt"] = format!("{c}{}", &salt[1..]).into();
        let mut b = serde_json::to_vec_pretty(&doc).unwrap();
        b.push(b'\n');
        std::fs::write(path, b).unwrap();
    };
    let is_damage = |r: &Run, slot: &str| {
        assert_eq!(r.code, 13, "{r:?}");
        assert!(r.stderr.contains(&format!("keys/{slot}")), "{r:?}");
        assert!(r.stderr.contains("is damaged"), "{r:?}");
        assert!(r.stderr.contains("HINT:"), "{r:?}");
        assert!(!r.stderr.contains("wrong passphrase"), "{r:?}");
    };

    // Intact: a wrong passphrase is still a wrong passphrase.
    let r = with("not it", &["info"]);
    assert_eq!(r.code, 12, "{r:?}");
    assert!(r.stderr.contains("wrong passphrase"), "{r:?}");
    assert_eq!(with(PASS, &["info"]).code, 0);

    damage(&first_path);
    let before = snapshot(&repo);
    is_damage(&with(PASS, &["info"]), &first);
    is_damage(&with("not it", &["info"]), &first);
    let mut c = pgfrost(home.path());
    c.args(["key", "add", "--repo"])
        .arg(&repo)
        .env("PGFROST_PASSPHRASE", PASS)
        .env("PGFROST_NEW_PASSPHRASE", "another passphrase");
    is_damage(&run(c), &first);
    let after = snapshot(&repo);
    assert_eq!(before, after, "{:?}", snapshot_diff(&before, &after));

    // With a second slot: its passphrase still opens the repository (the damaged slot is named in
    // a warning); any other passphrase hears about the damage, not about a typo.
    std::fs::write(&first_path, &intact).unwrap();
    let mut c = pgfrost(home.path());
    c.args(["key", "add", "--repo"])
        .arg(&repo)
        .env("PGFROST_PASSPHRASE", PASS)
        .env("PGFROST_NEW_PASSPHRASE", "second passphrase");
    assert_eq!(run(c).code, 0);
    assert_eq!(slot_ids().len(), 2);
    damage(&first_path);
    let before = snapshot(&repo);
    let r = with("second passphrase", &["info"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&format!("keys/{first}")), "{r:?}");
    let r = with(PASS, &["info"]);
    is_damage(&r, &first);
    assert!(
        r.stderr.contains("none of the 1 intact key slot(s)"),
        "{r:?}"
    );
    is_damage(&with("not it", &["info"]), &first);
    let after = snapshot(&repo);
    assert_eq!(before, after, "{:?}", snapshot_diff(&before, &after));

    // verify (which opens with the intact slot, and takes a lease) lists the damaged slot.
    let r = with("second passphrase", &["verify", "--stanza", "main"]);
    assert_eq!(r.code, 22, "{r:?}");
    assert!(
        r.stdout.contains(&format!(
            "PROBLEM keys/{first}: key slot 'keys/{first}' is damaged"
        )),
        "{r:?}"
    );
}

/// A value of the option's kind that no command may accept. None for free text (names, hosts,
/// paths whose existence is the command's business), which the table below must list.
fn invalid_value(o: &pgfrost::config::OptDef) -> Option<&'static str> {
    Some(match (o.name, o.value) {
        ("stanza", _) => "not a name!",
        ("repo", _) => "relative/repo",
        (_, "URL") => "ftp://example",
        ("set", _) => "yesterday",
        ("repo-owner", _) => "no-such-user-pgfrost",
        ("target-timeline", _) => "sideways",
        (_, "y|n") => "maybe",
        (_, "N" | "PORT" | "KIB" | "SECONDS") => "many",
        (_, "SIZE") => "lots",
        (_, "DURATION") => "soon",
        (_, "OID=DIR" | "PATH=DIR") => "nonsense",
        (_, v) if v.contains('|') => "bogus",
        (_, "LEVEL" | "FORMAT" | "STYLE" | "ACTION" | "TYPE") => "bogus",
        _ => return None,
    })
}

/// Free-text options: any value is one the command must try (a host, a user, a path).
const FREE_TEXT: &[&str] = &[
    "repo-s3-region",
    "repo-s3-ca-file",
    "repo-s3-key",
    "repo-s3-key-secret",
    "repo-gcs-key-file",
    "repo-gcs-token",
    "repo-azure-account",
    "repo-azure-key",
    "repo-azure-sas-token",
    "index-path",
    "pg-path",
    "pg-host",
    "pg-socket-path",
    "pg-user",
    "pg-database",
    "passphrase-file",
    "key-file",
    "new-passphrase-file",
    "key-comment",
    "spool-path",
    "output-file",
    "pg-bin",
    "drill-path",
    // Checked against --type: the cases below.
    "target",
];

/// Every command a user can run, with the arguments it needs to get as far as its options.
fn every_command(home: &Path) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let dest = home.join("wal-dest").display().to_string();
    vec![
        s(&["repo-create"]),
        s(&["stanza-create"]),
        s(&["stanza-upgrade"]),
        s(&["archive-push", "/nonexistent/000000010000000000000001"]),
        s(&["archive-get", "000000010000000000000001", &dest]),
        s(&["check"]),
        s(&["backup"]),
        s(&["restore"]),
        s(&["drill"]),
        s(&["expire"]),
        s(&["info"]),
        s(&["verify"]),
        s(&["key", "list"]),
        s(&["key", "add"]),
        s(&["key", "change"]),
        s(&["key", "remove", "1"]),
        s(&["key", "unlock"]),
        s(&["key", "lock"]),
    ]
}

/// Every option with a checkable value, on every command that takes it, given a bad value: the
/// command exits 3 (archive-get 131) naming the option, with a HINT, and nothing is written: no
/// lease or object in the repository, no file in the home directory (key files, spool), no
/// restore target. Generated from the option table, so a new option must be placed in it.
#[test]
fn every_invalid_option_value_fails_before_any_work_on_every_command() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("repo");
    assert_eq!(repo_create(home.path(), &repo).code, 0);
    let listing = || {
        let mut v: Vec<_> = files_under(home.path())
            .into_iter()
            .map(|p| (std::fs::read(&p).unwrap(), p))
            .collect();
        v.sort();
        v
    };
    let before = listing();
    let target = home.path().join("new/data");
    let mut cases: Vec<(Vec<String>, String, &str)> = Vec::new();
    for o in pgfrost::config::OPTIONS {
        let Some(bad) = invalid_value(o) else {
            assert!(
                FREE_TEXT.contains(&o.name),
                "option {} ({}) has no invalid value here and is not listed as free text",
                o.name,
                o.value
            );
            continue;
        };
        for cmd in every_command(home.path()) {
            let applies = o.commands.is_empty() || o.commands.contains(&cmd[0].as_str());
            if applies {
                let mut args = cmd.clone();
                args.insert(
                    cmd.len().min(if cmd[0] == "key" { 2 } else { 1 }),
                    format!("--{}={bad}", o.name),
                );
                cases.push((args, o.name.to_string(), o.name));
            }
        }
    }
    // A target that does not fit its type.
    for cmd in ["restore", "drill"] {
        for (ty, target) in [("time", "noon-ish"), ("xid", "abc"), ("lsn", "0/XYZ")] {
            cases.push((
                vec![
                    cmd.into(),
                    format!("--type={ty}"),
                    format!("--target={target}"),
                ],
                "target".into(),
                "target",
            ));
        }
    }
    assert!(cases.len() > 150, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for (args, name, _) in &cases {
        let mut c = pgfrost(home.path());
        c.args(args)
            .env("PGFROST_STANZA", "main")
            .env("PGFROST_REPO", &repo)
            .env("PGFROST_PG_PORT", "1")
            .env("PGFROST_PG_PATH", &target)
            .env("PGFROST_SPOOL_PATH", home.path().join("spool"))
            .env("PGFROST_PASSPHRASE", PASS)
            .env("PGFROST_NEW_PASSPHRASE", "another passphrase entirely");
        let r = run(c);
        let want = if args[0] == "archive-get" { 128 + 3 } else { 3 };
        if r.code != want || !r.stderr.contains(name.as_str()) || !r.stderr.contains("HINT") {
            failures.push(format!("{args:?}: {r:?}"));
        } else if target.parent().unwrap().exists() {
            failures.push(format!("{args:?}: created the restore target"));
        } else if listing() != before {
            failures.push(format!(
                "{args:?}: wrote under the home directory or repository"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
