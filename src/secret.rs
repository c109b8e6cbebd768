//! Passphrases: where they come from (variable, file, command, prompt) and how they are held
//! (zeroed on drop, never printed: `Debug` is redacted).

use crate::error::{Error, ErrorKind, Result};
use std::io::IsTerminal;
use std::path::PathBuf;
use zeroize::{Zeroize, Zeroizing};

/// A passphrase, wiped from memory when dropped.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn new(s: String) -> Passphrase {
        Passphrase(Zeroizing::new(s))
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(redacted)")
    }
}

/// Where to get a passphrase, in order of precedence.
#[derive(Debug, Clone, Default)]
pub struct PassphraseSource {
    /// `--password-file` / `LIFEBOAT_PASSWORD_FILE`: the first line of a file.
    pub file: Option<PathBuf>,
    /// `--password-command` / `LIFEBOAT_PASSWORD_COMMAND`: the first line a command prints.
    pub command: Option<String>,
    /// The name of the variable holding the passphrase itself (`LIFEBOAT_PASSWORD`).
    pub env_var: &'static str,
}

impl PassphraseSource {
    /// Get the passphrase; `confirm` asks twice when prompting (for a new passphrase).
    pub fn get(&self, prompt: &str, confirm: bool) -> Result<Passphrase> {
        if let Some(path) = &self.file {
            let text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| Error::io("cannot read password file", path, e))?,
            );
            return non_empty(
                first_line(&text),
                &format!("password file {}", path.display()),
            );
        }
        if let Some(cmd) = &self.command {
            let mut out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| Error::usage(format!("cannot run the password command: {e}")))?;
            if !out.status.success() {
                // The command itself is not repeated: it may embed a secret.
                return Err(Error::new(
                    ErrorKind::Auth,
                    format!("the password command failed ({})", out.status),
                ));
            }
            let text = Zeroizing::new(String::from_utf8_lossy(&out.stdout).into_owned());
            out.stdout.zeroize();
            return non_empty(first_line(&text), "the password command's output");
        }
        if let Ok(p) = std::env::var(self.env_var).map(Zeroizing::new) {
            return non_empty(p.as_str(), self.env_var);
        }
        if !std::io::stdin().is_terminal() {
            return Err(Error::new(
                ErrorKind::Auth,
                "this repository is encrypted and no passphrase was given",
            )
            .hint(format!(
                "set {} or use --password-file / --password-command",
                self.env_var
            )));
        }
        let first = Passphrase::new(
            rpassword::prompt_password(format!("{prompt}: "))
                .map_err(|e| Error::usage(format!("cannot read the passphrase: {e}")))?,
        );
        if confirm {
            let again = Passphrase::new(
                rpassword::prompt_password("Enter it again: ")
                    .map_err(|e| Error::usage(format!("cannot read the passphrase: {e}")))?,
            );
            if first.as_bytes() != again.as_bytes() {
                return Err(Error::usage(
                    "the two passphrases differ; nothing was changed",
                ));
            }
        }
        non_empty(&first.0, "the passphrase")
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn non_empty(p: &str, from: &str) -> Result<Passphrase> {
    if p.is_empty() {
        return Err(Error::usage(format!("{from} is empty")).hint("a passphrase cannot be empty"));
    }
    Ok(Passphrase::new(p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_and_sources_work() {
        let p = Passphrase::new("hunter2".into());
        assert!(!format!("{p:?}").contains("hunter2"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\nsecond line\n").unwrap();
        let src = PassphraseSource {
            file: Some(f),
            command: None,
            env_var: "LIFEBOAT_TEST_UNSET_VARIABLE",
        };
        assert_eq!(src.get("p", false).unwrap().as_bytes(), b"from-file");
        let src = PassphraseSource {
            file: None,
            command: Some("echo from-command".into()),
            env_var: "LIFEBOAT_TEST_UNSET_VARIABLE",
        };
        assert_eq!(src.get("p", false).unwrap().as_bytes(), b"from-command");
        let src = PassphraseSource {
            file: None,
            command: Some("exit 3".into()),
            env_var: "LIFEBOAT_TEST_UNSET_VARIABLE",
        };
        assert_eq!(src.get("p", false).unwrap_err().kind, ErrorKind::Auth);
    }
}
