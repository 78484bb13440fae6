//! Cloud emulators the tests start on 127.0.0.1: Azurite, Microsoft's Azure Storage emulator
//! (npm), killed on drop. `bash .ci/setup` installs it.

use super::{free_port, python};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's well-known development account (documented by Microsoft; not a secret).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn wait_listening(what: &str, port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what} exited ({st}) before it listened on 127.0.0.1:{port}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running Azurite blob service with one container.
pub struct Azurite {
    child: Child,
    _root: tempfile::TempDir,
    pub endpoint: String,
    pub container: String,
}

fn azurite_bin() -> PathBuf {
    let dir =
        std::env::var("PGFROST_AZURITE_DIR").unwrap_or_else(|_| "/opt/pgfrost/azurite".into());
    let bin = Path::new(&dir).join("node_modules/.bin/azurite-blob");
    assert!(
        bin.is_file(),
        "Azurite is not installed at {}; the Azure tests need it.\n\
         Install it with: (mkdir -p {dir} && cd {dir} && npm install azurite@3.35.0)\n\
         (or run bash .ci/setup, which does it)",
        bin.display()
    );
    bin
}

impl Azurite {
    pub fn start() -> Azurite {
        let root = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new(azurite_bin())
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(root.path())
            // object_store may speak a newer service version than this Azurite knows.
            .args(["--silent", "--skipApiVersionCheck"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite-blob");
        wait_listening("Azurite", port, &mut child);
        let a = Azurite {
            child,
            _root: root,
            endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
            container: "pgfrost-test".into(),
        };
        a.create_container(&a.container);
        a
    }

    /// Creates a container: an operator's step (pgfrost never creates buckets or containers),
    /// signed with the account's shared key by Python's standard library.
    pub fn create_container(&self, name: &str) {
        let script = r#"
import base64, hashlib, hmac, sys, urllib.request
from email.utils import formatdate
endpoint, account, key, name = sys.argv[1:5]
date = formatdate(usegmt=True)
version = "2021-08-06"
resource = "/%s/%s/%s\nrestype:container" % (account, account, name)
to_sign = "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:%s\nx-ms-version:%s\n%s" % (date, version, resource)
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request("%s/%s?restype=container" % (endpoint, name), method="PUT")
req.add_header("Content-Length", "0")
req.add_header("x-ms-date", date)
req.add_header("x-ms-version", version)
req.add_header("Authorization", "SharedKey %s:%s" % (account, sig))
urllib.request.urlopen(req).read()
"#;
        let out = Command::new(python())
            .args([
                "-c",
                script,
                &self.endpoint,
                AZURITE_ACCOUNT,
                AZURITE_KEY,
                name,
            ])
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "creating container {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn location(&self, prefix: &str) -> pgfrost::store::Location {
        use pgfrost::store::cloud::{AzureCredentials, AzureLocation};
        pgfrost::store::Location::Azure(AzureLocation {
            container: self.container.clone(),
            prefix: prefix.into(),
            account: Some(AZURITE_ACCOUNT.into()),
            credentials: AzureCredentials::Shared(AZURITE_KEY.into()),
            endpoint: Some(self.endpoint.clone()),
        })
    }

    /// Adds the options a pgfrost command needs to use this server.
    pub fn args(&self, c: &mut Command, prefix: &str) {
        c.arg("--repo")
            .arg(format!("az://{}/{prefix}", self.container))
            .arg("--repo-azure-endpoint")
            .arg(&self.endpoint)
            .env("PGFROST_REPO_AZURE_ACCOUNT", AZURITE_ACCOUNT)
            .env("PGFROST_REPO_AZURE_KEY", AZURITE_KEY);
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
