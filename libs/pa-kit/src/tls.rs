//! TLS to what a service reaches outside the mesh (ADR 0208): Postgres (`sslmode` and
//! `sslrootcert` in `DATABASE_URL`), Redis (`rediss://` plus the files below), Temporal (mTLS)
//! and the OTLP collector. Certificates and keys are PEM files named by environment variables;
//! each is read once when its connection is configured, and a file that cannot be read stops the
//! service with one line naming the variable and the path.

/// A PEM file named by an environment variable could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{var}={path}: cannot read the file: {reason}")]
pub struct PemFileError {
    pub var: &'static str,
    pub path: String,
    pub reason: String,
}

/// The contents of the file named by `var`, or `None` when `var` is unset or empty.
pub fn pem_from_env(var: &'static str) -> Result<Option<Vec<u8>>, PemFileError> {
    match std::env::var(var) {
        Ok(path) if !path.trim().is_empty() => read_pem(var, path.trim()).map(Some),
        _ => Ok(None),
    }
}

/// The contents of `path` (named by `var`, for the error).
pub fn read_pem(var: &'static str, path: &str) -> Result<Vec<u8>, PemFileError> {
    std::fs::read(path).map_err(|e| PemFileError {
        var,
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// A client certificate and its private key (PEM), for mutual TLS.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    // The key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity { .. }")
    }
}

/// The client identity named by `cert_var` and `key_var`: both or neither.
pub fn identity_from_env(
    cert_var: &'static str,
    key_var: &'static str,
) -> Result<Option<ClientIdentity>, PemFileError> {
    match (pem_from_env(cert_var)?, pem_from_env(key_var)?) {
        (Some(cert), Some(key)) => Ok(Some(ClientIdentity { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(PemFileError {
            var: key_var,
            path: String::new(),
            reason: format!("unset, but {cert_var} is set: a client certificate needs its key"),
        }),
        (None, Some(_)) => Err(PemFileError {
            var: cert_var,
            path: String::new(),
            reason: format!("unset, but {key_var} is set: a client key needs its certificate"),
        }),
    }
}

/// Makes aws-lc-rs the process' rustls provider. Several crates of the tree switch on both of
/// rustls' providers, and then code using rustls' defaults (Redis' TLS, the verifier of a
/// Postgres certificate that failed) panics without a process default; installing it twice is
/// harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
