//! The certificate directory: what is kept in it, what is reused, and what is generated anew.

use std::io::{self};
use std::path::{Path, PathBuf};

use super::ca::{serving_fits, Ca};
use super::files::{read_pair, utf8, write_file};
use super::TlsConfig;
use super::{
    random_token, Origin, SelfSigned, SelfSignedError, ServingNames, CA_CERT_FILE, CA_KEY_FILE,
    SERVING_CERT_FILE, SERVING_KEY_FILE, TOKEN_FILE,
};

/// The directory holding the self-signed material (kube-apiserver's `--cert-dir`); see the
/// [module](super) documentation for its files and when they are reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertDir {
    dir: PathBuf,
}

impl CertDir {
    /// The directory `dir` (created when something is first written to it).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CertDir { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The path of `file` in the directory, e.g. [`CA_CERT_FILE`].
    pub fn file(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The CA and a serving certificate covering `names`: reused from the directory when they
    /// fit, else generated (or, with a kept CA, reissued) and written there. See the
    /// [module](super) documentation.
    ///
    /// Errors: [`SelfSignedError::Io`] (the directory cannot be read or written),
    /// [`SelfSignedError::IncompletePair`], [`SelfSignedError::Invalid`] (a file there cannot
    /// be used and is left alone), and those of [`generate`](super::generate).
    pub fn load_or_generate(&self, names: &ServingNames) -> Result<SelfSigned, SelfSignedError> {
        let server_names = names.server_names()?;
        let ca_files = (self.file(CA_CERT_FILE), self.file(CA_KEY_FILE));
        let serving_files = (self.file(SERVING_CERT_FILE), self.file(SERVING_KEY_FILE));
        let kept_ca = match read_pair(&ca_files.0, &ca_files.1)? {
            Some((cert, key)) => {
                let ca = Ca::load(&ca_files.0, cert, &ca_files.1, key)?;
                if ca.fits() {
                    Some(ca)
                } else {
                    tracing::info!(
                        ca = %ca_files.0.display(),
                        "the CA expires soon or has expired; generating a new one"
                    );
                    None
                }
            }
            None => None,
        };
        // Read before anything is written, so half a serving pair is refused either way.
        let kept_serving = read_pair(&serving_files.0, &serving_files.1)?;
        let ca_reused = kept_ca.is_some();
        let ca = match kept_ca {
            Some(ca) => ca,
            None => {
                let ca = Ca::generate()?;
                self.create_dir()?;
                write_file(&ca_files.1, ca.key.serialize_pem().as_bytes(), true)?;
                write_file(&ca_files.0, ca.cert_pem.as_bytes(), false)?;
                ca
            }
        };
        if ca_reused {
            if let Some((chain, key)) = kept_serving {
                let chain = utf8(&serving_files.0, chain)?;
                let key = utf8(&serving_files.1, key)?;
                TlsConfig::from_pem(chain.as_bytes(), key.as_bytes()).map_err(|e| {
                    SelfSignedError::Invalid {
                        path: serving_files.0.clone(),
                        reason: e.to_string(),
                    }
                })?;
                match serving_fits(&ca, &serving_files.0, chain.as_bytes(), &server_names)? {
                    Ok(()) => {
                        return Ok(SelfSigned {
                            ca_key_pem: ca.key.serialize_pem(),
                            ca_pem: ca.cert_pem,
                            chain_pem: chain,
                            key_pem: key,
                            origin: Origin::Reused,
                        })
                    }
                    Err(reason) => tracing::info!(
                        certificate = %serving_files.0.display(),
                        "reissuing the serving certificate: {reason}"
                    ),
                }
            }
        }
        let (chain_pem, key_pem) = ca.issue(names)?;
        self.create_dir()?;
        write_file(&serving_files.1, key_pem.as_bytes(), true)?;
        write_file(&serving_files.0, chain_pem.as_bytes(), false)?;
        Ok(SelfSigned {
            ca_key_pem: ca.key.serialize_pem(),
            ca_pem: ca.cert_pem,
            chain_pem,
            key_pem,
            origin: if ca_reused {
                Origin::Reissued
            } else {
                Origin::Generated
            },
        })
    }

    /// The bearer token kept in [`TOKEN_FILE`], or a [`random_token`] written there first.
    ///
    /// Errors: [`SelfSignedError::Io`], [`SelfSignedError::Invalid`] (the file holds no
    /// token), [`SelfSignedError::Random`].
    pub fn load_or_generate_token(&self) -> Result<String, SelfSignedError> {
        let path = self.file(TOKEN_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let token = utf8(&path, bytes)?.trim().to_string();
                if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(SelfSignedError::Invalid {
                        path,
                        reason: "it does not hold one token on one line".into(),
                    });
                }
                Ok(token)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let token = random_token()?;
                self.create_dir()?;
                write_file(&path, format!("{token}\n").as_bytes(), true)?;
                Ok(token)
            }
            Err(source) => Err(SelfSignedError::Io {
                action: "reading",
                path,
                source,
            }),
        }
    }

    fn create_dir(&self) -> Result<(), SelfSignedError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| SelfSignedError::Io {
            action: "creating",
            path: self.dir.clone(),
            source,
        })
    }
}
