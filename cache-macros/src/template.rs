//! Key, tag and pattern templates: `"post:{id}"`, `"author:{ret.author_id}"`,
//! and the design card's `"post:<id>"`.

use proc_macro2::Span;
use syn::{Ident, LitStr};

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Segment {
    Lit(String),
    /// A path of identifiers: `id`, `post.author_id`, `ret.id`.
    Place(Vec<String>),
}

/// A parsed template and the literal it came from.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub(crate) lit: LitStr,
    pub(crate) segments: Vec<Segment>,
}

impl Template {
    pub(crate) fn parse(lit: &LitStr) -> syn::Result<Template> {
        let text = lit.value();
        let err = |msg: String| syn::Error::new(lit.span(), msg);
        if text.is_empty() {
            return Err(err(
                "an empty template; write the key, for example \"post:{id}\"".into(),
            ));
        }
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            let close = match c {
                '{' => '}',
                '<' => '>',
                // `}}` and `>>` write one literal `}` / `>`, as `{{` does `{`.
                '}' | '>' => {
                    if chars.peek().map(|(_, n)| *n) == Some(c) {
                        chars.next();
                    }
                    literal.push(c);
                    continue;
                }
                _ => {
                    literal.push(c);
                    continue;
                }
            };
            if chars.peek().map(|(_, n)| *n) == Some(c) {
                chars.next();
                literal.push(c);
                continue;
            }
            let rest = &text[at + 1..];
            let Some(end) = rest.find(close) else {
                return Err(err(format!(
                    "unclosed placeholder in \"{text}\": `{c}` at byte {at} has no `{close}`; write `{c}{c}` for a literal `{c}`"
                )));
            };
            let inner = rest[..end].trim();
            if inner.is_empty() {
                return Err(err(format!(
                    "empty placeholder `{c}{close}` in \"{text}\"; name an argument, for example `{c}id{close}`"
                )));
            }
            let path: Vec<String> = inner.split('.').map(|p| p.trim().to_owned()).collect();
            if let Some(bad) = path.iter().find(|p| {
                (p.starts_with("r#") || syn::parse_str::<Ident>(p).is_err()) && p.as_str() != "self"
            }) {
                return Err(err(format!(
                    "`{inner}` is not a placeholder; placeholders name an argument or a field of one, like `{c}id{close}` or `{c}post.author_id{close}` (`{bad}` is not an identifier)"
                )));
            }
            if !literal.is_empty() {
                segments.push(Segment::Lit(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Place(path));
            for _ in 0..rest[..end].chars().count() + 1 {
                chars.next();
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Lit(literal));
        }
        Ok(Template {
            lit: lit.clone(),
            segments,
        })
    }

    pub(crate) fn span(&self) -> Span {
        self.lit.span()
    }

    pub(crate) fn places(&self) -> impl Iterator<Item = &Vec<String>> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Place(p) => Some(p),
            Segment::Lit(_) => None,
        })
    }

    pub(crate) fn uses_ret(&self) -> bool {
        self.places().any(|p| p[0] == "ret")
    }

    pub(crate) fn literal_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| if let Segment::Lit(l) = s { l.len() } else { 8 })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> syn::Result<Vec<Segment>> {
        Template::parse(&LitStr::new(s, Span::call_site())).map(|t| t.segments)
    }

    fn place(p: &[&str]) -> Segment {
        Segment::Place(p.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn both_placeholder_forms() {
        assert_eq!(
            parse("post:{id}").unwrap(),
            vec![Segment::Lit("post:".into()), place(&["id"])]
        );
        assert_eq!(parse("post:<id>").unwrap(), parse("post:{id}").unwrap());
        assert_eq!(
            parse("a:{post.author_id}:b").unwrap(),
            vec![
                Segment::Lit("a:".into()),
                place(&["post", "author_id"]),
                Segment::Lit(":b".into())
            ]
        );
        assert_eq!(parse("{{x}").unwrap(), vec![Segment::Lit("{x}".into())]);
        assert_eq!(parse("{{x}}").unwrap(), vec![Segment::Lit("{x}".into())]);
        assert_eq!(
            parse("<<{id}>>").unwrap(),
            vec![
                Segment::Lit("<".into()),
                place(&["id"]),
                Segment::Lit(">".into())
            ]
        );
    }

    #[test]
    fn bad_templates() {
        assert!(parse("").is_err());
        assert!(parse("post:{id").is_err());
        assert!(parse("post:{}").is_err());
        assert!(parse("post:{a-b}").is_err());
        assert!(parse("post:<1>").is_err());
        assert!(
            parse("post:{r#type}").is_err(),
            "raw identifiers would panic Ident::new"
        );
    }
}
