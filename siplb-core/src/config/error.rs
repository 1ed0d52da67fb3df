//! Configuration errors and where they are: a TOML error carries its span; a broken
//! rule (`Invalid`) carries the field's path, which is walked down the parsed document
//! to its line.

use std::path::{Path, PathBuf};

/// A configuration error, located in the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {field}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// The field's path, e.g. `farm[0].backends[1].weight`.
    pub field: String,
    pub message: String,
}

/// One step of a field path, to locate an error in the TOML source.
#[derive(Debug, Clone)]
pub(super) enum Seg {
    Key(&'static str),
    Index(usize),
}

/// A rule of the configuration broken: the field's path and what to do.
#[derive(Debug)]
pub(super) struct Invalid {
    pub path: Vec<Seg>,
    pub message: String,
}

impl Invalid {
    pub fn at(path: impl Into<Vec<Seg>>, message: impl Into<String>) -> Invalid {
        Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The error in `file`, whose text is `src`: with the field's line.
    pub fn in_file(self, src: &str, file: &Path) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            line: line_of(src, &self.path),
            field: path_string(&self.path),
            message: self.message,
        }
    }

    /// The error in a configuration that did not come from a file.
    pub fn in_running(self) -> ConfigError {
        ConfigError {
            file: PathBuf::from("(running configuration)"),
            line: None,
            field: path_string(&self.path),
            message: self.message,
        }
    }
}

fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A place in the parsed document, for walking a field path down to its span.
enum Node<'d> {
    Table(&'d toml_edit::Table),
    Item(&'d toml_edit::Item),
    Value(&'d toml_edit::Value),
}

/// The span of the deepest item on `path` that exists in the document.
fn locate(node: Node<'_>, path: &[Seg]) -> Option<std::ops::Range<usize>> {
    use toml_edit::{Item, Value};
    let own_span = match &node {
        Node::Table(t) => t.span(),
        Node::Item(i) => i.span(),
        Node::Value(v) => v.span(),
    };
    let (first, rest) = match path.split_first() {
        Some(x) => x,
        None => return own_span,
    };
    let found = match (node, first) {
        (Node::Table(t), Seg::Key(k)) => {
            let key_span = t.key(k).and_then(|key| key.span());
            match t.get(k) {
                Some(_) if rest.is_empty() => key_span,
                Some(item) => locate(Node::Item(item), rest).or(key_span),
                None => None,
            }
        }
        (Node::Item(Item::Table(t)), _) => return locate(Node::Table(t), path).or(own_span),
        (Node::Item(Item::Value(v)), _) => return locate(Node::Value(v), path).or(own_span),
        (Node::Item(Item::ArrayOfTables(a)), Seg::Index(i)) => a
            .get(*i)
            .and_then(|t| locate(Node::Table(t), rest).or(t.span())),
        (Node::Value(Value::InlineTable(t)), Seg::Key(k)) => {
            let key_span = t.key(k).and_then(|key| key.span());
            match t.get(k) {
                Some(_) if rest.is_empty() => key_span,
                Some(v) => locate(Node::Value(v), rest).or(key_span),
                None => None,
            }
        }
        (Node::Value(Value::Array(a)), Seg::Index(i)) => a
            .get(*i)
            .and_then(|v| locate(Node::Value(v), rest).or(v.span())),
        _ => None,
    };
    found.or(own_span)
}

/// The 1-based line of the field at `path` (or of its nearest enclosing item).
fn line_of(src: &str, path: &[Seg]) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(src).ok()?;
    locate(Node::Table(doc.as_table()), path).map(|s| line_at(src, s.start))
}

fn line_at(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// The text of a configuration file.
pub(super) fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        line: None,
        field: "(file)".into(),
        message: format!("cannot read the configuration: {e}"),
    })
}

/// A TOML syntax or type error in `src`, located.
pub(super) fn toml_error(src: &str, file: &Path, e: toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| line_at(src, s.start));
    // The offending line itself names the field for the operator.
    let text = line
        .and_then(|l| src.lines().nth(l - 1))
        .map(|t| t.trim())
        .filter(|t| !t.is_empty());
    ConfigError {
        file: file.to_owned(),
        line,
        field: text.map_or_else(|| "(syntax)".into(), |t| format!("`{t}`")),
        message: e.message().trim().to_string(),
    }
}
