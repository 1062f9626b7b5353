//! Asking the user for secrets, as S3QL does: on a terminal a prompt without echo; otherwise
//! one line from standard input (in S3QL's order: backend login, backend password,
//! passphrase), so scripts can pipe them in.

use std::io::{BufRead, IsTerminal};

use s3ql_core::Passphrase;

use crate::exit::{code, ExitError};

/// Whether standard input is a terminal.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
}

/// Reads a secret: without echo after `prompt` on a terminal, else one line of stdin.
/// End of input is an error naming `what`.
pub fn secret(prompt: &str, what: &str) -> Result<String, ExitError> {
    if interactive() {
        return rpassword::prompt_password(prompt)
            .map_err(|e| ExitError::new(code::GENERIC, format!("cannot read the {what}: {e}")));
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line).map_err(|e| {
        ExitError::new(
            code::GENERIC,
            format!("cannot read the {what} from stdin: {e}"),
        )
    })?;
    if read == 0 {
        return Err(ExitError::new(
            code::GENERIC,
            format!("no {what} given: standard input is not a terminal and is empty"),
        ));
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The passphrase of an existing encrypted filesystem: authinfo2's `fs-passphrase` if set,
/// else asked for.
pub fn existing_passphrase(from_authinfo: Option<&str>) -> Result<Passphrase, ExitError> {
    let text = match from_authinfo {
        Some(p) => p.to_owned(),
        None => secret("Enter file system encryption passphrase: ", "passphrase")?,
    };
    Ok(Passphrase(text.into_bytes()))
}

/// A new passphrase (never from authinfo2): on a terminal asked twice and compared
/// (mismatch is exit 1), else one line of stdin. An empty passphrase is refused.
pub fn new_passphrase() -> Result<Passphrase, ExitError> {
    let first = secret("Enter new encryption passphrase: ", "new passphrase")?;
    if interactive() {
        let again = secret("Confirm new encryption passphrase: ", "new passphrase")?;
        if again != first {
            return Err(ExitError::new(
                code::GENERIC,
                "the passphrases do not match",
            ));
        }
    }
    if first.is_empty() {
        return Err(ExitError::new(
            code::GENERIC,
            "the passphrase must not be empty",
        ));
    }
    Ok(Passphrase(first.into_bytes()))
}
