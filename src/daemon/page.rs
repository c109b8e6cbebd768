//! The status page at `/`: plain server-rendered HTML and inline SVG (no JavaScript, no
//! build step), refreshed by the browser every 30 s. Per source: the restorable window as a
//! timeline picture with a tick per backup, the newest backup, lag, next run, the last
//! drill and its restore time, health; then failing targets.

use super::view::{SourceView, StatusView};

/// Colours the page uses for states (tests look for them in screenshots).
pub const GOOD: &str = "#1f9d55";
pub const BAD: &str = "#d0312d";
pub const TICK: &str = "#0b4f2c";

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

fn age(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

fn short_time(t: &str) -> String {
    t.get(..19).unwrap_or(t).replace('T', " ")
}

/// The timeline: the last 7 days (or since the oldest backup, if sooner), the restorable
/// window as a green band, a tick per backup.
fn timeline(s: &SourceView, now: i64) -> String {
    const W: f64 = 900.0;
    let span_start = match &s.window {
        Some(w) => (now - 7 * 86400).max(w.from_unix - 60).min(now - 3600),
        None => now - 7 * 86400,
    };
    let span = (now - span_start).max(1) as f64;
    let x = |t: i64| ((t - span_start) as f64 / span * W).clamp(0.0, W);
    let mut svg = format!(
        r##"<svg class="timeline" role="img" aria-label="restorable window of {name}" width="{W}" height="46" viewBox="0 0 {W} 46" xmlns="http://www.w3.org/2000/svg"><rect x="0" y="8" width="{W}" height="22" fill="#eceff1"/>"##,
        name = escape(&s.name)
    );
    if let Some(w) = &s.window {
        let (a, b) = (x(w.from_unix), x(w.to_unix));
        svg.push_str(&format!(
            r#"<rect class="window" x="{a:.1}" y="8" width="{:.1}" height="22" fill="{GOOD}"><title>restorable from {} to {}</title></rect>"#,
            (b - a).max(3.0),
            escape(&w.from),
            escape(&w.to)
        ));
    }
    for t in s.times.iter().filter(|t| **t >= span_start) {
        svg.push_str(&format!(
            r#"<rect x="{:.1}" y="4" width="2" height="30" fill="{TICK}"/>"#,
            x(*t) - 1.0
        ));
    }
    let start = jiff::Timestamp::from_second(span_start)
        .map(|t| short_time(&t.to_string()))
        .unwrap_or_default();
    svg.push_str(&format!(
        r#"<text x="0" y="44" font-size="10">{start}</text><text x="{W}" y="44" font-size="10" text-anchor="end">now</text></svg>"#
    ));
    svg
}

fn source_card(s: &SourceView, now: i64) -> String {
    let healthy = s.health.as_ref().is_none_or(|h| h.ok);
    let mut html = format!(
        r#"<section class="source {}"><h2>{}</h2><p class="path">{} · {} · {}</p>"#,
        if healthy { "ok" } else { "failing" },
        escape(&s.name),
        escape(&s.path),
        escape(s.kind.as_deref().unwrap_or("unknown kind")),
        escape(&s.schedule)
    );
    html.push_str(&timeline(s, now));
    html.push_str("<table>");
    let mut row = |k: &str, v: String| {
        html.push_str(&format!("<tr><th>{k}</th><td>{v}</td></tr>"));
    };
    row(
        "Restorable",
        match &s.window {
            Some(w) => format!(
                "from {} to {} UTC",
                escape(&short_time(&w.from)),
                escape(&short_time(&w.to))
            ),
            None => format!(r#"<span style="color:{BAD}">nothing yet</span>"#),
        },
    );
    row(
        "Newest backup",
        match &s.last_backup {
            Some(b) => format!(
                "{} · {} ago · {} · {}",
                escape(&b.id),
                age(b.age_s),
                bytes(b.size_bytes),
                escape(&b.trigger)
            ),
            None => "none".into(),
        },
    );
    row("Backups", s.backups.to_string());
    row(
        "Next run",
        s.next_run
            .as_deref()
            .map(|t| format!("{} UTC", escape(&short_time(t))))
            .unwrap_or_else(|| "—".into()),
    );
    if let Some(rate) = s.success_rate {
        row("Success rate", format!("{:.0}%", rate * 100.0));
    }
    if let Some(e) = &s.last_error {
        row(
            "Last error",
            format!(r#"<span style="color:{BAD}">{}</span>"#, escape(e)),
        );
    }
    if let Some(lag) = s.lag_s {
        row("Replication lag", format!("{lag:.1} s"));
    }
    row(
        "Last drill",
        match &s.last_drill {
            Some(d) => {
                let state = match d.ok {
                    Some(true) => format!(r#"<span style="color:{GOOD}">passed</span>"#),
                    Some(false) => format!(
                        r#"<span style="color:{BAD}">FAILED</span> {}"#,
                        escape(d.error.as_deref().unwrap_or(""))
                    ),
                    None => "passed".into(),
                };
                let rto = d
                    .rto_ms
                    .map(|r| format!(" · RTO {:.1} s", r as f64 / 1000.0))
                    .unwrap_or_default();
                format!(
                    "{state} {}{rto}",
                    escape(&d.time.as_deref().map(short_time).unwrap_or_default())
                )
            }
            None => "never".into(),
        },
    );
    if let Some(h) = &s.health {
        let failing: Vec<String> = h
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", escape(&c.name), escape(&c.detail)))
            .collect();
        row(
            "Health",
            if failing.is_empty() {
                format!(
                    r#"<span style="color:{GOOD}">ok</span> ({} checks)"#,
                    h.checks.len()
                )
            } else {
                format!(
                    r#"<span style="color:{BAD}">{}</span>"#,
                    failing.join("<br>")
                )
            },
        );
    }
    if !s.running.is_empty() {
        row("Running", escape(&s.running.join(", ")));
    }
    html.push_str("</table></section>");
    html
}

pub fn render(v: &StatusView) -> String {
    let now = jiff::Timestamp::now().as_second();
    let mut html = String::from(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30"><title>Lifeboat status</title><style>
body{font-family:system-ui,sans-serif;margin:24px;color:#1b1f23;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0}.path{color:#57606a;margin:2px 0 8px}
section.source{border:1px solid #d0d7de;border-left:6px solid #1f9d55;border-radius:6px;padding:12px 16px;margin:14px 0}
section.failing{border-left-color:#d0312d}table{border-collapse:collapse;margin-top:6px}th{text-align:left;padding:2px 16px 2px 0;color:#57606a;font-weight:500}td{padding:2px 0}
.meta{color:#57606a}</style></head><body>"#,
    );
    html.push_str(&format!(
        r#"<h1>Lifeboat on {}</h1><p class="meta">version {} · up {} · {} backups in {}{}{}</p>"#,
        escape(&v.daemon.host),
        escape(v.daemon.version),
        age(v.daemon.uptime_s as i64),
        v.daemon.backups,
        escape(&v.daemon.repository),
        v.daemon
            .repository_bytes
            .map(|b| format!(" ({})", bytes(b)))
            .unwrap_or_default(),
        if v.daemon.ready { "" } else { " · starting" }
    ));
    if v.sources.is_empty() {
        html.push_str("<p>No sources are configured: add [[source]] tables to lifeboat.toml.</p>");
    }
    for s in &v.sources {
        html.push_str(&source_card(s, now));
    }
    let failing: Vec<_> = v
        .targets
        .iter()
        .filter(|t| t.error.is_some() || t.replica.as_ref().is_some_and(|r| r.failing))
        .collect();
    if !failing.is_empty() {
        html.push_str(&format!(
            r#"<h2 style="color:{BAD}">Failing targets</h2><ul>"#
        ));
        for t in failing {
            html.push_str(&format!(
                "<li>{} ({}): {}</li>",
                escape(&t.target),
                t.role,
                escape(t.error.as_deref().unwrap_or("its last sync failed"))
            ));
        }
        html.push_str("</ul>");
    }
    html.push_str("</body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_source_path_could_smuggle() {
        assert_eq!(
            escape(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }
}
