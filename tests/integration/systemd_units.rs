//! dist/systemd/, the units operators install (docs/backup.md, "Scheduling with systemd"):
//! `systemd-analyze verify` accepts every one without a warning, every timer's calendar parses,
//! no two timers fire within the same hour and exactly one backup runs each night, and every
//! command the services run is accepted by the binary, options and values alike. No PostgreSQL
//! needed; `systemd-analyze` is (Debian package `systemd`, installed by .ci/setup): without it the
//! test fails, it never skips.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where the units expect the binary (docs/backup.md installs it there).
const INSTALLED_BIN: &str = "/usr/local/bin/pgfrost";
/// The instances of pgfrost-backup@.service the timers start.
const BACKUP_TYPES: [&str; 3] = ["full", "diff", "incr"];
/// A fixed start for the calendar checks, so that they see the same nights on every run: it
/// covers 2026-02-01, a Sunday that is also the 1st (the full's day, not the diff's).
const BASE_TIME: &str = "2026-01-01 00:00:00 UTC";

struct Unit {
    name: String,
    text: String,
}

impl Unit {
    /// Values of `key` in `[section]`, in order. The units use no line continuations or quoting
    /// (checked here), so a line is `Key=value`.
    fn values(&self, section: &str, key: &str) -> Vec<String> {
        let mut current = String::new();
        let mut out = Vec::new();
        for line in self.text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            assert!(
                !line.ends_with('\\') && !line.contains('"') && !line.contains('\''),
                "{}: this test does not parse continuations or quoting: {line}",
                self.name
            );
            if let Some(s) = line.strip_prefix('[') {
                current = s.trim_end_matches(']').to_string();
            } else if let Some((k, v)) = line.split_once('=')
                && current == section
                && k.trim() == key
            {
                out.push(v.trim().to_string());
            }
        }
        out
    }

    /// The one value of `key` in `[section]`.
    fn value(&self, section: &str, key: &str) -> String {
        let v = self.values(section, key);
        assert_eq!(v.len(), 1, "{}: [{section}] {key}= {v:?}", self.name);
        v.into_iter().next().unwrap()
    }

    /// The names systemd runs this file as: a template only through its instances.
    fn instances(&self) -> Vec<String> {
        match self.name.split_once("@.") {
            Some((prefix, suffix)) => BACKUP_TYPES
                .iter()
                .map(|t| format!("{prefix}@{t}.{suffix}"))
                .collect(),
            None => vec![self.name.clone()],
        }
    }
}

fn units() -> Vec<Unit> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd");
    let mut units: Vec<Unit> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            Unit {
                name: path.file_name().unwrap().to_str().unwrap().to_string(),
                text: std::fs::read_to_string(&path).unwrap(),
            }
        })
        .collect();
    units.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
    // The set docs/backup.md and docs/drill.md tell operators to install.
    for want in [
        "pgfrost-backup@.service",
        "pgfrost-backup-full.timer",
        "pgfrost-backup-diff.timer",
        "pgfrost-backup-incr.timer",
        "pgfrost-drill.service",
        "pgfrost-drill.timer",
        "pgfrost-verify.service",
        "pgfrost-verify.timer",
    ] {
        assert!(
            names.contains(&want),
            "dist/systemd/ lacks {want}: {names:?}"
        );
    }
    units
}

fn systemd_analyze() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join("systemd-analyze"))
        .find(|p| p.is_file())
        .expect("systemd-analyze is not installed: apt-get install systemd (.ci/setup does)")
}

fn analyze(args: &[&str], cwd: &Path) -> (Output, String) {
    let out = Command::new(systemd_analyze())
        .args(args)
        .current_dir(cwd)
        // Calendars are in local time: UTC makes the elapses the same on every machine.
        .env("TZ", "UTC")
        .env("SYSTEMD_PAGER", "cat")
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn built_bin() -> &'static str {
    let bin = env!("CARGO_BIN_EXE_pgfrost");
    // Put verbatim into ExecStart=, where whitespace would split the command.
    assert!(!bin.contains(char::is_whitespace), "{bin}");
    bin
}

/// A directory other users can enter: the commands run as the units' User= when root.
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Runs `systemd-analyze verify` on the units of `dir` (templates through their instances) and
/// returns what it said about ours.
fn verify_dir(units: &[Unit], dir: &Path) -> (Output, Vec<String>) {
    let paths: Vec<String> = units
        .iter()
        .flat_map(Unit::instances)
        .map(|n| dir.join(n).to_str().unwrap().to_string())
        .collect();
    let mut args = vec!["verify"];
    args.extend(paths.iter().map(String::as_str));
    let (out, text) = analyze(&args, dir);
    let mut ours = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // Every message about our units names the unit or its file, and all are named pgfrost-*.
        // Anything else would be about the host's own units, which are no business of this test.
        if line.contains("pgfrost") {
            ours.push(line.to_string());
        } else {
            eprintln!("systemd-analyze verify, not about our units: {line}");
        }
    }
    (out, ours)
}

#[test]
fn verify_passes_without_a_warning() {
    let units = units();
    let bin = built_bin();
    // `systemd-analyze verify` fails a unit whose ExecStart= binary does not exist, and
    // /usr/local/bin/pgfrost is not installed here: the units are verified in a copy that names
    // the binary under test instead (--root would need the whole tree: flock, the target units).
    // It loads units by the paths given, finding the template next to its instances' paths.
    let dir = open_tempdir();
    for u in &units {
        if u.name.ends_with(".service") {
            for exec in u.values("Service", "ExecStart") {
                assert!(exec.contains(INSTALLED_BIN), "{}: {exec}", u.name);
            }
        }
        std::fs::write(dir.path().join(&u.name), u.text.replace(INSTALLED_BIN, bin)).unwrap();
    }
    let (out, ours) = verify_dir(&units, dir.path());
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{}",
        out.status,
        ours.join("\n")
    );

    // That silence means something: verify merely warns about an unknown key (exit 0), so the
    // check above is on its output. A misspelt key in the template must show up.
    let bad = open_tempdir();
    for u in &units {
        let text = u.text.replace(INSTALLED_BIN, bin);
        let text = if u.name == "pgfrost-backup@.service" {
            text.replace("NoNewPrivileges=", "NoNewPrivilege=")
        } else {
            text
        };
        std::fs::write(bad.path().join(&u.name), text).unwrap();
    }
    let (_, ours) = verify_dir(&units, bad.path());
    assert!(
        ours.iter()
            .any(|l| l.contains("pgfrost-backup@.service") && l.contains("NoNewPrivilege")),
        "verify did not report a misspelt key: {ours:?}"
    );

    // Every timer starts one of our services, catches up on runs missed while the machine was
    // off, spreads its start, and is enabled through timers.target.
    let names: Vec<String> = units.iter().flat_map(Unit::instances).collect();
    for t in units.iter().filter(|u| u.name.ends_with(".timer")) {
        let target = t.value("Timer", "Unit");
        assert!(names.contains(&target), "{}: Unit={target}", t.name);
        assert_eq!(t.value("Timer", "Persistent"), "true", "{}", t.name);
        t.value("Timer", "RandomizedDelaySec");
        assert_eq!(
            t.value("Install", "WantedBy"),
            "timers.target",
            "{}",
            t.name
        );
    }
}

/// (date, hour) of each of the first `n` elapses of `spec` from BASE_TIME, after checking that it
/// normalizes.
fn elapses(spec: &str, n: usize, cwd: &Path) -> Vec<(String, String)> {
    let iterations = format!("--iterations={n}");
    let base = format!("--base-time={BASE_TIME}");
    let (out, text) = analyze(&["calendar", &iterations, &base, spec], cwd);
    assert!(out.status.success(), "calendar {spec}: {text}");
    assert!(
        text.lines()
            .any(|l| l.trim().starts_with("Normalized form:")),
        "{spec}: {text}"
    );
    let times: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Next elapse:") || l.starts_with("Iter. #"))
        .map(|l| {
            // "Iter. #2: Sun 2026-01-11 01:30:00 UTC"
            let t: Vec<&str> = l.split_once(": ").unwrap().1.split_whitespace().collect();
            assert_eq!(t.len(), 4, "{l}");
            assert_eq!(t[3], "UTC", "{l}");
            (t[1].to_string(), t[2][..2].to_string())
        })
        .collect();
    assert_eq!(times.len(), n, "{spec}: {text}");
    times
}

#[test]
fn calendars_never_collide() {
    let units = units();
    let dir = tempfile::tempdir().unwrap();
    // Each timer's next 40 elapses, by the hour they fall in. Two timers in the same hour would
    // start their services together: two backups (the second waits on the lock, but the nightly
    // rotation breaks), or a drill or verify competing with a backup.
    let mut hours: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut backup_nights: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut backup_window_end: Option<String> = None;
    for t in units.iter().filter(|u| u.name.ends_with(".timer")) {
        let spec = t.value("Timer", "OnCalendar");
        let times = elapses(&spec, 40, dir.path());
        for (date, hour) in &times {
            if let Some(other) = hours.insert((date.clone(), hour.clone()), t.name.clone()) {
                panic!("{} and {other} both fire on {date} at {hour}h", t.name);
            }
        }
        let target = t.value("Timer", "Unit");
        if target.starts_with("pgfrost-backup@") {
            for (date, _) in &times {
                backup_nights
                    .entry(date.clone())
                    .or_default()
                    .push(target.clone());
            }
            // Nights are complete up to the earliest last elapse among the backup timers.
            let last = times.last().unwrap().0.clone();
            if backup_window_end.as_ref().is_none_or(|end| last < *end) {
                backup_window_end = Some(last);
            }
        }
    }
    // One backup every night: no night without one, none with two.
    let end = backup_window_end.expect("backup timers");
    let first = BASE_TIME.split_whitespace().next().unwrap();
    // 2026 is not a leap year.
    let month_len = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut nights = 0;
    'days: for (m, len) in month_len.iter().enumerate() {
        for d in 1..=*len {
            let date = format!("2026-{:02}-{d:02}", m + 1);
            if date.as_str() > end.as_str() {
                break 'days;
            }
            if date.as_str() < first {
                continue;
            }
            let got = backup_nights.get(&date).cloned().unwrap_or_default();
            assert_eq!(got.len(), 1, "{date}: {got:?}");
            nights += 1;
        }
    }
    assert!(nights >= 40, "only {nights} nights checked, up to {end}");
    assert_eq!(
        backup_nights["2026-02-01"],
        ["pgfrost-backup@full.service"],
        "a Sunday that is the 1st"
    );
    assert_eq!(backup_nights["2026-02-08"], ["pgfrost-backup@diff.service"]);
    assert_eq!(backup_nights["2026-02-09"], ["pgfrost-backup@incr.service"]);
}

/// The command a service runs, as an argument list, with the instance name for `%i`.
fn exec_start(unit: &Unit, instance: Option<&str>) -> Vec<String> {
    let mut exec = unit.value("Service", "ExecStart");
    if let Some(i) = instance {
        exec = exec.replace("%i", i);
    }
    // Other specifiers would need systemd's expansion, which this test does not emulate.
    assert!(!exec.contains('%'), "{}: {exec}", unit.name);
    exec.split_whitespace().map(str::to_string).collect()
}

/// Runs a service's command as systemd would (as its User= when we are root, with its runtime
/// directory) against a config whose repository does not exist, and returns its exit code and
/// stderr.
fn run_service(unit: &Unit, instance: Option<&str>, scratch: &Path) -> (i32, String) {
    let bin = built_bin();
    let config = scratch.join("pgfrost.toml");
    std::fs::write(
        &config,
        format!(
            "stanza = \"main\"\nrepo = \"{}\"\npg-path = \"{}\"\n",
            scratch.join("absent").display(),
            scratch.display()
        ),
    )
    .unwrap();
    // /run/<RuntimeDirectory>/ is made by systemd for the User=; here a directory of the scratch
    // space stands in for it. A path under /run elsewhere would not exist at run time.
    let runtime = unit.values("Service", "RuntimeDirectory");
    let runtime_dir = scratch.join("run");
    std::fs::create_dir_all(&runtime_dir).unwrap();
    std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let argv: Vec<String> = exec_start(unit, instance)
        .into_iter()
        .map(|a| {
            if a == INSTALLED_BIN {
                return bin.to_string();
            }
            if a.starts_with("/run/") {
                let rd = runtime
                    .first()
                    .unwrap_or_else(|| panic!("{}: {a} without RuntimeDirectory=", unit.name));
                let rest = a
                    .strip_prefix(&format!("/run/{rd}/"))
                    .unwrap_or_else(|| panic!("{}: {a} outside /run/{rd}/", unit.name));
                return runtime_dir.join(rest).to_str().unwrap().to_string();
            }
            a
        })
        .collect();
    assert!(argv.iter().any(|a| a == bin), "{}: {argv:?}", unit.name);
    let user = unit.value("Service", "User");
    // SAFETY: geteuid has no preconditions.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        // drill refuses to run as root, as PostgreSQL does: run as the unit does.
        let mut c = Command::new("runuser");
        c.args(["-u", &user, "--"]).args(&argv);
        c
    } else {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("PGFROST_") || k.starts_with("AWS_") || k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .env("PGFROST_CONFIG", &config)
        .env("HOME", scratch)
        .current_dir("/")
        .output()
        .expect("run the service's command");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn every_command_is_accepted() {
    let units = units();
    // pgfrost checks every option and value before it does any work (docs/cli.md), and opens the
    // repository next: "no repository" (exit 10) means the binary accepted the whole command line,
    // and the lock wrapper passed it on and returned its exit code.
    for u in units.iter().filter(|u| u.name.ends_with(".service")) {
        assert_eq!(u.value("Service", "Type"), "oneshot", "{}", u.name);
        let instances: Vec<Option<&str>> = if u.name.contains("@.") {
            BACKUP_TYPES.iter().map(|t| Some(*t)).collect()
        } else {
            vec![None]
        };
        for i in instances {
            let scratch = open_tempdir();
            let (code, stderr) = run_service(u, i, scratch.path());
            assert!(
                code == 10 && stderr.contains("no repository at"),
                "{} {i:?}: exit {code}\n{stderr}",
                u.name
            );
        }
    }
    // And a bad instance name is not accepted: exit 3, a configuration error.
    let template = units
        .iter()
        .find(|u| u.name == "pgfrost-backup@.service")
        .unwrap();
    let scratch = open_tempdir();
    let (code, stderr) = run_service(template, Some("weekly"), scratch.path());
    assert!(
        code == 3 && stderr.contains("weekly"),
        "exit {code}\n{stderr}"
    );
}
