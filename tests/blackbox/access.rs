//! Tokens, scopes, prefixes and closed reads.

use std::os::unix::fs::PermissionsExt;

use crate::harness::start;

const CONFIG: &str = r#"
public_reads = false

[[tokens]]
name = "admin"
token_file = "{dir}/admin.secret"
scopes = ["admin"]

[[tokens]]
name = "kids-writer"
token_file = "{dir}/writer.secret"
scopes = ["write"]
prefix = "kids/"

[[tokens]]
name = "reader"
token_file = "{dir}/reader.secret"
scopes = ["read"]
"#;

const ADMIN: &str = "admin-0123456789abcdef";
const WRITER: &str = "writer-0123456789abcdef";
const READER: &str = "reader-0123456789abcdef";

#[test]
fn scopes_prefixes_and_closed_reads() {
    let daemon = start_with_secrets();
    let bearer = |secret: &str| format!("Authorization: Bearer {secret}");
    let file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(file.path(), b"pixels").expect("write");
    let body = file.path().to_str().expect("utf-8");
    let put = |path: &str, secret: Option<&str>| {
        let mut args = vec!["-T", body];
        let header;
        if let Some(secret) = secret {
            header = bearer(secret);
            args.extend(["-H", header.as_str()]);
        }
        daemon.curl(path, &args).status
    };
    assert_eq!(put("/kids/a", None), 401);
    assert_eq!(put("/kids/a", Some("wrong-0123456789abcdef")), 401);
    assert_eq!(put("/kids/a", Some(READER)), 403);
    assert_eq!(put("/lofar/a", Some(WRITER)), 403);
    assert_eq!(put("/kids/a", Some(WRITER)), 201);
    assert_eq!(put("/lofar/a", Some(ADMIN)), 201);

    let unauthenticated = daemon.curl("/kids/a", &[]);
    assert_eq!(unauthenticated.status, 401);
    assert_eq!(unauthenticated.header("www-authenticate"), Some("Bearer"));
    assert_eq!(daemon.curl("/_/list", &[]).status, 401);
    assert_eq!(daemon.curl("/_/status", &[]).status, 401);
    assert_eq!(
        daemon.curl("/_/health", &[]).status,
        200,
        "health stays open for probes"
    );
    let read = daemon.curl("/kids/a", &["-H", &bearer(READER)]);
    assert_eq!(
        (read.status, read.body.as_slice()),
        (200, b"pixels".as_slice())
    );
    assert_eq!(
        daemon.curl("/kids/a", &["-H", &bearer(WRITER)]).status,
        403,
        "a write token does not read"
    );

    assert_eq!(
        daemon
            .curl("/kids/a", &["-X", "DELETE", "-H", &bearer(WRITER)])
            .status,
        403
    );
    assert_eq!(
        daemon
            .curl("/kids/a", &["-X", "DELETE", "-H", &bearer(ADMIN)])
            .status,
        200
    );
    assert!(
        !daemon.data_dir().join("admin-token").exists(),
        "configured tokens: no generated one"
    );
    let log = daemon.log();
    for secret in [ADMIN, WRITER, READER] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

/// A daemon whose token files exist before it starts.
fn start_with_secrets() -> crate::harness::TestDaemon {
    let secrets = [
        ("admin.secret", ADMIN),
        ("writer.secret", WRITER),
        ("reader.secret", READER),
    ];
    crate::harness::start_with_config_and_files(CONFIG, &secrets)
}

#[test]
fn first_start_creates_a_private_admin_token_and_keeps_it() {
    let mut daemon = start();
    let path = daemon.data_dir().join("admin-token");
    let mode = std::fs::metadata(&path)
        .expect("admin-token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = daemon.token.clone();
    assert_eq!(token.len(), 64);
    assert!(
        !daemon.log().contains(&token),
        "the token itself is never logged"
    );
    assert!(
        daemon.log().contains("admin-token"),
        "the log says where it is"
    );
    daemon.restart();
    assert_eq!(daemon.token, token);
    assert_eq!(daemon.put("/x", b"1").status, 201);
}
