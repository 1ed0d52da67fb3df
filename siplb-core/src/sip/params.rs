//! Header parameters: `*( SEMI generic-param )` with `generic-param = token [ EQUAL
//! gen-value ]` and `gen-value = token / host / quoted-string` (RFC 3261 §25.1). LWS is
//! allowed around `;` and `=` (RFC 4475 `wsinv`).

use super::abnf::{self, at, PVALUE, TOKEN};

/// Parses parameters starting at `i` and hands each `(name, value)` to `each`, which
/// may reject it by returning `None`. A quoted value keeps its quotes. Returns the
/// index of the first byte after the parameters and the white space that follows them,
/// or `None` if a parameter is malformed (an empty one like `;;` included).
#[inline]
pub(crate) fn parse<'a>(
    s: &'a [u8],
    mut i: usize,
    mut each: impl FnMut(&'a [u8], Option<&'a [u8]>) -> Option<()>,
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
        if at(s, eq) == Some(b'=') {
            let vstart = abnf::skip_ws(s, eq + 1);
            let vend = if at(s, vstart) == Some(b'"') {
                abnf::quoted_end(s, vstart)?
            } else {
                abnf::skip(s, vstart, PVALUE)
            };
            if vend == vstart {
                return None;
            }
            each(name, Some(s.get(vstart..vend)?))?;
            i = vend;
        } else {
            each(name, None)?;
            i = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pairs = Vec<(String, Option<String>)>;

    fn collect(s: &str) -> Option<(Pairs, usize)> {
        let mut v = Vec::new();
        let end = parse(s.as_bytes(), 0, |n, val| {
            v.push((
                String::from_utf8_lossy(n).into_owned(),
                val.map(|x| String::from_utf8_lossy(x).into_owned()),
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
        assert!(parse(b";a;b", 0, |n, _| (n != b"b").then_some(())).is_none());
    }
}
