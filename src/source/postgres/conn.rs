//! Where a PostgreSQL database is and how to reach it: a `postgres://` URI, completed the way
//! libpq completes it (PG* variables, then defaults), and the environment of the client
//! programs Lifeboat runs (`pg_dump`, `pg_restore`, `psql`).
//!
//! The password never reaches a command line, a log, a manifest or an error: a password in
//! the URI is handed to the clients in a private password file (`PGPASSFILE`, mode 0600, in
//! a folder of Lifeboat's own), and every spelling of the target Lifeboat prints or stores
//! is the URI without it.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Whether `text` names a PostgreSQL database rather than a file.
pub fn is_postgres_uri(text: &str) -> bool {
    let lower = text.get(..13).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// A PostgreSQL target: the URI as given (password removed) and the password, if any.
#[derive(Clone)]
pub struct PgTarget {
    /// The URI without its password; what the clients get as `--dbname`.
    uri: url::Url,
    password: Option<Zeroizing<String>>,
    /// `sslpassword`: the passphrase of the client's key, handed over in a service file.
    ssl_password: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgTarget({})", self.uri)
    }
}

impl PgTarget {
    pub fn parse(text: &str) -> Result<PgTarget> {
        if !is_postgres_uri(text) {
            return Err(Error::usage(format!(
                "'{}' is not a PostgreSQL URI",
                redact_uri_text(text)
            ))
            .hint("write it as postgres://USER@HOST:PORT/DATABASE"));
        }
        let mut uri = url::Url::parse(text).map_err(|e| {
            Error::usage(format!(
                "cannot read the PostgreSQL URI '{}': {e}",
                redact_uri_text(text)
            ))
            .hint("write it as postgres://USER@HOST:PORT/DATABASE; percent-encode special characters in the user name and password (@ is %40)")
        })?;
        let password = match uri.password() {
            Some(p) => Some(Zeroizing::new(
                percent_encoding_decode(p).map_err(|_| {
                    Error::usage("the password in the PostgreSQL URI is not valid UTF-8 after percent-decoding")
                })?,
            )),
            None => None,
        };
        let _ = uri.set_password(None);
        // libpq also takes the password (and the client key's passphrase) as parameters:
        // moved out the same way. The other parameters are kept byte for byte (libpq does
        // not read `+` as a space, so they are not re-encoded).
        let mut password = password;
        let mut ssl_password = None;
        if let Some(query) = uri.query().map(str::to_string) {
            let mut kept = Vec::new();
            for part in query.split('&') {
                let (key, value) = part.split_once('=').unwrap_or((part, ""));
                let key = percent_encoding_decode(key).unwrap_or_default();
                let value = || Zeroizing::new(percent_encoding_decode(value).unwrap_or_default());
                match key.as_str() {
                    "password" => {
                        if password.is_none() {
                            password = Some(value());
                        }
                    }
                    "sslpassword" => ssl_password = Some(value()),
                    _ => kept.push(part),
                }
            }
            let kept = kept.join("&");
            uri.set_query((!kept.is_empty()).then_some(kept.as_str()));
        }
        if uri.scheme() != "postgres" && uri.scheme() != "postgresql" {
            return Err(Error::usage("a PostgreSQL URI starts with postgres://"));
        }
        Ok(PgTarget {
            uri,
            password,
            ssl_password,
        })
    }

    /// The database named in the URI, else `PGDATABASE`, else the user name (libpq's rule).
    pub fn database(&self) -> String {
        let path = self.uri.path().trim_start_matches('/');
        if !path.is_empty() {
            return percent_encoding_decode(path).unwrap_or_else(|_| path.to_string());
        }
        std::env::var("PGDATABASE")
            .ok()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.user())
    }

    /// Whether the URI names a database (`postgres://host/` does not).
    pub fn names_database(&self) -> bool {
        !self.uri.path().trim_start_matches('/').is_empty()
    }

    /// The user: from the URI (or its `user=` parameter), else `PGUSER`, else the
    /// operating-system user.
    pub fn user(&self) -> String {
        if !self.uri.username().is_empty() {
            let u = self.uri.username();
            return percent_encoding_decode(u).unwrap_or_else(|_| u.to_string());
        }
        if let Some((_, u)) = self.uri.query_pairs().find(|(k, _)| k == "user") {
            return u.into_owned();
        }
        std::env::var("PGUSER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(crate::host::username)
    }

    /// `host:port`: the URI's (or its `host=` parameter), else `PGHOST`/`PGPORT`, else the
    /// local socket and 5432.
    pub fn server(&self) -> String {
        let param = |name: &str| {
            self.uri
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let host = match self.uri.host_str() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => param("host")
                .or_else(|| std::env::var("PGHOST").ok())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into()),
        };
        let port = self
            .uri
            .port()
            .map(|p| p.to_string())
            .or_else(|| param("port"))
            .or_else(|| std::env::var("PGPORT").ok())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "5432".into());
        format!("{host}:{port}")
    }

    /// How backups of this database are named and found (`--source`): the URI with user,
    /// host, port and database filled in, without password or parameters.
    pub fn source_key(&self) -> String {
        let db = if self.names_database() {
            self.database()
        } else {
            String::new()
        };
        format!(
            "postgres://{}@{}/{}",
            encode_part(&self.user()),
            self.server(),
            encode_part(&db)
        )
    }

    /// The same server and user, database `db`.
    pub fn with_database(&self, db: &str) -> PgTarget {
        let mut t = self.clone();
        t.uri.set_path(&format!("/{}", encode_part(db)));
        t
    }

    /// The URI without password, for messages.
    pub fn display(&self) -> String {
        self.uri.to_string()
    }

    /// The URI for `--dbname` of the clients: [`PgTarget::display`], naming the service of
    /// the private service file when there is a key passphrase to hand over.
    pub fn conn_uri(&self) -> String {
        if self.ssl_password.is_none() {
            return self.display();
        }
        let mut u = self.uri.clone();
        let query = match u.query() {
            Some(q) if !q.is_empty() => format!("{q}&service={SERVICE}"),
            _ => format!("service={SERVICE}"),
        };
        u.set_query(Some(&query));
        u.to_string()
    }

    /// The environment for a client program: the password file when the URI carries a
    /// password. Create it with [`ClientEnv::new`] and keep it until the program exits.
    pub fn client_env(&self, dir: &Path) -> Result<ClientEnv> {
        ClientEnv::new(self, dir)
    }
}

/// The variables a client program runs with. The password file is deleted on drop.
pub struct ClientEnv {
    pub vars: Vec<(String, PathBuf)>,
    /// Variables removed from the child's environment.
    pub removed: Vec<&'static str>,
    passfile: Option<PathBuf>,
    service_file: Option<PathBuf>,
}

/// The service of the private service file (`PGSERVICEFILE`).
const SERVICE: &str = "lifeboat";

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    super::private_file(path)?
        .write_all(bytes)
        .map_err(|e| Error::io("cannot write", path, e))
}

impl ClientEnv {
    fn new(target: &PgTarget, dir: &Path) -> Result<ClientEnv> {
        let mut env = ClientEnv {
            vars: Vec::new(),
            removed: Vec::new(),
            passfile: None,
            service_file: None,
        };
        if let Some(ssl_password) = &target.ssl_password {
            let path = dir.join(format!("pg_service-{}.conf", std::process::id()));
            let text = Zeroizing::new(format!(
                "[{SERVICE}]\nsslpassword={}\n",
                ssl_password.as_str()
            ));
            write_private(&path, text.as_bytes())?;
            env.vars.push(("PGSERVICEFILE".into(), path.clone()));
            env.service_file = Some(path);
        }
        let Some(password) = &target.password else {
            return Ok(env);
        };
        // The pgpass format: fields separated by ':', with '\' and ':' escaped.
        let mut line = Zeroizing::new(String::from("*:*:*:*:"));
        for c in password.chars() {
            if c == '\\' || c == ':' {
                line.push('\\');
            }
            line.push(c);
        }
        line.push('\n');
        let path = dir.join(format!("pgpass-{}", std::process::id()));
        write_private(&path, line.as_bytes())?;
        env.vars.push(("PGPASSFILE".into(), path.clone()));
        // A PGPASSWORD in the environment would win over the URI's password.
        env.removed.push("PGPASSWORD");
        env.passfile = Some(path);
        Ok(env)
    }

    /// Apply to a command.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        for k in &self.removed {
            cmd.env_remove(k);
        }
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
    }
}

impl Drop for ClientEnv {
    fn drop(&mut self) {
        for p in [&self.passfile, &self.service_file].into_iter().flatten() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn percent_encoding_decode(s: &str) -> std::result::Result<String, std::string::FromUtf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
}

/// `uri` (password and all) naming database `db` instead: what `--all-databases` backs up.
pub fn with_database_keeping_password(uri: &str, db: &str) -> Result<String> {
    let mut u = url::Url::parse(uri)
        .map_err(|e| Error::usage(format!("cannot read the PostgreSQL URI: {e}")))?;
    u.set_path(&format!("/{}", encode_part(db)));
    Ok(u.to_string())
}

/// Percent-encode a user or database name for a URI.
fn encode_part(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A URI-like text with anything between `://user:` and `@` replaced, for messages about
/// text that did not parse.
pub fn redact_uri_text(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_string();
    };
    let rest = &text[scheme_end + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &text[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_taken_out_of_every_spelling() {
        let t =
            PgTarget::parse("postgres://app:s%40cret%3Apw@db.example:6543/shop?sslmode=require")
                .unwrap();
        assert_eq!(t.password.as_deref().map(|p| p.as_str()), Some("s@cret:pw"));
        assert_eq!(
            t.display(),
            "postgres://app@db.example:6543/shop?sslmode=require"
        );
        assert_eq!(t.source_key(), "postgres://app@db.example:6543/shop");
        assert_eq!(t.database(), "shop");
        assert_eq!(t.server(), "db.example:6543");
        assert!(!format!("{t:?}").contains("cret"));
    }

    #[test]
    fn a_password_parameter_is_taken_out_too() {
        let t = PgTarget::parse("postgres://app@db/shop?password=p%40ss&sslmode=require").unwrap();
        assert_eq!(t.password.as_deref().map(|p| p.as_str()), Some("p@ss"));
        assert_eq!(t.display(), "postgres://app@db/shop?sslmode=require");
        let t = PgTarget::parse("postgres://app@db/shop?password=x").unwrap();
        assert_eq!(t.display(), "postgres://app@db/shop");
    }

    #[test]
    fn other_parameters_are_kept_as_written_and_the_key_passphrase_moves_out() {
        let t = PgTarget::parse(
            "postgres://u@h/d?options=-c%20statement_timeout%3D0&password=pw&sslpassword=kp",
        )
        .unwrap();
        assert_eq!(
            t.display(),
            "postgres://u@h/d?options=-c%20statement_timeout%3D0"
        );
        assert_eq!(
            t.conn_uri(),
            "postgres://u@h/d?options=-c%20statement_timeout%3D0&service=lifeboat"
        );
        let dir = tempfile::tempdir().unwrap();
        let env = t.client_env(dir.path()).unwrap();
        let service = &env
            .vars
            .iter()
            .find(|(k, _)| k == "PGSERVICEFILE")
            .unwrap()
            .1;
        assert_eq!(
            std::fs::read_to_string(service).unwrap(),
            "[lifeboat]\nsslpassword=kp\n"
        );
        assert_eq!(
            redact_uri_text("postgres://a:hunter@2@db:x/s"),
            "postgres://a:***@db:x/s"
        );
    }

    #[test]
    fn the_password_file_escapes_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let t = PgTarget::parse("postgres://u:a%5Cb%3Ac@h/d").unwrap();
        let env = t.client_env(dir.path()).unwrap();
        let path = env.vars[0].1.clone();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "*:*:*:*:a\\\\b\\:c\n"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(env);
        assert!(!path.exists(), "the password file outlived its command");
    }

    #[test]
    fn with_database_keeps_server_and_user() {
        let t = PgTarget::parse("postgresql://u@h:1/a").unwrap();
        assert_eq!(t.with_database("b c").display(), "postgresql://u@h:1/b%20c");
        assert_eq!(t.with_database("b c").database(), "b c");
        assert!(!PgTarget::parse("postgres://u@h:1/")
            .unwrap()
            .names_database());
    }

    #[test]
    fn unparsable_text_is_redacted_in_messages() {
        assert_eq!(
            redact_uri_text("postgres://u:pw@h:x/d"),
            "postgres://u:***@h:x/d"
        );
        let e = PgTarget::parse("postgres://u:pw@h:notaport/d").unwrap_err();
        assert!(!e.to_string().contains("pw@"), "{e}");
    }
}
