//! `POST /_/verify/<key>`: the server re-hashes its stored copy on request.

use crate::harness::{b3, bytes, start_with_tokens};

#[test]
fn verify_on_request_reports_intact_and_quarantines_damage() {
    let mut daemon = start_with_tokens(
        &[
            (
                "reader",
                "reader-secret-0123456789",
                "[\"read\"]",
                Some("kids/"),
            ),
            ("admin", "admin-secret-0123456789", "[\"admin\"]", None),
        ],
        "public_reads = false\n",
    );
    daemon.expected_errors = vec!["corrupt blob", "quarantined"];
    let data = bytes(300_000, 1);
    assert_eq!(daemon.put("/kids/a%23b.fits", &data).status, 201);
    assert_eq!(daemon.put("/euclid/x", b"other").status, 201);

    let read = [
        "-H",
        "Authorization: Bearer reader-secret-0123456789",
        "-X",
        "POST",
    ];
    let intact = daemon.curl("/_/verify/kids/a%23b.fits", &read);
    assert_eq!(intact.status, 200, "{intact:?}");
    let body = intact.json();
    assert_eq!(body["key"], "kids/a#b.fits");
    assert_eq!(body["blake3"], b3(&data));
    assert_eq!(
        (body["intact"].as_bool(), body["size"].as_u64()),
        (Some(true), Some(300_000))
    );
    assert_eq!(body["tree_rebuilt"], false);

    // The read rule applies: no token, or a token for another prefix, is refused.
    assert_eq!(
        daemon
            .curl("/_/verify/kids/a%23b.fits", &["-X", "POST"])
            .status,
        401
    );
    assert_eq!(daemon.curl("/_/verify/euclid/x", &read).status, 403);
    assert_eq!(daemon.curl("/_/verify/kids/missing", &read).status, 404);
    assert_eq!(
        daemon.curl_admin("/_/verify/kids/a%23b.fits", &[]).status,
        405
    );
    assert_eq!(
        daemon.curl_admin("/_/verify/../x", &["-X", "POST"]).status,
        400
    );

    daemon.damage_blob(&data, 200_000, 0x04);
    let damaged = daemon.curl("/_/verify/kids/a%23b.fits", &read);
    assert_eq!(damaged.status, 200, "{damaged:?}");
    assert_eq!(damaged.json()["intact"], false);
    assert!(
        daemon
            .data_dir()
            .join("quarantine")
            .join(b3(&data))
            .exists()
    );
    let metrics = String::from_utf8(daemon.curl_admin("/metrics", &[]).body).expect("text");
    assert!(
        metrics.contains("dataserver_verification_failures_total 1"),
        "{metrics}"
    );
}
