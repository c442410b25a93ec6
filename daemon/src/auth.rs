//! Bearer tokens with scopes and an optional key prefix, and the first-start admin token.
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

    fn allows(&self, scope: Scope, key: Option<&ObjectKey>) -> bool {
        let scoped = match scope {
            Scope::Read => self.read,
            Scope::Write => self.write,
            Scope::Admin => self.admin,
        };
        let in_prefix = match (&self.prefix, key) {
            (None, _) => true,
            (Some(prefix), Some(key)) => key.as_str().starts_with(prefix.as_str()),
            // A prefix-limited token does nothing that is not about a key under its prefix.
            (Some(_), None) => false,
        };
        scoped && in_prefix
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
    std::fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut source| source.read_exact(&mut random))
        .context("read /dev/urandom")?;
    let secret: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    writeln!(file, "{secret}")
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(secret)
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
