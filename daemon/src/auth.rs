//! Bearer tokens with scopes and an optional key prefix, S3 access keys mapped onto the same
//! scopes, and the first-start admin token and S3 key pair.
//!
//! Secrets are compared in constant time (every configured token is compared, whatever
//! matched), are never logged, and `Token`'s `Debug` shows only the name.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use storage::ObjectKey;
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET, HEAD, listing, status.
    Read,
    /// PUT.
    Write,
    /// DELETE and administration; implies read and write.
    Admin,
}

/// A configured token.
pub struct Token {
    name: String,
    secret: Vec<u8>,
    read: bool,
    write: bool,
    admin: bool,
    prefix: Option<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// A token with `scopes`, limited to keys under `prefix`.
    pub fn new(name: String, secret: String, scopes: &[Scope], prefix: Option<String>) -> Self {
        let admin = scopes.contains(&Scope::Admin);
        Self {
            name,
            secret: secret.into_bytes(),
            read: admin || scopes.contains(&Scope::Read),
            write: admin || scopes.contains(&Scope::Write),
            admin,
            prefix,
        }
    }

    /// Whether the token may do `scope` to everything under `prefix` (a listing, a bucket):
    /// a prefix-limited token only inside its prefix.
    pub fn allows_under(&self, scope: Scope, prefix: &str) -> bool {
        let in_prefix = self
            .prefix
            .as_ref()
            .is_none_or(|own| prefix.starts_with(own.as_str()));
        self.allows_scope(scope) && in_prefix
    }

    fn allows_scope(&self, scope: Scope) -> bool {
        match scope {
            Scope::Read => self.read,
            Scope::Write => self.write,
            Scope::Admin => self.admin,
        }
    }

    /// Whether the token may do `scope` to `key` (or, without a key, to the node).
    pub fn allows(&self, scope: Scope, key: Option<&ObjectKey>) -> bool {
        let scoped = self.allows_scope(scope);
        let in_prefix = match (&self.prefix, key) {
            (None, _) => true,
            (Some(prefix), Some(key)) => key.as_str().starts_with(prefix.as_str()),
            // A prefix-limited token does nothing that is not about a key under its prefix.
            (Some(_), None) => false,
        };
        scoped && in_prefix
    }
}

/// An S3 access key: its ID, its secret (for SigV4) and what it may do. `Debug` shows only
/// the ID.
pub struct S3Key {
    /// The access key ID.
    pub access_key_id: String,
    secret: String,
    /// Its scopes and prefix, as for a bearer token.
    pub grant: Token,
}

impl std::fmt::Debug for S3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Key")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3Key {
    /// A key pair with the rights of `grant`.
    pub fn new(access_key_id: String, secret: String, grant: Token) -> Self {
        Self {
            access_key_id,
            secret,
            grant,
        }
    }

    /// The secret access key.
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No token, an unknown token, or a malformed `Authorization` header: 401.
    #[error("a valid bearer token is required")]
    Unauthenticated,
    /// A known token without the scope or prefix needed: 403.
    #[error("token {token} may not {action}")]
    Forbidden {
        /// The token's name.
        token: String,
        /// What was refused, in words.
        action: String,
    },
}

/// Who may do what.
#[derive(Debug)]
pub struct Access {
    tokens: Vec<Token>,
    public_reads: bool,
}

impl Access {
    /// The rules of a node.
    pub fn new(tokens: Vec<Token>, public_reads: bool) -> Self {
        Self {
            tokens,
            public_reads,
        }
    }

    /// Whether reads need no credential.
    pub fn public_reads(&self) -> bool {
        self.public_reads
    }

    /// Checks that the request's `Authorization` header allows `scope` on `key`.
    pub fn check(
        &self,
        authorization: Option<&[u8]>,
        scope: Scope,
        key: Option<&ObjectKey>,
    ) -> Result<(), Refusal> {
        if scope == Scope::Read && self.public_reads {
            return Ok(());
        }
        let presented = authorization
            .and_then(|value| value.strip_prefix(b"Bearer ".as_slice()))
            .map(|secret| secret.trim_ascii())
            .ok_or(Refusal::Unauthenticated)?;
        let mut found = None;
        for token in &self.tokens {
            // No early exit: the time taken does not tell which token matched.
            let equal =
                token.secret.len() == presented.len() && bool::from(token.secret.ct_eq(presented));
            if equal {
                found = Some(token);
            }
        }
        let token = found.ok_or(Refusal::Unauthenticated)?;
        if token.allows(scope, key) {
            return Ok(());
        }
        let verb = match scope {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "administer",
        };
        let action = match key {
            Some(key) => format!("{verb} {key}"),
            None => verb.to_owned(),
        };
        Err(Refusal::Forbidden {
            token: token.name.clone(),
            action,
        })
    }
}

/// Reads `<data-dir>/admin-token`, creating it (mode 0600, 256 random bits as hex) on first
/// start. Answers the secret.
pub fn first_start_admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin-token");
    if path.exists() {
        return crate::config::read_secret(&path);
    }
    let secret = random_hex(32)?;
    write_private_file(&path, &format!("{secret}\n"))?;
    Ok(secret)
}

/// The first-start S3 key pair, as stored in `<data-dir>/s3-credentials`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Credentials {
    access_key_id: String,
    secret_access_key: String,
}

/// Reads `<data-dir>/s3-credentials`, creating it (mode 0600, TOML with `access_key_id` and
/// `secret_access_key`, random) on first start. Answers an admin key.
pub fn first_start_s3_key(data_dir: &Path) -> anyhow::Result<S3Key> {
    let path = data_dir.join("s3-credentials");
    let credentials = if path.exists() {
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        toml::from_str::<S3Credentials>(&text)
            .with_context(|| format!("parse {}", path.display()))?
    } else {
        // 20 upper-case characters like AWS key IDs; a secret of 160 random bits.
        let credentials = S3Credentials {
            access_key_id: format!("DS{}", random_hex(9)?.to_uppercase()),
            secret_access_key: random_hex(20)?,
        };
        let text = format!(
            "access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            credentials.access_key_id, credentials.secret_access_key
        );
        write_private_file(&path, &text)?;
        credentials
    };
    let grant = Token::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
        &[Scope::Admin],
        None,
    );
    Ok(S3Key::new(
        credentials.access_key_id,
        credentials.secret_access_key,
        grant,
    ))
}

/// `bytes` random bytes from the kernel, as lower-case hex.
pub fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut random = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut source| source.read_exact(&mut random))
        .context("read /dev/urandom")?;
    Ok(random.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Creates `path` (which must not exist) with mode 0600 and `text`, durably.
fn write_private_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ObjectKey {
        ObjectKey::parse(text).expect("valid key")
    }

    fn access(public_reads: bool) -> Access {
        Access::new(
            vec![
                Token::new(
                    "admin".into(),
                    "admin-secret-0123456789".into(),
                    &[Scope::Admin],
                    None,
                ),
                Token::new(
                    "kids-writer".into(),
                    "kids-secret-0123456789".into(),
                    &[Scope::Write],
                    Some("kids/".into()),
                ),
                Token::new(
                    "reader".into(),
                    "read-secret-0123456789".into(),
                    &[Scope::Read],
                    None,
                ),
            ],
            public_reads,
        )
    }

    #[test]
    fn scopes_and_prefixes() {
        let closed = access(false);
        let bearer = |secret: &str| format!("Bearer {secret}").into_bytes();
        let check =
            |auth: Option<&[u8]>, scope, name: &str| closed.check(auth, scope, Some(&key(name)));
        assert_eq!(check(None, Scope::Read, "a"), Err(Refusal::Unauthenticated));
        assert_eq!(
            check(Some(b"Bearer wrong-secret-0123456789"), Scope::Read, "a"),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(
            check(Some(b"Basic YTpi"), Scope::Read, "a"),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(
            check(Some(&bearer("read-secret-0123456789")), Scope::Read, "a"),
            Ok(())
        );
        assert!(matches!(
            check(Some(&bearer("read-secret-0123456789")), Scope::Write, "a"),
            Err(Refusal::Forbidden { .. })
        ));
        assert_eq!(
            check(
                Some(&bearer("kids-secret-0123456789")),
                Scope::Write,
                "kids/x.fits"
            ),
            Ok(())
        );
        assert!(matches!(
            check(
                Some(&bearer("kids-secret-0123456789")),
                Scope::Write,
                "lofar/x"
            ),
            Err(Refusal::Forbidden { .. })
        ));
        assert!(matches!(
            check(
                Some(&bearer("kids-secret-0123456789")),
                Scope::Read,
                "kids/x"
            ),
            Err(Refusal::Forbidden { .. })
        ));
        assert_eq!(
            check(Some(&bearer("admin-secret-0123456789")), Scope::Admin, "x"),
            Ok(())
        );
        assert_eq!(
            check(Some(&bearer("admin-secret-0123456789")), Scope::Write, "x"),
            Ok(())
        );
        assert!(matches!(
            check(Some(&bearer("reader-secret")), Scope::Admin, "x"),
            Err(Refusal::Unauthenticated)
        ));
        assert_eq!(
            access(true).check(None, Scope::Read, Some(&key("a"))),
            Ok(())
        );
        assert_eq!(
            access(true).check(None, Scope::Write, Some(&key("a"))),
            Err(Refusal::Unauthenticated)
        );
    }

    #[test]
    fn prefixes_of_listings() {
        let kids = Token::new(
            "kids".into(),
            "kids-secret-0123456789".into(),
            &[Scope::Read],
            Some("kids/".into()),
        );
        assert!(kids.allows_under(Scope::Read, "kids/"));
        assert!(kids.allows_under(Scope::Read, "kids/DR5/"));
        assert!(!kids.allows_under(Scope::Read, "kid"));
        assert!(!kids.allows_under(Scope::Read, ""));
        assert!(!kids.allows_under(Scope::Write, "kids/"));
    }

    #[test]
    fn first_start_s3_credentials_are_private_and_stable() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let first = first_start_s3_key(dir.path()).expect("create");
        let again = first_start_s3_key(dir.path()).expect("read");
        assert_eq!(first.access_key_id, again.access_key_id);
        assert_eq!(first.secret(), again.secret());
        assert_eq!(first.access_key_id.len(), 20);
        assert!(first.grant.allows(Scope::Admin, None));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("s3-credentials"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{first:?}").contains(first.secret()));
    }

    #[test]
    fn debug_hides_the_secret() {
        let token = Token::new(
            "n".into(),
            "very-secret-value-123".into(),
            &[Scope::Read],
            None,
        );
        assert!(!format!("{token:?}").contains("very-secret"));
    }
}
