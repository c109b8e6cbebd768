//! The daemon's status page (`/`) loaded in headless Chromium: the DOM it builds and a
//! screenshot checked pixel by pixel, with one healthy source (a few backups, a passed
//! drill) and one failing (its database is gone); no page without a token; a source name
//! that carries markup is shown as text.

mod common;

use common::daemon::{free_port, sqlite_db, token_file, Daemon};
use common::Env;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The colours of src/daemon/page.rs.
const GOOD: [u8; 3] = [0x1f, 0x9d, 0x55];
const BAD: [u8; 3] = [0xd0, 0x31, 0x2d];

const EVIL: &str = r#"legacy <script>document.title="pwned"</script>"#;
const EVIL_ESCAPED: &str = "legacy &lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;";
/// As Chromium serializes the text node (quotes are not escaped in text).
const EVIL_IN_DOM: &str = r#"legacy &lt;script&gt;document.title="pwned"&lt;/script&gt;"#;

/// Chromium, or a clear failure: this test needs it (Debian's `chromium`).
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("LIFEBOAT_CHROMIUM") {
        return PathBuf::from(p);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "the status page test needs Chromium: apt-get install chromium (or set LIFEBOAT_CHROMIUM)"
    );
}

/// Run headless Chromium on `url` with `args`; its profile and HOME inside the test's
/// folder (it runs as root here: --no-sandbox). Killed after 2 minutes.
fn run_chromium(env: &Env, args: &[&str], url: &str) -> std::process::Output {
    let home = env.path("chromium-home");
    std::fs::create_dir_all(&home).unwrap();
    let profile = env.path("chromium-profile");
    let mut c = Command::new(chromium());
    c.env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-zygote",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("start chromium");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let until = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {args:?} did not finish in 2 minutes: {}",
                String::from_utf8_lossy(&t_err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::process::Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// An 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) as rows of RGB.
struct Picture {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

impl Picture {
    fn decode(png: &[u8]) -> Picture {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        let (mut pos, mut idat) = (8, Vec::new());
        let (mut width, mut height, mut channels) = (0usize, 0usize, 0usize);
        while pos + 8 <= png.len() {
            let len = u32::from_be_bytes(png[pos..pos + 4].try_into().unwrap()) as usize;
            let kind = &png[pos + 4..pos + 8];
            let data = &png[pos + 8..pos + 8 + len];
            match kind {
                b"IHDR" => {
                    width = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                    height = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                    assert_eq!(data[8], 8, "bit depth");
                    channels = match data[9] {
                        2 => 3,
                        6 => 4,
                        t => panic!("PNG colour type {t}"),
                    };
                    assert_eq!(data[12], 0, "interlaced PNG");
                }
                b"IDAT" => idat.extend_from_slice(data),
                b"IEND" => break,
                _ => {}
            }
            pos += 12 + len;
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..])
            .read_to_end(&mut raw)
            .expect("inflate");
        let stride = width * channels;
        assert_eq!(raw.len(), height * (stride + 1), "PNG data size");
        let mut prev = vec![0u8; stride];
        let mut rgb = Vec::with_capacity(width * height);
        for y in 0..height {
            let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
            let filter = line[0];
            let mut cur = line[1..].to_vec();
            for i in 0..stride {
                let a = if i >= channels { cur[i - channels] } else { 0 } as i16;
                let b = prev[i] as i16;
                let c = if i >= channels { prev[i - channels] } else { 0 } as i16;
                let add = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => (a + b) / 2,
                    4 => {
                        let p = a + b - c;
                        let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                        if pa <= pb && pa <= pc {
                            a
                        } else if pb <= pc {
                            b
                        } else {
                            c
                        }
                    }
                    f => panic!("PNG filter {f}"),
                };
                cur[i] = cur[i].wrapping_add(add as u8);
            }
            for px in cur.chunks(channels) {
                rgb.push([px[0], px[1], px[2]]);
            }
            prev = cur;
        }
        Picture { width, height, rgb }
    }

    /// (x, y) of every pixel of exactly `colour`.
    fn find(&self, colour: [u8; 3]) -> Vec<(usize, usize)> {
        (0..self.rgb.len())
            .filter(|i| self.rgb[*i] == colour)
            .map(|i| (i % self.width, i / self.width))
            .collect()
    }
}

/// Wait until /api/v1/status says `ok` (panics with the last answer).
fn wait_status(d: &mut Daemon, token: &str, ok: impl Fn(&serde_json::Value) -> bool) {
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let s = d.get_json("/api/v1/status", token);
        if ok(&s) {
            return;
        }
        assert!(
            Instant::now() < until,
            "status never got there: {s:#}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn source<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {status:#}"))
}

/// On a failed assertion, the screenshot is copied out of the test's folder (removed as
/// the test unwinds) and its path printed.
fn save_on_failure(path: &Path) -> impl Drop + '_ {
    struct Note<'a>(&'a Path);
    impl Drop for Note<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() && self.0.is_file() {
                let kept = std::env::temp_dir()
                    .join(format!("lifeboat-status-page-{}.png", std::process::id()));
                match std::fs::copy(self.0, &kept) {
                    Ok(_) => eprintln!("the screenshot: {}", kept.display()),
                    Err(e) => eprintln!("the screenshot {}: {e}", self.0.display()),
                }
            }
        }
    }
    Note(path)
}

#[test]
fn status_page_in_headless_chromium() {
    // Fail at once, with the reason, when Chromium is missing.
    chromium();
    let env = Env::new();
    let db = sqlite_db(&env, "orders.db", 300);
    // History: three backups, 5, 3 and 1 hours old (the timeline spans them).
    let now = jiff::Timestamp::now();
    let mut ids = Vec::new();
    for hours in [5, 3, 1] {
        let t = now - jiff::SignedDuration::from_hours(hours);
        let v = env.json(&["backup", db.to_str().unwrap(), "--time", &t.to_string()]);
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let newest = ids.last().unwrap().clone();
    let gone = env.path("legacy.db"); // never created
    let (tok_file, token) = token_file(&env, "ops");
    let port = free_port();
    let config = format!(
        r#"repo = "{repo}"
[daemon]
listen = "127.0.0.1:{port}"
state_dir = "{state}"
# /tmp may be fuller than the default 85%: the healthy source stays healthy.
storage_warn = 0.99
[[daemon.token]]
name = "ops"
file = "{tok}"
scopes = ["read"]
[[source]]
name = "orders"
path = "{db}"
schedule = "every 6h"
drill = "every 1h"
health = "every 2s"
[[source]]
name = '{EVIL}'
path = "{gone}"
schedule = "every 6h"
health = "every 2s"
"#,
        repo = env.repo().display(),
        state = env.path("state").display(),
        tok = tok_file.display(),
        db = db.display(),
        gone = gone.display()
    );
    let mut d = Daemon::start(&env, &config, port);
    wait_status(&mut d, &token, |s| {
        let (o, l) = (source(s, "orders"), source(s, EVIL));
        o["health"]["ok"] == true
            && o["last_drill"]["ok"] == true
            && o["last_drill"]["rto_ms"].is_u64()
            && l["health"]["ok"] == false
            && l["last_error"].is_string()
    });
    let status = d.get_json("/api/v1/status", &token);
    let orders = source(&status, "orders");
    assert_eq!(orders["backups"], 3, "no backup was due: {orders:#}");
    assert_eq!(orders["last_backup"]["id"], newest.as_str());
    let rto_ms = orders["last_drill"]["rto_ms"].as_u64().unwrap();
    let failing: Vec<String> = source(&status, EVIL)["health"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            format!(
                "{}: {}",
                c["name"].as_str().unwrap(),
                c["detail"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        failing,
        ["newest backup: there is no backup of this source"],
        "{status:#}"
    );

    // Plain HTTP: no token, no page; the markup of a name is escaped.
    let anon = d.get("/", None);
    assert_eq!(anon.status, 401, "{}", anon.text());
    // A browser is asked for credentials: Basic in a header of its own (Chromium reads
    // only the first challenge of each header).
    let challenges: Vec<&str> = anon
        .headers
        .iter()
        .filter(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic "))
            && challenges.iter().all(|c| !c.contains(',')),
        "WWW-Authenticate: {challenges:?}"
    );
    let raw = d.get("/", Some(&token));
    assert_eq!(raw.status, 200);
    let html = raw.text();
    assert!(html.contains(EVIL_ESCAPED), "{html}");
    assert!(
        !html.contains("<script"),
        "markup of a name in the page:\n{html}"
    );

    // Chromium, with the token as the Basic password in the URL.
    let url = format!("http://ops:{token}@127.0.0.1:{port}/");
    let out = run_chromium(&env, &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let why = || {
        format!(
            "chromium {}:\n{dom}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(out.status.success(), "{}", why());
    assert!(dom.contains("<title>Lifeboat status</title>"), "{}", why());
    assert!(
        !dom.contains("pwned</title>"),
        "a name's script ran: {}",
        why()
    );
    assert!(dom.contains("<h2>orders</h2>"), "{}", why());
    assert!(
        dom.contains(&format!("<h2>{EVIL_IN_DOM}</h2>")),
        "{}",
        why()
    );
    assert!(dom.contains("Restorable"), "{}", why());
    assert!(dom.contains(&newest), "newest backup {newest}: {}", why());
    let rto = format!("RTO {:.1} s", rto_ms as f64 / 1000.0);
    assert!(
        dom.contains(r#"<span style="color:#1f9d55">passed</span>"#) && dom.contains(&rto),
        "drill passed with {rto}: {}",
        why()
    );
    assert!(
        dom.contains("newest backup: there is no backup of this source"),
        "{}",
        why()
    );
    assert!(
        dom.contains(r#"<section class="source failing">"#),
        "{}",
        why()
    );

    // The screenshot.
    let shot = env.path("status.png");
    let _note = save_on_failure(&shot);
    let out = run_chromium(
        &env,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,900",
        ],
        &url,
    );
    assert!(
        out.status.success() && shot.is_file(),
        "chromium {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let pic = Picture::decode(&std::fs::read(&shot).unwrap());
    assert_eq!((pic.width, pic.height), (1200, 900));
    // The healthy source's restorable window: a wide green band in the upper half, away
    // from the card's left border.
    let band: Vec<_> = pic
        .find(GOOD)
        .into_iter()
        .filter(|(x, y)| *x > 80 && *y < 450)
        .collect();
    let band_width =
        band.iter().map(|p| p.0).max().unwrap_or(0) - band.iter().map(|p| p.0).min().unwrap_or(0);
    assert!(
        band.len() > 5000 && band_width > 500,
        "the green window band: {} pixels, {band_width} wide ({})",
        band.len(),
        shot.display()
    );
    // The failing source: its red border and text, below the healthy one.
    let red = pic.find(BAD);
    assert!(
        red.len() > 300,
        "{} red pixels ({})",
        red.len(),
        shot.display()
    );
    let top_red = red.iter().map(|p| p.1).min().unwrap();
    let band_bottom = band.iter().map(|p| p.1).max().unwrap();
    assert!(
        top_red > band_bottom,
        "the failing card (from y={top_red}) comes after the healthy one's band (to y={band_bottom})"
    );
    let inked = pic.rgb.iter().filter(|p| **p != [255, 255, 255]).count();
    assert!(
        inked > pic.rgb.len() / 50,
        "a nearly blank page: {inked} non-white pixels ({})",
        shot.display()
    );
    let s = d.stop(Duration::from_secs(30));
    assert!(s.success(), "{s}");
}
