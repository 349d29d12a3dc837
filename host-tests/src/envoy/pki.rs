//! Certificates for the production gateway's TLS and mTLS listeners,
//! generated on demand (never committed): a server CA and the gateway's
//! server certificate, a device CA and IoT device client certificates whose
//! URI SAN is a SPIFFE ID.
//!
//! The tests generate a fresh set per run; `citygate package --target envoy`
//! generates a DEMO ONLY set when it is given no certificates. Real
//! deployments bring their own: the server certificate from the city's
//! public CA, device certificates from the device provisioning CA.

use std::fs;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The gateway's public name in the demo and the tests.
pub const SERVER_NAME: &str = "api.city.example";
/// The SPIFFE ID prefix every device certificate carries.
pub const DEVICE_URI_PREFIX: &str = "spiffe://city.example/device/";
/// The demo device.
pub const DEMO_DEVICE: &str = "spiffe://city.example/device/parking-sensor-0042";

/// Files `write_gateway_certs` creates (the names listeners.yaml uses).
pub const SERVER_CERT_FILE: &str = "server.crt";
pub const SERVER_KEY_FILE: &str = "server.key";
pub const DEVICE_CA_FILE: &str = "device-ca.crt";
pub const SERVER_CA_FILE: &str = "server-ca.crt";

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// One certificate authority that can issue more certificates.
pub struct Authority {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A self-signed CA named `name` (its key never leaves memory).
    pub fn new(name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "City of Example (DEMO ONLY)");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, 3650);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A server certificate for these DNS names and IP addresses.
    pub fn server(&self, names: &[&str]) -> Result<CertifiedKey> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*name).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        let common_name = names.first().copied().unwrap_or(SERVER_NAME);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.leaf(params, 397)
    }

    /// A client certificate whose URI SAN is `uri` (a device's SPIFFE ID).
    pub fn client(&self, uri: &str) -> Result<CertifiedKey> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
        let name = uri.rsplit('/').next().unwrap_or(uri);
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.leaf(params, 397)
    }

    fn leaf(&self, mut params: CertificateParams, days: i64) -> Result<CertifiedKey> {
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // An hour back, for clocks that are a little behind.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Everything the gateway and its clients need: the two CAs, the gateway's
/// server certificate and one device certificate.
#[derive(Debug)]
pub struct GatewayPki {
    pub server_ca: Authority,
    pub device_ca: Authority,
    pub server: CertifiedKey,
    pub device: CertifiedKey,
}

impl GatewayPki {
    /// A fresh set: the server certificate for `api.city.example`,
    /// `localhost` and 127.0.0.1, the device certificate for [`DEMO_DEVICE`].
    pub fn generate() -> Result<Self> {
        let server_ca = Authority::new("citygate demo server CA")?;
        let device_ca = Authority::new("citygate demo device CA")?;
        let server = server_ca.server(&[SERVER_NAME, "localhost", "127.0.0.1"])?;
        let device = device_ca.client(DEMO_DEVICE)?;
        Ok(GatewayPki {
            server_ca,
            device_ca,
            server,
            device,
        })
    }

    /// Writes what Envoy reads (server.crt, server.key, device-ca.crt) and,
    /// for clients, server-ca.crt and the device's certificate and key.
    /// Private keys are written owner-readable only.
    pub fn write(&self, dir: &Path, demo_only: bool) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let public = [
            (SERVER_CERT_FILE, &self.server.cert_pem),
            (DEVICE_CA_FILE, &self.device_ca.cert_pem),
            (SERVER_CA_FILE, &self.server_ca.cert_pem),
            ("device.crt", &self.device.cert_pem),
        ];
        for (name, pem) in public {
            fs::write(dir.join(name), pem)?;
        }
        for (name, pem) in [
            (SERVER_KEY_FILE, &self.server.key_pem),
            ("device.key", &self.device.key_pem),
        ] {
            write_private(&dir.join(name), pem)?;
        }
        if demo_only {
            fs::write(dir.join("README.DEMO-ONLY"), DEMO_NOTE)?;
        }
        Ok(())
    }
}

const DEMO_NOTE: &str = "\
DEMO ONLY certificates, generated by `citygate package --target envoy`
because no --certs directory was given. Their CA keys were discarded, but the
server and device private keys are here in plain text: never use them for a
real gateway. Bring the city's own server certificate (server.crt,
server.key) and the device provisioning CA (device-ca.crt) instead.
";

/// Writes a private key readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(contents.as_bytes())?;
        Ok(())
    }
    #[cfg(not(unix))]
    {
        fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
    }
}
