//! TLS on the client–relay link (rustls, with the ring provider): what a relay serves
//! ([`CertificateFiles`], reloadable; or [`server_config`] for a certificate in memory)
//! and how a client decides to trust a relay ([`Trust`]: the web's roots, a CA file, or a
//! pinned certificate).
//!
//! The web's roots are Mozilla's, compiled in (`webpki-roots`): a client then trusts the
//! same relays on every machine, a container without a certificate store included, and a
//! relay operator who wants otherwise gives `--ca` or `--pin`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// The crypto the relay link uses: ring's, with AES-128-GCM first.
///
/// AES-128-GCM is the suite TLS 1.3 requires of every implementation and browsers' first
/// choice; it takes ten rounds of AES a block against AES-256's fourteen, on every byte of
/// both hops. A client offers the suites in this order and a relay follows its client's
/// order, so a client that prefers another suite (ChaCha20 where AES is slow) still gets it.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(provider)
}

/// The SHA-256 fingerprint of a certificate, as hex: what `--pin` takes.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A certificate chain and its key as the relay signs with them.
fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> std::io::Result<CertifiedKey> {
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| invalid(format!("the private key: {e}")))?;
    let certified = CertifiedKey::new(chain, key);
    // A key that is not the certificate's would fail every handshake, long after start.
    match certified.keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(invalid(
                "the private key does not belong to the certificate (the first in its file)"
                    .to_string(),
            ))
        }
        // A key that cannot tell its public half is checked by the first handshake.
        Ok(()) | Err(_) => Ok(certified),
    }
}

fn relay_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    Ok(Arc::new(config))
}

/// A relay's configuration for a certificate chain and key in memory.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let key = Arc::new(certified(chain, key)?);
    relay_config(Arc::new(Fixed(key)))
}

/// A relay's configuration with a certificate made now for `name` (self-signed: for trying
/// TLS out, or a test), and its SHA-256 fingerprint, which clients pin ([`Trust::pin`]).
pub fn self_signed(name: &str) -> std::io::Result<(Arc<rustls::ServerConfig>, String)> {
    let made = rcgen::generate_simple_self_signed(vec![name.to_string()])
        .map_err(|e| invalid(format!("cannot make a certificate: {e}")))?;
    let cert = made.cert.der().clone();
    let pin = fingerprint(&cert);
    let key = PrivateKeyDer::Pkcs8(made.key_pair.serialize_der().into());
    Ok((server_config(vec![cert], key)?, pin))
}

/// [`self_signed`], kept in `dir` (made if missing): the first start makes the certificate
/// and writes it and its key there (the key readable by its owner only); later starts read
/// them back, so the fingerprint clients pinned stays the same.
pub fn self_signed_in(
    dir: &Path,
    name: &str,
) -> std::io::Result<(Arc<rustls::ServerConfig>, String)> {
    std::fs::create_dir_all(dir)?;
    let (cert, key) = (dir.join("self-signed.pem"), dir.join("self-signed.key"));
    if !cert.exists() || !key.exists() {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()])
            .map_err(|e| invalid(format!("cannot make a certificate: {e}")))?;
        // The key first: a certificate without its key is made again at the next start.
        write_new(&key, made.key_pair.serialize_pem().as_bytes())?;
        write_new(&cert, made.cert.pem().as_bytes())?;
    }
    let files = CertificateFiles::load(&cert, &key)?;
    let pin = files.fingerprint();
    Ok((files.server_config()?, pin))
}

/// Puts `bytes` at `path` as a new file, owner-only (tempfile's mode, 0600): written under
/// a random name beside it, then renamed over whatever has the name, so a link planted
/// there is replaced, never written through.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = tempfile::NamedTempFile::new_in(path.parent().unwrap_or(Path::new(".")))?;
    file.write_all(bytes)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A relay's certificate chain and key from PEM files, which [`CertificateFiles::reload`]
/// reads again: connections made after it get the new certificate, connections open keep
/// theirs.
#[derive(Debug)]
pub struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertificateFiles {
    /// Reads the chain (leaf first) from `cert` and the key from `key`.
    pub fn load(cert: &Path, key: &Path) -> std::io::Result<Arc<Self>> {
        let current = RwLock::new(Arc::new(Self::read(cert, key)?));
        Ok(Arc::new(CertificateFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current,
        }))
    }

    fn read(cert: &Path, key: &Path) -> std::io::Result<CertifiedKey> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| invalid(format!("{}: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(invalid(format!("{}: no certificate", cert.display())));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| invalid(format!("{}: {e}", key.display())))?;
        certified(chain, key)
    }

    /// Reads the files again; on an error the certificate in use stays.
    pub fn reload(&self) -> std::io::Result<()> {
        let fresh = Arc::new(Self::read(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The SHA-256 fingerprint of the leaf certificate in use.
    pub fn fingerprint(&self) -> String {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.cert.first().map(fingerprint).unwrap_or_default()
    }

    /// A relay's configuration that serves the certificate in use.
    pub fn server_config(self: &Arc<Self>) -> std::io::Result<Arc<rustls::ServerConfig>> {
        relay_config(self.clone())
    }
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// How a client decides whether to trust a relay's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Certificates signed by the web's authorities (Mozilla's roots), valid for the name.
    WebRoots,
    /// Certificates signed by an authority in this PEM file, valid for the name.
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 fingerprint (a self-signed relay's).
    Pin([u8; 32]),
}

impl Trust {
    /// A pin from its hex form (colons and case ignored).
    pub fn pin(hex: &str) -> Result<Trust, String> {
        let digits: String = hex.chars().filter(|c| *c != ':').collect();
        let mut pin = [0u8; 32];
        if digits.len() != 64 {
            return Err(format!(
                "a SHA-256 pin is 64 hex digits, not {}",
                digits.len()
            ));
        }
        for (i, byte) in pin.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("not hex: {hex}"))?;
        }
        Ok(Trust::Pin(pin))
    }
}

/// A client's TLS configuration for `trust`.
pub fn client_config(trust: &Trust) -> std::io::Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let config = match trust {
        Trust::WebRoots => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaFile(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?
            {
                let cert = cert.map_err(|e| invalid(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: *pin,
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Trusts exactly one certificate, by its SHA-256 fingerprint, whatever names or
/// signatures it carries (a self-signed relay's); the handshake's own signature is still
/// checked against it.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the relay's certificate does not match the pin".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_planted_in_the_state_directory_is_replaced_not_written_through() {
        let (dir, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("self-signed.pem")).unwrap();
        let (_, pin) = self_signed_in(dir.path(), "localhost").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        let meta = std::fs::symlink_metadata(dir.path().join("self-signed.pem")).unwrap();
        assert!(meta.file_type().is_file());
        // And the state is kept: the same pin at the next start.
        let (_, again) = self_signed_in(dir.path(), "localhost").unwrap();
        assert_eq!(again, pin);
    }
}
