//! Google Cloud Storage and Azure Blob Storage: where their repositories are (`gs://`, `az://`)
//! and how pgfrost authenticates to them. Both give the create-once write the repository rests
//! on (GCS `x-goog-if-generation-match: 0`, Azure `If-None-Match: *`), through object_store.

use super::{Location, chain, tls_options};
use crate::error::{Error, Result};
use object_store::ObjectStore;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::prefix::PrefixStore;
use std::path::PathBuf;
use std::sync::Arc;

/// A repository in a GCS bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsLocation {
    pub bucket: String,
    pub prefix: String,
    pub credentials: GcsCredentials,
    /// Another base URL than https://storage.googleapis.com (an emulator, a private endpoint).
    pub endpoint: Option<String>,
}

/// How pgfrost proves who it is to GCS (`repo-gcs-key-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcsCredentials {
    /// Application default credentials: GOOGLE_APPLICATION_CREDENTIALS, gcloud's
    /// application_default_credentials.json, or the metadata server of a GCE/GKE machine.
    Auto,
    /// A service account's JSON key file (`repo-gcs-key-file`).
    Service(PathBuf),
    /// An OAuth access token, used as it is (`repo-gcs-token`): one printed by gcloud, or any
    /// text for an emulator.
    Token(String),
}

/// A repository in an Azure Blob Storage container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureLocation {
    pub container: String,
    pub prefix: String,
    /// The storage account; else AZURE_STORAGE_ACCOUNT_NAME.
    pub account: Option<String>,
    pub credentials: AzureCredentials,
    /// Another endpoint than https://ACCOUNT.blob.core.windows.net (Azurite, a sovereign cloud,
    /// a private endpoint).
    pub endpoint: Option<String>,
}

/// How pgfrost proves who it is to Azure (`repo-azure-key-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureCredentials {
    /// The storage account's shared key (`repo-azure-key`).
    Shared(String),
    /// A shared access signature (`repo-azure-sas-token`), with or without its leading '?'.
    Sas(String),
    /// Whatever the machine offers: workload identity, a managed identity, the Azure CLI's login.
    Auto,
}

/// `scheme://container/prefix` as the operator wrote it, without a trailing slash.
pub fn url(scheme: &str, container: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("{scheme}://{container}")
    } else {
        format!("{scheme}://{container}/{prefix}")
    }
}

/// `gs://bucket[/prefix]` or `az://container[/prefix]`; None for any other scheme. Credentials and
/// endpoints come from options, filled in by the caller.
pub(super) fn parse(repo: &str) -> Result<Option<Location>> {
    let (scheme, rest) = if let Some(r) = repo.strip_prefix("gs://") {
        ("gs", r)
    } else if let Some(r) = repo.strip_prefix("az://") {
        ("az", r)
    } else {
        return Ok(None);
    };
    let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let what = if scheme == "gs" {
        "bucket"
    } else {
        "container"
    };
    if name.is_empty() {
        return Err(
            Error::config(format!("repository '{repo}' names no {what}")).hint(format!(
                "write it as {scheme}://{} or {scheme}://{}/PREFIX",
                what.to_uppercase(),
                what.to_uppercase()
            )),
        );
    }
    let prefix = prefix.trim_matches('/').to_string();
    Ok(Some(if scheme == "gs" {
        Location::Gcs(GcsLocation {
            bucket: name.into(),
            prefix,
            credentials: GcsCredentials::Auto,
            endpoint: None,
        })
    } else {
        Location::Azure(AzureLocation {
            container: name.into(),
            prefix,
            account: None,
            credentials: AzureCredentials::Auto,
            endpoint: None,
        })
    }))
}

fn with_prefix<S: ObjectStore>(s: S, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(s)
    } else {
        Arc::new(PrefixStore::new(s, prefix))
    }
}

pub(super) fn open_gcs(g: &GcsLocation, location: &Location) -> Result<Arc<dyn ObjectStore>> {
    // from_env: GOOGLE_APPLICATION_CREDENTIALS and the other GOOGLE_* variables the Google
    // tools honour, so that application default credentials work as the operator expects.
    let mut b = GoogleCloudStorageBuilder::from_env()
        .with_client_options(
            tls_options(None)?.with_allow_http(
                g.endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
            ),
        )
        .with_bucket_name(&g.bucket);
    if let Some(ep) = &g.endpoint {
        b = b.with_base_url(ep.trim_end_matches('/'));
    }
    b = match &g.credentials {
        GcsCredentials::Auto => b,
        GcsCredentials::Service(path) => {
            if !path.is_file() {
                return Err(Error::config(format!(
                    "repo-gcs-key-file {} does not exist or is not a file",
                    path.display()
                ))
                .hint("give the service account's JSON key file, as downloaded from the console"));
            }
            b.with_service_account_path(path.display().to_string())
        }
        GcsCredentials::Token(t) => b.with_bearer_token(t),
    };
    let s = b.build().map_err(|e| {
        Error::config(format!("repository {location}: {}", chain(&e))).hint(
            "check repo-gcs-key-file or the application default credentials (GOOGLE_APPLICATION_CREDENTIALS, 'gcloud auth application-default login')",
        )
    })?;
    Ok(with_prefix(s, &g.prefix))
}

pub(super) fn open_azure(a: &AzureLocation, location: &Location) -> Result<Arc<dyn ObjectStore>> {
    let mut b = MicrosoftAzureBuilder::from_env()
        .with_client_options(tls_options(None)?)
        .with_container_name(&a.container);
    if let Some(acct) = &a.account {
        b = b.with_account(acct);
    }
    if let Some(ep) = &a.endpoint {
        b = b
            .with_allow_http(ep.starts_with("http://"))
            .with_endpoint(ep.trim_end_matches('/').to_string());
    }
    b = match &a.credentials {
        AzureCredentials::Shared(key) => b.with_access_key(key),
        AzureCredentials::Sas(token) => {
            b.with_config(AzureConfigKey::SasKey, token.trim_start_matches('?'))
        }
        AzureCredentials::Auto => b,
    };
    let s = b.build().map_err(|e| {
        Error::config(format!("repository {location}: {}", chain(&e))).hint(
            "set repo-azure-account, and repo-azure-key or repo-azure-sas-token (or run where a managed identity is assigned)",
        )
    })?;
    Ok(with_prefix(s, &a.prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_urls_parse_and_print_back() {
        for (repo, shown) in [
            ("gs://backups", "gs://backups"),
            ("gs://backups/pg/main/", "gs://backups/pg/main"),
            ("az://pgfrost", "az://pgfrost"),
            ("az://pgfrost/prod", "az://pgfrost/prod"),
        ] {
            let loc = Location::parse(repo).unwrap();
            assert_eq!(loc.to_string(), shown, "{repo}");
        }
        match Location::parse("gs://b/p").unwrap() {
            Location::Gcs(g) => assert_eq!((g.bucket.as_str(), g.prefix.as_str()), ("b", "p")),
            other => panic!("{other:?}"),
        }
        for bad in ["gs://", "az:///prefix"] {
            let e = Location::parse(bad).unwrap_err();
            assert!(e.hint.is_some(), "{bad}: {e}");
        }
    }
}
