//! Header parameters: `*( SEMI generic-param )` with `generic-param = token [ EQUAL
//! gen-value ]` and `gen-value = token / host / quoted-string` (RFC 3261 §25.1). LWS is
//! allowed around `;` and `=` (RFC 4475 `wsinv`).

use super::abnf::{self, at, PVALUE, TOKEN};
use super::caseless::Name;

/// One parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Param<'a> {
    pub name: &'a [u8],
    /// The value the parameter is in, and where the name starts in it (for `is`).
    src: &'a [u8],
    at: usize,
    /// As written; a quoted value keeps its quotes.
    pub value: Option<&'a [u8]>,
    /// Whether the value is a `token` (not a quoted string or a host with ":" or
    /// brackets): `tag` and `branch` must be.
    pub token: bool,
}

impl Param<'_> {
    /// Whether the parameter is called `name` (any case).
    #[inline(always)]
    pub(crate) fn is(&self, name: &Name) -> bool {
        name.eq_at(self.src, self.at, self.name.len())
    }
}

/// Parses parameters starting at `i` and hands each to `each`, which may reject it by
/// returning `None`. Returns the index of the first byte after the parameters and the
/// white space that follows them, or `None` if a parameter is malformed (an empty one
/// like `;;` included).
#[inline]
pub(crate) fn parse<'a>(
    s: &'a [u8],
    mut i: usize,
    mut each: impl FnMut(Param<'a>) -> Option<()>,
) -> Option<usize> {
    loop {
        i = abnf::skip_ws(s, i);
        if at(s, i) != Some(b';') {
            return Some(i);
        }
        let start = abnf::skip_ws(s, i + 1);
        let end = abnf::skip(s, start, TOKEN);
        if end == start {
            return None;
        }
        let name = s.get(start..end)?;
        let eq = abnf::skip_ws(s, end);
        if at(s, eq) != Some(b'=') {
            each(Param {
                name,
                src: s,
                at: start,
                value: None,
                token: false,
            })?;
            i = end;
            continue;
        }
        let vstart = abnf::skip_ws(s, eq + 1);
        let (vend, token) = if at(s, vstart) == Some(b'"') {
            (abnf::quoted_end(s, vstart)?, false)
        } else {
            unquoted_value(s, vstart)
        };
        if vend == vstart {
            return None;
        }
        each(Param {
            name,
            src: s,
            at: start,
            value: Some(s.get(vstart..vend)?),
            token,
        })?;
        i = vend;
    }
}

/// The end of a `token / host` value starting at `i`, and whether it is all token.
#[inline(always)]
fn unquoted_value(s: &[u8], i: usize) -> (usize, bool) {
    // Values are nearly always tokens: a host's ":" or "[" ends the token run early.
    let t = abnf::skip_run(s, i, TOKEN);
    match at(s, t) {
        Some(c) if abnf::is(c, PVALUE) => (abnf::skip(s, t, PVALUE), false),
        _ => (t, true),
    }
}

/// [`parse`] for the canonical spelling only (`;name` or `;name=value`, no white space,
/// no quoted value): returns the index of the first byte after the parameters, or
/// `None` where [`parse`] might read the bytes differently (it then decides). Where it
/// returns `Some` and the parameters end the value, [`parse`] would hand `each` the same
/// parameters.
#[inline]
pub(crate) fn parse_canonical<'a>(
    s: &'a [u8],
    mut i: usize,
    mut each: impl FnMut(Param<'a>) -> Option<()>,
) -> Option<usize> {
    while at(s, i) == Some(b';') {
        let start = i + 1;
        let end = abnf::skip(s, start, TOKEN);
        if end == start {
            return None;
        }
        let name = s.get(start..end)?;
        let (value, token, next) = if at(s, end) == Some(b'=') {
            let (vend, token) = unquoted_value(s, end + 1);
            if vend == end + 1 {
                return None;
            }
            (Some(s.get(end + 1..vend)?), token, vend)
        } else {
            (None, false, end)
        };
        each(Param {
            name,
            src: s,
            at: start,
            value,
            token,
        })?;
        i = next;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pairs = Vec<(String, Option<String>)>;

    fn collect(s: &str) -> Option<(Pairs, usize)> {
        let mut v = Vec::new();
        let end = parse(s.as_bytes(), 0, |p| {
            v.push((
                String::from_utf8_lossy(p.name).into_owned(),
                p.value.map(|x| String::from_utf8_lossy(x).into_owned()),
            ));
            Some(())
        })?;
        Some((v, end))
    }

    #[test]
    fn with_and_without_values_and_lws() {
        let (v, end) =
            collect(" ;\r\n  tag = 98asjd8 ; lr;received=[2001:db8::1];x=\"a;b\" , next").unwrap();
        assert_eq!(
            v,
            vec![
                ("tag".into(), Some("98asjd8".into())),
                ("lr".into(), None),
                ("received".into(), Some("[2001:db8::1]".into())),
                ("x".into(), Some("\"a;b\"".into())),
            ]
        );
        assert_eq!(end, 56);
    }

    #[test]
    fn malformed() {
        assert_eq!(collect(";;"), None);
        assert_eq!(collect(";tag="), None);
        assert_eq!(collect(";tag=\"open"), None);
        assert_eq!(collect("; =x"), None);
        assert!(parse(b";a;b", 0, |p| (p.name != b"b").then_some(())).is_none());
        let mut tokens = Vec::new();
        parse(b";a=x;b=[::1];c=\"q\";d=1.2", 0, |p| {
            tokens.push(p.token);
            Some(())
        })
        .unwrap();
        assert_eq!(tokens, [true, false, false, true]);
    }
}
