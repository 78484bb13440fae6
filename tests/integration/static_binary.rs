//! The static binary (dist/build-static.sh, the README's command) is what container users install:
//! no dynamic loader, under 20 MB, and it must reach an S3 endpoint by host name over TLS from
//! inside a chroot that holds nothing but the binary, /etc/hosts, /etc/resolv.conf and a CA file,
//! which is all an Alpine or distroless image is guaranteed to give it. The endpoint's name comes
//! once from /etc/hosts and once from a DNS server (a small one this test runs on 127.0.0.1:53),
//! because a static glibc can do neither by itself (src/net.rs).
//!
//! Needs root (chroot, port 53), openssl and socat (Debian packages; .ci/setup installs them).
//! PGFROST_STATIC_BIN names an already built binary (.ci/run builds it once); else the test builds
//! it into target/static.

use crate::common::*;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const MAX_SIZE: u64 = 20_000_000;

fn static_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PGFROST_STATIC_BIN") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A target directory of its own: the one `cargo test` is using stays locked while it runs.
    let out = Command::new("bash")
        .arg(root.join("dist/build-static.sh"))
        .env("CARGO_TARGET_DIR", root.join("target/static"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run dist/build-static.sh");
    assert!(out.status.success(), "dist/build-static.sh failed");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    root.join(path)
}

/// Program header types of an ELF64 little-endian file.
fn program_headers(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64");
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count)
        .map(|i| {
            let o = phoff + i * size;
            u32::from_le_bytes(elf[o..o + 4].try_into().unwrap())
        })
        .collect()
}

fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is not installed; install the Debian package {package} (bash .ci/setup does)"
    );
}

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .args(["-ec", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for both test names, signed by it.
fn certificates(dir: &Path) {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:s3.pgfrost.test,DNS:dns-only.pgfrost.test\n\
         basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sh(
        dir,
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
           -keyout ca.key -out ca.pem -subj /CN=pgfrost-test-ca \
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
           -keyout server.key -out server.csr -subj /CN=s3.pgfrost.test 2>/dev/null
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
           -extfile ext.cnf -out server.pem 2>/dev/null",
    );
}

/// TLS in front of s3s-fs (which speaks only HTTP).
struct Tls(std::process::Child);

impl Tls {
    fn start(dir: &Path, backend: &str) -> (Tls, u16) {
        let port = free_port();
        let backend = backend.trim_start_matches("http://");
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            ))
            .arg(format!("TCP:{backend}"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        (Tls(child), port)
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A DNS server on 127.0.0.1:53 that answers A queries for `name` with 127.0.0.1, and anything
/// else with no records. Counts the queries for `name` it answered.
fn dns_server(name: &'static str, stop: Arc<AtomicBool>, hits: Arc<AtomicUsize>) {
    let sock = UdpSocket::bind("127.0.0.1:53").unwrap_or_else(|e| {
        panic!("cannot bind 127.0.0.1:53 for the test's DNS server (needs root, and the port free): {e}")
    });
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let q = &buf[..n];
            if n < 12 {
                continue;
            }
            // The question: labels up to a zero byte, then type and class.
            let mut o = 12;
            let mut labels = Vec::new();
            while o < n && q[o] != 0 {
                let l = q[o] as usize;
                labels.push(String::from_utf8_lossy(&q[o + 1..(o + 1 + l).min(n)]).to_lowercase());
                o += 1 + l;
            }
            let end = o + 5;
            if end > n {
                continue;
            }
            let qtype = u16::from_be_bytes([q[o + 1], q[o + 2]]);
            let ours = labels.join(".") == name && qtype == 1;
            let mut r = Vec::with_capacity(64);
            r.extend_from_slice(&q[..2]);
            r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, ours as u8, 0, 0, 0, 0]);
            r.extend_from_slice(&q[12..end]);
            if ours {
                r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
                hits.fetch_add(1, Ordering::Relaxed);
            }
            let _ = sock.send_to(&r, from);
        }
    });
}

#[test]
fn the_static_binary_reaches_s3_by_name_over_tls_from_an_empty_chroot() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test chroots and binds port 53: run it as root (CI does)"
    );
    need("openssl", "openssl");
    need("socat", "socat");
    let bin = static_binary();

    let elf = std::fs::read(&bin).unwrap();
    let size = elf.len() as u64;
    assert!(
        size < MAX_SIZE,
        "{}: {size} bytes, over {MAX_SIZE}",
        bin.display()
    );
    assert!(
        !program_headers(&elf).contains(&3),
        "{} asks for a dynamic loader (PT_INTERP): it is not static",
        bin.display()
    );

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    certificates(w);
    let s3 = S3Server::start();
    let (_tls, port) = Tls::start(w, &s3.endpoint);
    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    dns_server("dns-only.pgfrost.test", stop.clone(), hits.clone());

    // The chroot: nothing but the binary, the two resolver files and the CA.
    let root = w.join("root");
    for d in ["etc", "tmp", "repo"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy(&bin, root.join("pgfrost")).unwrap();
    std::fs::copy(w.join("ca.pem"), root.join("ca.pem")).unwrap();
    std::fs::write(
        root.join("etc/hosts"),
        "127.0.0.1 localhost\n127.0.0.1 s3.pgfrost.test\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();

    std::fs::write(root.join("tmp/none.toml"), "").unwrap();
    let inside = |args: &[&str]| {
        let mut c = Command::new("chroot");
        c.arg(&root)
            .arg("/pgfrost")
            .args(args)
            .env_clear()
            // For finding chroot itself; inside there is no other program to find.
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/tmp")
            .env("PGFROST_CONFIG", "/tmp/none.toml")
            .env("PGFROST_PASSPHRASE", PASS)
            .env("PGFROST_KDF_MEMORY", "1024")
            .env("PGFROST_KDF_ITERATIONS", "1")
            .env("PGFROST_REPO_S3_KEY", S3_KEY)
            .env("PGFROST_REPO_S3_KEY_SECRET", S3_SECRET)
            .stdin(Stdio::null());
        run(c)
    };
    // A command against the S3 repository under `prefix`, through the TLS port by `host`.
    let on_s3 = |host: &str, prefix: &str, ca: bool, command: &[&str]| {
        let repo = format!("s3://{}/{prefix}", s3.bucket);
        let endpoint = format!("https://{host}:{port}");
        let mut a = vec!["--repo", &repo, "--repo-s3-endpoint", &endpoint];
        if ca {
            a.extend(["--repo-s3-ca-file", "/ca.pem"]);
        }
        a.extend(command);
        inside(&a)
    };

    let v = inside(&["--version"]);
    assert_eq!(v.code, 0, "{v:?}");
    assert!(
        v.stdout.contains("commit ") && v.stdout.contains("repository format 2"),
        "{v:?}"
    );

    // By the name in /etc/hosts, trusting the test CA.
    let r = on_s3("s3.pgfrost.test", "hosts", true, &["repo-create"]);
    assert_eq!(
        r.code, 0,
        "repo-create over TLS by a name from /etc/hosts: {r:?}"
    );
    assert!(
        s3.bucket_dir().join("hosts").exists(),
        "nothing reached s3s-fs under hosts/"
    );
    let r = on_s3("s3.pgfrost.test", "hosts", true, &["key", "list"]);
    assert_eq!(r.code, 0, "key list: {r:?}");

    // Without the CA the certificate is refused, and the error says so.
    let before = snapshot(&s3.bucket_dir());
    let r = on_s3("s3.pgfrost.test", "hosts", false, &["key", "list"]);
    assert_ne!(r.code, 0, "an untrusted certificate was accepted: {r:?}");
    assert!(
        r.stderr.to_lowercase().contains("certificate"),
        "the error does not name the certificate: {r:?}"
    );
    assert_eq!(snapshot(&s3.bucket_dir()), before);

    // By a name only DNS knows.
    let r = on_s3("dns-only.pgfrost.test", "dns", true, &["repo-create"]);
    assert_eq!(r.code, 0, "repo-create by a name from DNS: {r:?}");
    assert!(
        hits.load(Ordering::Relaxed) > 0,
        "the DNS server was never asked"
    );
    assert!(s3.bucket_dir().join("dns").exists());

    // A name nobody knows fails and says which name.
    let r = on_s3("nowhere.pgfrost.test", "x", true, &["key", "list"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("nowhere.pgfrost.test"), "{r:?}");

    // And a local repository, on the chroot's own disk.
    let r = inside(&["--repo", "/repo", "repo-create"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = inside(&["--repo", "/repo", "key", "list"]);
    assert_eq!(r.code, 0, "{r:?}");
    stop.store(true, Ordering::Relaxed);
}
