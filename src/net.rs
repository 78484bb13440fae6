//! Host names, resolved in the process when the binary is statically linked.
//!
//! A statically linked glibc cannot load the NSS modules getaddrinfo and getpwuid depend on
//! (`libnss_files`, `libnss_dns`): in an Alpine image, an empty chroot or a distroless container
//! every lookup of a name would fail. The static build therefore resolves with hickory, which reads
//! /etc/hosts and /etc/resolv.conf itself, for the S3 endpoint and for pg-host alike. The dynamic
//! build keeps the system's resolver (nsswitch, systemd-resolved, ...), which operators expect.

use crate::error::{Error, ErrorKind, Result};
use hickory_resolver::Resolver;
use hickory_resolver::config::ResolveHosts;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use std::net::IpAddr;
use std::sync::OnceLock;

/// Whether names are resolved here rather than by the C library.
pub const IN_PROCESS: bool = cfg!(target_feature = "crt-static");

fn resolver() -> std::result::Result<&'static Resolver<TokioRuntimeProvider>, String> {
    static R: OnceLock<std::result::Result<Resolver<TokioRuntimeProvider>, String>> =
        OnceLock::new();
    R.get_or_init(|| {
        let mut b = Resolver::builder_tokio().map_err(|e| format!("/etc/resolv.conf: {e}"))?;
        b.options_mut().use_hosts_file = ResolveHosts::Always;
        b.build().map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The addresses of `host`, from /etc/hosts, else DNS.
pub async fn lookup(host: &str) -> Result<Vec<IpAddr>> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let fail = |detail: String| {
        Error::new(
            ErrorKind::Storage,
            format!("cannot resolve host name '{host}': {detail}"),
        )
        .hint("check /etc/hosts and the nameservers in /etc/resolv.conf (this build resolves names itself, without the C library)")
    };
    let r = resolver().map_err(fail)?;
    let ips: Vec<IpAddr> = r
        .lookup_ip(host)
        .await
        .map_err(|e| fail(e.to_string()))?
        .iter()
        .collect();
    if ips.is_empty() {
        return Err(fail("no address".into()));
    }
    Ok(ips)
}

/// object_store's hook for the S3 client.
#[derive(Debug)]
pub struct Dns;

impl object_store::client::DnsResolver for Dns {
    fn resolve(&self, host: &str) -> object_store::client::DnsFuture {
        let host = host.to_string();
        Box::pin(async move { lookup(&host).await.map_err(|e| e.to_string().into()) })
    }
}
