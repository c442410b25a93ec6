//! The human status page at `/`: the facts of `/_/status`, server-rendered, readable at a glance.

use crate::http::wire::Status;

/// The page for `status`. Every value is escaped.
pub fn render(status: &Status) -> String {
    let rows = [
        ("Node", escape(&status.node)),
        (
            "Site",
            format!("{} (number {})", escape(&status.site), status.site_number),
        ),
        ("Version", escape(&status.version)),
        ("Objects", status.objects.to_string()),
        ("Stored", bytes(status.bytes)),
        ("Free disk", bytes(status.free_bytes)),
        ("Up", uptime(status.uptime_seconds)),
        (
            "Verified reads",
            if status.verify_reads {
                "always"
            } else {
                "never"
            }
            .to_owned(),
        ),
    ];
    let rows: String = rows
        .iter()
        .map(|(name, value)| format!("<tr><th>{name}</th><td>{value}</td></tr>\n"))
        .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>dataserver {node}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}th{{text-align:left;padding-right:2em}}</style></head>\n\
         <body><h1>dataserver {node}</h1>\n<table>\n{rows}</table>\n\
         <p><a href=\"/_/status\">status (JSON)</a> · <a href=\"/metrics\">metrics</a> · \
         <a href=\"/_/list?limit=100\">first 100 objects</a></p></body></html>\n",
        node = escape(&status.node),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Bytes in binary units, one decimal.
fn bytes(count: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn uptime(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86400, seconds / 3600 % 24, seconds / 60 % 60);
    format!("{days}d {hours}h {minutes}m")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_escaped_facts() {
        let status = Status {
            node: "<node>".into(),
            site: "kids".into(),
            site_number: 3,
            version: "0.1.0".to_owned(),
            objects: 42,
            bytes: 3 << 30,
            free_bytes: 1536,
            uptime_seconds: 90061,
            verify_reads: true,
        };
        let page = render(&status);
        assert!(page.contains("&lt;node&gt;") && !page.contains("<node>"));
        assert!(page.contains("<td>42</td>"));
        assert!(page.contains("3.0 GiB") && page.contains("1.5 KiB"));
        assert!(page.contains("1d 1h 1m"));
    }
}
