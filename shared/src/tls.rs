//! TLS trust for the clients that speak TLS (Kafka, AMQP, the Redis ledger, FTP): the system's
//! roots plus the certificates of an optional CA file, read at start-up so that a bad file
//! stops it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Trust that cannot be set up; each names the variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{variable} {}: not a readable PEM certificate file", path.display())]
    Unreadable {
        variable: &'static str,
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{variable} {}: holds no certificate", path.display())]
    NoCertificate {
        variable: &'static str,
        path: PathBuf,
    },
    #[error("{variable} {}: a certificate is not usable as a trust anchor", path.display())]
    Unusable {
        variable: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS is on but the system trusts no certificate (set {variable})")]
    NoRoots { variable: &'static str },
    #[error("the TLS client configuration was refused")]
    Config(#[source] rustls::Error),
}

/// The certificates of the PEM file `path`, which `variable` names; at least one.
pub fn ca_certificates(
    variable: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let unreadable = |source| TlsError::Unreadable {
        variable,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(unreadable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            variable,
            path: path.to_owned(),
        });
    }
    // Checked here, not at the first connection: an unusable CA file is an operator's mistake
    // that no retry will mend.
    let mut check = RootCertStore::empty();
    for cert in &certs {
        check
            .add(cert.clone())
            .map_err(|source| TlsError::Unusable {
                variable,
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(certs)
}

/// A client configuration that trusts the system's roots (rustls-native-certs: the OS store,
/// or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set) and the certificates of `ca_file`, which
/// `variable` names.
pub fn client_config(
    variable: &'static str,
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are not fatal: a CA file may be all that is needed.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        roots.add_parsable_certificates(ca_certificates(variable, path)?);
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots { variable });
    }
    // Named rather than process-wide: other TLS clients in the binary choose their own.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Certificates as PEM text, for clients that take their extra trust that way (lapin, redis).
pub fn to_pem(certs: &[CertificateDer<'_>]) -> String {
    use base64::Engine as _;

    let mut pem = String::new();
    for cert in certs {
        let body = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            // Base64 is ASCII, so every chunk is a whole string.
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

/// Makes aws-lc-rs the process's default rustls provider, unless one is installed already.
/// For clients that build their TLS configuration from the default (redis, lapin): in a binary
/// with more than one provider compiled in (rskafka brings ring), rustls cannot pick one by
/// itself and such a client would panic on its first connection.
pub fn install_default_provider() {
    // An error means a default is installed already, which is all that is needed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn ca_pem() -> Result<String, Box<dyn std::error::Error>> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Ok(params.self_signed(&key)?.pem())
    }

    #[test]
    fn a_ca_file_is_trusted_and_survives_a_round_trip_through_pem() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, format!("{}{}", ca_pem()?, ca_pem()?))?;
        let certs = ca_certificates("X_CA_FILE", &path)?;
        assert_eq!(certs.len(), 2);
        let again: Vec<_> =
            CertificateDer::pem_slice_iter(to_pem(&certs).as_bytes()).collect::<Result<_, _>>()?;
        assert_eq!(again, certs);
        client_config("X_CA_FILE", Some(&path))?;
        Ok(())
    }

    #[test]
    fn a_bad_ca_file_names_its_variable() -> TestResult {
        let dir = tempfile::tempdir()?;
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n")?;
        let missing = dir.path().join("missing.pem");
        for path in [&empty, &missing] {
            let err = client_config("AMQP_CA_FILE", Some(path))
                .err()
                .ok_or("accepted")?;
            assert!(err.to_string().starts_with("AMQP_CA_FILE "), "{err}");
        }
        Ok(())
    }
}
