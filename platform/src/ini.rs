//! A reader for the INI dialect of Python's `configparser.ConfigParser` (the format of
//! S3QL's authinfo2 file), with its default settings: `key = value` or `key: value`,
//! full-line `#`/`;` comments, case-insensitive keys, indented continuation lines, a
//! `[DEFAULT]` section inherited by every other section, strict duplicate checks, and
//! "basic interpolation" on read (`%%` is a literal `%`, `%(key)s` the value of another key
//! of the same section, any other `%` is an error).
//!
//! Why not the `config` crate (which DESIGN.md §2 suggests for layered settings): its INI
//! format (rust-ini) has no `%%` unescaping or `%(key)s` interpolation, does not make
//! duplicate sections and keys an error, and does not inherit `[DEFAULT]`; and authinfo2
//! sections are selected by a string-prefix match of the storage URL, not by name, which no
//! layered-configuration crate expresses. Reading authinfo2 like S3QL does therefore needs
//! this small parser; the layering (command line over authinfo2 over built-in default) is a
//! handful of `Option::or` calls in `settings.rs`.

use std::fmt;

/// The name of the section whose keys every other section inherits.
pub const DEFAULT_SECTION: &str = "DEFAULT";

/// Maximum depth of `%(key)s` references (Python's `MAX_INTERPOLATION_DEPTH`).
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// A syntax error, a duplicate, or a failed interpolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IniError {
    /// A line that is neither a section header, an option, a comment nor a continuation.
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A section header appeared twice.
    DuplicateSection {
        /// 1-based line number of the second header.
        line: usize,
        /// The section name.
        section: String,
    },
    /// A key appeared twice in one section (keys compare case-insensitively).
    DuplicateKey {
        /// 1-based line number of the second occurrence.
        line: usize,
        /// The section name.
        section: String,
        /// The key (lower case).
        key: String,
    },
    /// A `%` that is not `%%` or `%(key)s`, or a reference to a missing key.
    Interpolation {
        /// The section name.
        section: String,
        /// The key whose value could not be interpolated.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

impl fmt::Display for IniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IniError::Syntax { line, reason } => write!(f, "line {line}: {reason}"),
            IniError::DuplicateSection { line, section } => {
                write!(f, "line {line}: section [{section}] appears twice")
            }
            IniError::DuplicateKey { line, section, key } => {
                write!(
                    f,
                    "line {line}: key '{key}' appears twice in section [{section}]"
                )
            }
            IniError::Interpolation {
                section,
                key,
                reason,
            } => {
                write!(
                    f,
                    "key '{key}' in section [{section}]: {reason} (write a literal % as %%)"
                )
            }
        }
    }
}

impl std::error::Error for IniError {}

/// One section: its name and its own `(key, raw value)` pairs in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Section {
    name: String,
    entries: Vec<(String, String)>,
}

/// A parsed INI document; values are returned interpolated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    defaults: Vec<(String, String)>,
    sections: Vec<Section>,
}

impl Ini {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, IniError> {
        let mut ini = Ini::default();
        // Index of the current section: None = before any header, Some(None) = DEFAULT.
        let mut current: Option<Option<usize>> = None;
        // Key currently open for continuation lines, and its indentation.
        let mut open_key: Option<(String, usize)> = None;
        // Pending empty lines inside a multi-line value.
        let mut pending_blank = 0usize;

        for (idx, raw) in text.lines().enumerate() {
            let lineno = idx + 1;
            let stripped = raw.trim();
            if stripped.starts_with('#') || stripped.starts_with(';') {
                continue;
            }
            if stripped.is_empty() {
                if open_key.is_some() {
                    pending_blank += 1;
                }
                continue;
            }
            let indent = raw.len() - raw.trim_start().len();
            if let (Some(sect), Some((key, key_indent))) = (current, &open_key) {
                if indent > *key_indent {
                    let key = key.clone();
                    let entries = ini.entries_mut(sect);
                    let Some((_, value)) = entries.iter_mut().find(|(k, _)| *k == key) else {
                        return Err(IniError::Syntax {
                            line: lineno,
                            reason: "continuation line without a key",
                        });
                    };
                    for _ in 0..pending_blank {
                        value.push('\n');
                    }
                    pending_blank = 0;
                    value.push('\n');
                    value.push_str(stripped);
                    continue;
                }
            }
            open_key = None;
            pending_blank = 0;

            if let Some(inner) = stripped.strip_prefix('[') {
                let Some(end) = inner.find(']') else {
                    return Err(IniError::Syntax {
                        line: lineno,
                        reason: "unterminated section header",
                    });
                };
                let name = &inner[..end];
                if name.is_empty() {
                    return Err(IniError::Syntax {
                        line: lineno,
                        reason: "empty section name",
                    });
                }
                if name == DEFAULT_SECTION {
                    current = Some(None);
                } else if ini.sections.iter().any(|s| s.name == name) {
                    return Err(IniError::DuplicateSection {
                        line: lineno,
                        section: name.to_owned(),
                    });
                } else {
                    ini.sections.push(Section {
                        name: name.to_owned(),
                        entries: Vec::new(),
                    });
                    current = Some(Some(ini.sections.len() - 1));
                }
                continue;
            }

            let Some(sect) = current else {
                return Err(IniError::Syntax {
                    line: lineno,
                    reason: "key before the first [section] header",
                });
            };
            let Some(pos) = stripped.find(['=', ':']) else {
                return Err(IniError::Syntax {
                    line: lineno,
                    reason: "expected 'key = value' or 'key: value'",
                });
            };
            let key = stripped[..pos].trim().to_lowercase();
            if key.is_empty() {
                return Err(IniError::Syntax {
                    line: lineno,
                    reason: "empty key",
                });
            }
            let value = stripped[pos + 1..].trim().to_owned();
            let section_name = match sect {
                None => DEFAULT_SECTION.to_owned(),
                Some(i) => ini.sections[i].name.clone(),
            };
            let entries = ini.entries_mut(sect);
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(IniError::DuplicateKey {
                    line: lineno,
                    section: section_name,
                    key,
                });
            }
            entries.push((key.clone(), value));
            open_key = Some((key, indent));
        }
        Ok(ini)
    }

    fn entries_mut(&mut self, sect: Option<usize>) -> &mut Vec<(String, String)> {
        match sect {
            None => &mut self.defaults,
            Some(i) => &mut self.sections[i].entries,
        }
    }

    /// The names of the sections other than `[DEFAULT]`, in file order.
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|s| s.name.as_str())
    }

    fn raw(&self, section: &str, key: &str) -> Option<&str> {
        let own = self.sections.iter().find(|s| s.name == section)?;
        own.entries
            .iter()
            .chain(self.defaults.iter())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The interpolated value of `key` (any case) in `section`, inheriting `[DEFAULT]`.
    pub fn get(&self, section: &str, key: &str) -> Result<Option<String>, IniError> {
        let key = key.to_lowercase();
        match self.raw(section, &key) {
            None => Ok(None),
            Some(raw) => self.interpolate(section, &key, raw, 1).map(Some),
        }
    }

    /// All interpolated `(key, value)` pairs of `section`: its own keys in file order, then
    /// the inherited `[DEFAULT]` keys it does not override (Python's order).
    pub fn items(&self, section: &str) -> Result<Vec<(String, String)>, IniError> {
        let Some(own) = self.sections.iter().find(|s| s.name == section) else {
            return Ok(Vec::new());
        };
        let mut keys: Vec<&str> = own.entries.iter().map(|(k, _)| k.as_str()).collect();
        for (k, _) in &self.defaults {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
        keys.into_iter()
            .map(|k| {
                let v = self.get(section, k)?.unwrap_or_default();
                Ok((k.to_owned(), v))
            })
            .collect()
    }

    fn interpolate(
        &self,
        section: &str,
        key: &str,
        raw: &str,
        depth: usize,
    ) -> Result<String, IniError> {
        let err = |reason: String| IniError::Interpolation {
            section: section.to_owned(),
            key: key.to_owned(),
            reason,
        };
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err(err("references nested too deeply (a loop?)".to_owned()));
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(pos) = rest.find('%') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                out.push('%');
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('(') {
                let Some(close) = tail.find(")s") else {
                    return Err(err(format!("bad interpolation syntax in '{raw}'")));
                };
                let name = tail[..close].to_lowercase();
                let Some(target) = self.raw(section, &name) else {
                    return Err(err(format!(
                        "'%({name})s' refers to a key that does not exist"
                    )));
                };
                out.push_str(&self.interpolate(section, key, target, depth + 1)?);
                rest = &tail[close + 2..];
            } else {
                return Err(err("'%' must be followed by '%' or '('".to_owned()));
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Ini {
        Ini::parse(s).expect("valid ini")
    }

    #[test]
    fn both_delimiters_comments_and_case() {
        let ini = parse("# comment\n; other\n[s]\nKey: v1\nother = a = b\n  more\nThird:x:y\n");
        assert_eq!(ini.get("s", "KEY").expect("ok").as_deref(), Some("v1"));
        // An indented line continues the previous value.
        assert_eq!(
            ini.get("s", "other").expect("ok").as_deref(),
            Some("a = b\nmore")
        );
        assert_eq!(ini.get("s", "third").expect("ok").as_deref(), Some("x:y"));
        assert_eq!(ini.get("s", "missing").expect("ok"), None);
        assert_eq!(ini.sections().collect::<Vec<_>>(), ["s"]);
    }

    #[test]
    fn inline_hash_is_part_of_the_value() {
        let ini = parse("[s]\npassword = abc#def ;x\n");
        assert_eq!(
            ini.get("s", "password").expect("ok").as_deref(),
            Some("abc#def ;x")
        );
    }

    #[test]
    fn empty_values_and_continuations() {
        let ini = parse("[s]\na =\nb = first\n  second\n\n  third\nc = 1\n");
        assert_eq!(ini.get("s", "a").expect("ok").as_deref(), Some(""));
        assert_eq!(
            ini.get("s", "b").expect("ok").as_deref(),
            Some("first\nsecond\n\nthird")
        );
        assert_eq!(ini.get("s", "c").expect("ok").as_deref(), Some("1"));
    }

    #[test]
    fn percent_escapes_and_references() {
        let ini = parse("[s]\npw = 100%%sure\nbase = /x\nurl = local://%(BASE)s/y\n");
        assert_eq!(ini.get("s", "pw").expect("ok").as_deref(), Some("100%sure"));
        assert_eq!(
            ini.get("s", "url").expect("ok").as_deref(),
            Some("local:///x/y")
        );
        let bad = parse("[s]\npw = 100%sure\n");
        assert!(matches!(
            bad.get("s", "pw"),
            Err(IniError::Interpolation { .. })
        ));
        let missing = parse("[s]\npw = %(nope)s\n");
        assert!(matches!(
            missing.get("s", "pw"),
            Err(IniError::Interpolation { .. })
        ));
        let looped = parse("[s]\na = %(b)s\nb = %(a)s\n");
        assert!(matches!(
            looped.get("s", "a"),
            Err(IniError::Interpolation { .. })
        ));
    }

    #[test]
    fn default_section_is_inherited() {
        let ini = parse("[DEFAULT]\nlogin = me\npw = d\n[a]\npw = own\n[b]\n");
        assert_eq!(ini.get("a", "login").expect("ok").as_deref(), Some("me"));
        assert_eq!(ini.get("a", "pw").expect("ok").as_deref(), Some("own"));
        assert_eq!(
            ini.items("a").expect("ok"),
            vec![
                ("pw".to_owned(), "own".to_owned()),
                ("login".to_owned(), "me".to_owned())
            ]
        );
        assert_eq!(ini.items("b").expect("ok").len(), 2);
        assert_eq!(ini.sections().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn duplicates_are_errors() {
        assert!(matches!(
            Ini::parse("[a]\n[a]\n"),
            Err(IniError::DuplicateSection { line: 2, .. })
        ));
        assert!(matches!(
            Ini::parse("[a]\nx=1\nX: 2\n"),
            Err(IniError::DuplicateKey { line: 3, .. })
        ));
        assert!(matches!(
            Ini::parse("[DEFAULT]\nx=1\n[DEFAULT]\nx=2\n"),
            Err(IniError::DuplicateKey { .. })
        ));
        // The same key in different sections is fine, and so is a repeated [DEFAULT].
        assert!(Ini::parse("[a]\nx=1\n[b]\nx=1\n[DEFAULT]\ny=1\n[DEFAULT]\nz=1\n").is_ok());
    }

    #[test]
    fn syntax_errors() {
        assert!(matches!(
            Ini::parse("x = 1\n"),
            Err(IniError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            Ini::parse("[a]\njust words\n"),
            Err(IniError::Syntax { line: 2, .. })
        ));
        assert!(matches!(Ini::parse("[a\n"), Err(IniError::Syntax { .. })));
        assert!(matches!(
            Ini::parse("[a]\n= v\n"),
            Err(IniError::Syntax { .. })
        ));
    }
}
