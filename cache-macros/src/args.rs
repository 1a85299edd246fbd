//! The attribute arguments, parsed into typed structs. Every problem is
//! reported at its own token, all of them at once.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Path, Token};

use crate::template::Template;

/// `name = value`, before it is given a meaning.
struct RawArg {
    name: Ident,
    value: Expr,
}

impl Parse for RawArg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let name = input.call(Ident::parse_any)?;
        // `batch` alone is a flag (`batch = ids` names the argument).
        if name == "batch" && !input.peek(Token![=]) {
            let value = syn::parse_quote_spanned!(name.span()=> true);
            return Ok(RawArg { name, value });
        }
        if !input.peek(Token![=]) {
            return Err(syn::Error::new(
                name.span(),
                format!("`{name}` needs a value: write `{name} = ...`"),
            ));
        }
        input.parse::<Token![=]>()?;
        Ok(RawArg {
            name,
            value: input.parse()?,
        })
    }
}

/// `batch` (`true`, from the flag) or `batch = ids`.
fn batch_arg(value: &Expr) -> syn::Result<Option<Ident>> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) if b.value => Ok(None),
        Expr::Path(p) if p.qself.is_none() => match p.path.get_ident() {
            Some(ident) => Ok(Some(ident.clone())),
            None => Err(syn::Error::new(
                value.span(),
                "`batch` names the argument that holds the ids: `batch = ids`, or `batch` alone",
            )),
        },
        _ => Err(syn::Error::new(
            value.span(),
            "`batch` names the argument that holds the ids: `batch = ids`, or `batch` alone",
        )),
    }
}

/// How long entries live, as written.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TtlArg {
    Millis(u64),
    Forever,
}

/// Arguments of `#[cached]`.
#[derive(Default)]
pub(crate) struct CachedArgs {
    pub(crate) key: Option<Template>,
    pub(crate) ttl: Option<TtlArg>,
    pub(crate) jitter: Option<f32>,
    pub(crate) tags: Vec<Template>,
    pub(crate) cache: Option<Expr>,
    pub(crate) cache_none: Option<(u64, Span)>,
    pub(crate) name: Option<LitStr>,
    pub(crate) krate: Option<Path>,
    /// (window ms, span of the argument)
    pub(crate) stale: Option<(u64, Span)>,
    /// (beta, span of the argument)
    pub(crate) early: Option<(f32, Span)>,
    pub(crate) max_size: Option<usize>,
    pub(crate) single_flight: Option<bool>,
    pub(crate) version: Option<Template>,
    pub(crate) depends_on: Vec<Template>,
    /// `lock = "distributed"`: (on, span of the argument).
    pub(crate) lock: Option<(bool, Span)>,
    /// (wait bound ms, span of the argument)
    pub(crate) lock_wait: Option<(u64, Span)>,
    pub(crate) local_ttl: Option<u64>,
    /// `condition = <bool expr over the arguments>`: use the cache at all.
    pub(crate) condition: Option<Expr>,
    /// `unless = <bool expr over ret, or a closure>`: do not store this value.
    pub(crate) unless: Option<Expr>,
    /// The span of `ttl`, for conflicts with it.
    pub(crate) ttl_span: Option<Span>,
    /// `idle`: (time-to-idle ms, span of the argument).
    pub(crate) idle: Option<(u64, Span)>,
    /// The span of `single_flight`, for conflicts with it.
    pub(crate) single_flight_span: Option<Span>,
    /// `fail_safe`: (window ms, span of the argument).
    pub(crate) fail_safe: Option<(u64, Span)>,
    /// `fail_safe_throttle`: (ms, span of the argument).
    pub(crate) fail_safe_throttle: Option<(u64, Span)>,
    /// `hard_timeout`: (ms, span of the argument).
    pub(crate) hard_timeout: Option<(u64, Span)>,
    /// `soft_timeout`: (ms, span of the argument).
    pub(crate) soft_timeout: Option<(u64, Span)>,
    /// `batch` (the ids' argument found by type) or `batch = ids`, with
    /// the span of the argument.
    pub(crate) batch: Option<(Option<Ident>, Span)>,
}

/// Arguments of `#[invalidates]`.
#[derive(Default)]
pub(crate) struct InvalidatesArgs {
    pub(crate) keys: Vec<Template>,
    pub(crate) tags: Vec<Template>,
    pub(crate) patterns: Vec<Template>,
    pub(crate) bump: Vec<Template>,
    pub(crate) publish: Option<LitStr>,
    /// `condition = <bool expr over the arguments and ret>`: invalidate at all.
    pub(crate) condition: Option<Expr>,
    pub(crate) cache: Option<Expr>,
    pub(crate) krate: Option<Path>,
    /// The span of the whole attribute, for "nothing to invalidate".
    pub(crate) span: Option<Span>,
}

/// Arguments of `#[cache_put]`.
#[derive(Default)]
pub(crate) struct PutArgs {
    pub(crate) key: Option<Template>,
    pub(crate) ttl: Option<TtlArg>,
    pub(crate) jitter: Option<f32>,
    /// `idle`: (time-to-idle ms, span of the argument).
    pub(crate) idle: Option<(u64, Span)>,
    pub(crate) tags: Vec<Template>,
    pub(crate) depends_on: Vec<Template>,
    pub(crate) cache: Option<Expr>,
    pub(crate) krate: Option<Path>,
    /// The span of the whole attribute, for a missing key.
    pub(crate) span: Option<Span>,
}

const PUT_ARGS: &[&str] = &[
    "key",
    "ttl",
    "idle",
    "jitter",
    "tags",
    "depends_on",
    "cache",
    "crate",
];

const CACHED_ARGS: &[&str] = &[
    "key",
    "batch",
    "ttl",
    "idle",
    "jitter",
    "tags",
    "cache",
    "cache_none",
    "stale",
    "early",
    "fail_safe",
    "fail_safe_throttle",
    "hard_timeout",
    "soft_timeout",
    "version",
    "max_size",
    "single_flight",
    "depends_on",
    "lock",
    "lock_wait",
    "local_ttl",
    "condition",
    "unless",
    "name",
    "crate",
];
const INVALIDATES_ARGS: &[&str] = &[
    "keys",
    "tags",
    "patterns",
    "bump",
    "publish",
    "condition",
    "cache",
    "crate",
];

/// Collects errors, so that every problem is reported in one build.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn at(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.push(syn::Error::new(span, msg));
    }

    /// How many errors so far.
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |e| e.clone().into_iter().count())
    }

    pub(crate) fn finish(self) -> Option<syn::Error> {
        self.0
    }
}

fn parse_raw(attr: &'static str, tokens: TokenStream, errors: &mut Errors) -> Vec<RawArg> {
    let parser = Punctuated::<RawArg, Token![,]>::parse_terminated;
    match parser.parse2(tokens) {
        Ok(args) => {
            let mut seen: Vec<Ident> = Vec::new();
            let mut out = Vec::new();
            for arg in args {
                if let Some(first) = seen.iter().find(|s| **s == arg.name) {
                    let mut e = syn::Error::new(
                        arg.name.span(),
                        format!(
                            "`{}` is given more than once in #[{attr}]; keep one",
                            arg.name
                        ),
                    );
                    e.combine(syn::Error::new(
                        first.span(),
                        format!("`{}` first given here", arg.name),
                    ));
                    errors.push(e);
                    continue;
                }
                seen.push(arg.name.clone());
                out.push(arg);
            }
            out
        }
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    }
}

fn unknown(attr: &str, name: &Ident, known: &[&str], hint: Option<&str>) -> syn::Error {
    let mut msg = format!(
        "unknown argument `{name}` for #[{attr}]; expected one of: {}",
        known.join(", ")
    );
    if let Some(hint) = hint {
        msg.push_str("\n  help: ");
        msg.push_str(hint);
    }
    syn::Error::new(name.span(), msg)
}

fn lit_str(value: &Expr, what: &str, example: &str) -> syn::Result<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        other => Err(syn::Error::new(
            other.span(),
            format!("`{what}` takes a string literal, for example `{what} = {example}`"),
        )),
    }
}

fn template(value: &Expr, what: &str, example: &str) -> syn::Result<Template> {
    Template::parse(&lit_str(value, what, example)?)
}

fn templates(value: &Expr, what: &str, example: &str, errors: &mut Errors) -> Vec<Template> {
    match value {
        Expr::Array(array) => array
            .elems
            .iter()
            .filter_map(|e| template(e, what, example).map_err(|e| errors.push(e)).ok())
            .collect(),
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => {
            errors.at(
                s.span(),
                format!("`{what}` takes a list: write `{what} = [{:?}]`", s.value()),
            );
            Vec::new()
        }
        other => {
            errors.at(
                other.span(),
                format!(
                    "`{what}` takes a list of string templates, for example `{what} = [{example}]`"
                ),
            );
            Vec::new()
        }
    }
}

fn duration_ms(value: &Expr, what: &str, allow_forever: bool) -> syn::Result<TtlArg> {
    let bad = |span: Span, why: String| syn::Error::new(span, why);
    let example = format!("`{what} = 300` (seconds) or `{what} = \"5m\"`");
    let ms = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => {
            let secs: u64 = i.base10_parse().map_err(|_| {
                bad(
                    i.span(),
                    format!("`{what}` must be a whole number of seconds: {example}"),
                )
            })?;
            if !i.suffix().is_empty() {
                return Err(bad(
                    i.span(),
                    format!("`{what}` takes no type suffix: {example}"),
                ));
            }
            secs.saturating_mul(1000)
        }
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => {
            let text = s.value();
            if allow_forever && text == "forever" {
                return Ok(TtlArg::Forever);
            }
            parse_duration_ms(&text).map_err(|why| {
                bad(
                    s.span(),
                    format!("bad {what} \"{text}\": {why}; write {example}"),
                )
            })?
        }
        other => {
            let forever = if allow_forever {
                ", or `\"forever\"` for entries that never expire"
            } else {
                ""
            };
            return Err(bad(
                other.span(),
                format!("`{what}` takes a literal: {example}{forever}"),
            ));
        }
    };
    if ms == 0 {
        return Err(bad(
            value.span(),
            format!(
                "a {what} of zero would never cache anything; write a positive duration: {example}"
            ),
        ));
    }
    Ok(TtlArg::Millis(ms))
}

/// A time-to-idle, in milliseconds (never "forever", never zero).
fn idle_ms(value: &Expr) -> syn::Result<u64> {
    match duration_ms(value, "idle", false)? {
        TtlArg::Millis(ms) => Ok(ms),
        TtlArg::Forever => Err(syn::Error::new(
            value.span(),
            "`idle` cannot be \"forever\"; leave it out",
        )),
    }
}

/// `cache_runtime::parse_duration` (the same parser), in milliseconds.
fn parse_duration_ms(text: &str) -> Result<u64, String> {
    crate::duration::parse(text).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn krate(value: &Expr) -> syn::Result<Path> {
    match value {
        Expr::Path(p) => Ok(p.path.clone()),
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => s.parse::<Path>(),
        other => Err(syn::Error::new(
            other.span(),
            "`crate` takes the path the runtime is reachable at, for example `crate = my_cache`",
        )),
    }
}

impl CachedArgs {
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> CachedArgs {
        let mut args = CachedArgs::default();
        for RawArg { name, value } in parse_raw("cached", tokens, errors) {
            let result: syn::Result<()> = match name.to_string().as_str() {
                "key" => template(&value, "key", "\"post:{id}\"").map(|t| args.key = Some(t)),
                "ttl" => duration_ms(&value, "ttl", true).map(|t| {
                    args.ttl = Some(t);
                    args.ttl_span = Some(name.span());
                }),
                "idle" => idle_ms(&value).map(|ms| args.idle = Some((ms, name.span()))),
                "jitter" => parse_jitter(&value).map(|j| args.jitter = Some(j)),
                "tags" => {
                    args.tags = templates(&value, "tags", "\"author:{author_id}\"", errors);
                    Ok(())
                }
                "cache" => {
                    args.cache = Some(value);
                    Ok(())
                }
                "cache_none" => duration_ms(&value, "cache_none", false).map(|t| {
                    if let TtlArg::Millis(ms) = t {
                        args.cache_none = Some((ms, name.span()));
                    }
                }),
                "stale" => duration_ms(&value, "stale", false).map(|t| {
                    if let TtlArg::Millis(ms) = t {
                        args.stale = Some((ms, name.span()));
                    }
                }),
                "early" => parse_beta(&value).map(|b| args.early = Some((b, name.span()))),
                "fail_safe" | "fail_safe_throttle" | "hard_timeout" | "soft_timeout" => {
                    let what = name.to_string();
                    duration_ms(&value, &what, false).map(|t| {
                        if let TtlArg::Millis(ms) = t {
                            let slot = match what.as_str() {
                                "fail_safe" => &mut args.fail_safe,
                                "fail_safe_throttle" => &mut args.fail_safe_throttle,
                                "soft_timeout" => &mut args.soft_timeout,
                                _ => &mut args.hard_timeout,
                            };
                            *slot = Some((ms, name.span()));
                        }
                    })
                }
                "version" => {
                    template(&value, "version", "\"user:{id}\"").map(|t| args.version = Some(t))
                }
                "max_size" => parse_size(&value).map(|n| args.max_size = Some(n)),
                "single_flight" => parse_bool(&value, "single_flight").map(|b| {
                    args.single_flight = Some(b);
                    args.single_flight_span = Some(name.span());
                }),
                "depends_on" => {
                    args.depends_on =
                        templates(&value, "depends_on", "\"author:{author_id}\"", errors);
                    Ok(())
                }
                "lock" => parse_lock(&value).map(|on| args.lock = Some((on, name.span()))),
                "local_ttl" => duration_ms(&value, "local_ttl", false).map(|t| {
                    if let TtlArg::Millis(ms) = t {
                        args.local_ttl = Some(ms);
                    }
                }),
                "lock_wait" => duration_ms(&value, "lock_wait", false).map(|t| {
                    if let TtlArg::Millis(ms) = t {
                        args.lock_wait = Some((ms, name.span()));
                    }
                }),
                "condition" => bool_expr(value, "condition", "`condition = id > 0`")
                    .map(|e| args.condition = Some(e)),
                "unless" => bool_expr(
                    value,
                    "unless",
                    "`unless = ret.draft` or `unless = |post: &Post| post.draft`",
                )
                .map(|e| args.unless = Some(e)),
                "name" => lit_str(&value, "name", "\"posts.by_id\"").map(|n| args.name = Some(n)),
                "crate" => krate(&value).map(|k| args.krate = Some(k)),
                "batch" => batch_arg(&value).map(|named| args.batch = Some((named, name.span()))),
                _ => {
                    let hint = match name.to_string().as_str() {
                        "keys" => Some("#[cached] reads one key: write `key = \"...\"`"),
                        "tag" => Some("write `tags = [\"...\"]`"),
                        "patterns" | "publish" => Some("this belongs to #[invalidates]"),
                        _ => None,
                    };
                    Err(unknown("cached", &name, CACHED_ARGS, hint))
                }
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        args
    }
}

/// A Rust expression whose value decides something (its type, `bool`, is
/// checked by the compiler at the expression). A string is refused: the
/// code would lose its spans.
fn bool_expr(value: Expr, what: &str, example: &str) -> syn::Result<Expr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Err(syn::Error::new(
            s.span(),
            format!("`{what}` takes a Rust expression, not a string: write {example}"),
        )),
        other => Ok(other),
    }
}

/// A float or integer literal as `f64`; `None` for anything else.
fn number_lit(value: &Expr) -> Option<syn::Result<f64>> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Float(f), ..
        }) => Some(f.base10_parse()),
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => Some(i.base10_parse()),
        _ => None,
    }
}

fn parse_beta(value: &Expr) -> syn::Result<f32> {
    let v: f64 = match value {
        v if number_lit(v).is_some() => number_lit(v).unwrap_or(Ok(0.0))?,
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) if b.value => 1.0,
        other => {
            return Err(syn::Error::new(
                other.span(),
                "`early` takes the XFetch beta, a number above 0.0 (1.0 is the usual choice): `early = 1.0`, or `early = true` for 1.0",
            ));
        }
    };
    if !(v > 0.0 && v <= 100.0) {
        return Err(syn::Error::new(
            value.span(),
            format!(
                "`early` is a beta above 0.0 and at most 100.0, not {v}; for example `early = 1.0`"
            ),
        ));
    }
    Ok(v as f32)
}

fn parse_size(value: &Expr) -> syn::Result<usize> {
    let example = "`max_size = 65536` (bytes) or `max_size = \"64KiB\"`";
    let bytes = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse::<usize>().ok(),
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => {
            let text = s.value();
            let text = text.trim();
            let split = text
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len());
            let n: Option<usize> = text[..split].parse().ok();
            let factor = match text[split..].trim() {
                "" | "B" => Some(1),
                "KB" | "KiB" => Some(1024),
                "MB" | "MiB" => Some(1024 * 1024),
                _ => None,
            };
            n.zip(factor).map(|(n, f)| n.saturating_mul(f))
        }
        _ => None,
    };
    match bytes {
        Some(0) => Err(syn::Error::new(
            value.span(),
            format!("a `max_size` of zero would never cache anything; write {example}"),
        )),
        Some(n) => Ok(n),
        None => Err(syn::Error::new(
            value.span(),
            format!("`max_size` takes a size: {example}"),
        )),
    }
}

/// `lock = "distributed"` (true) or `lock = "local"` (false, the default).
fn parse_lock(value: &Expr) -> syn::Result<bool> {
    let usage = "`lock` takes \"local\" (single-flight in this process, the default) or \"distributed\" (one loader across every process sharing the store)";
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => match s.value().as_str() {
            "distributed" => Ok(true),
            "local" => Ok(false),
            other => Err(syn::Error::new(
                s.span(),
                format!("unknown lock `{other}`: {usage}"),
            )),
        },
        other => Err(syn::Error::new(other.span(), usage)),
    }
}

fn parse_bool(value: &Expr, what: &str) -> syn::Result<bool> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.value),
        other => Err(syn::Error::new(
            other.span(),
            format!("`{what}` takes `true` or `false`"),
        )),
    }
}

fn parse_jitter(value: &Expr) -> syn::Result<f32> {
    let v: f64 = match value {
        v if number_lit(v).is_some() => number_lit(v).unwrap_or(Ok(0.0))?,
        other => {
            return Err(syn::Error::new(
                other.span(),
                "`jitter` takes a fraction between 0.0 and 1.0, for example `jitter = 0.1`",
            ));
        }
    };
    if !(0.0..=1.0).contains(&v) {
        return Err(syn::Error::new(
            value.span(),
            format!(
                "`jitter` is a fraction of the TTL between 0.0 and 1.0, not {v}; for example `jitter = 0.1`"
            ),
        ));
    }
    Ok(v as f32)
}

impl InvalidatesArgs {
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> InvalidatesArgs {
        let span = (!tokens.is_empty()).then(|| tokens.span());
        let mut args = InvalidatesArgs {
            span,
            ..Default::default()
        };
        for RawArg { name, value } in parse_raw("invalidates", tokens, errors) {
            let result: syn::Result<()> = match name.to_string().as_str() {
                "keys" => {
                    args.keys = templates(&value, "keys", "\"post:{id}\"", errors);
                    Ok(())
                }
                "tags" => {
                    args.tags = templates(&value, "tags", "\"author:{author_id}\"", errors);
                    Ok(())
                }
                "patterns" => {
                    args.patterns = templates(&value, "patterns", "\"posts:page:*\"", errors);
                    Ok(())
                }
                "bump" => {
                    args.bump = templates(&value, "bump", "\"user:{id}\"", errors);
                    Ok(())
                }
                "publish" => lit_str(&value, "publish", "\"post:updated\"").and_then(|p| {
                    if p.value().trim().is_empty() {
                        Err(syn::Error::new(
                            p.span(),
                            "`publish` names the event, for example `publish = \"post:updated\"`",
                        ))
                    } else {
                        args.publish = Some(p);
                        Ok(())
                    }
                }),
                "condition" => bool_expr(
                    value,
                    "condition",
                    "`condition = ret.published` or `condition = id > 0`",
                )
                .map(|e| args.condition = Some(e)),
                "cache" => {
                    args.cache = Some(value);
                    Ok(())
                }
                "crate" => krate(&value).map(|k| args.krate = Some(k)),
                _ => {
                    let hint = match name.to_string().as_str() {
                        "key" => Some("#[invalidates] takes a list: write `keys = [\"...\"]`"),
                        "unless" => Some(
                            "`unless` decides whether #[cached] stores a value; here write `condition = ...` (it may name `ret`)",
                        ),
                        "tag" => Some("write `tags = [\"...\"]`"),
                        "pattern" => Some("write `patterns = [\"...\"]`"),
                        "ttl" | "cache_none" | "jitter" => Some("this belongs to #[cached]"),
                        _ => None,
                    };
                    Err(unknown("invalidates", &name, INVALIDATES_ARGS, hint))
                }
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        args
    }
}

impl PutArgs {
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> PutArgs {
        let span = (!tokens.is_empty()).then(|| tokens.span());
        let mut args = PutArgs {
            span,
            ..Default::default()
        };
        for RawArg { name, value } in parse_raw("cache_put", tokens, errors) {
            let result: syn::Result<()> = match name.to_string().as_str() {
                "key" => template(&value, "key", "\"post:{ret.id}\"").map(|t| args.key = Some(t)),
                "ttl" => duration_ms(&value, "ttl", true).map(|t| args.ttl = Some(t)),
                "idle" => idle_ms(&value).map(|ms| args.idle = Some((ms, name.span()))),
                "jitter" => parse_jitter(&value).map(|j| args.jitter = Some(j)),
                "tags" => {
                    args.tags = templates(&value, "tags", "\"author:{ret.author_id}\"", errors);
                    Ok(())
                }
                "depends_on" => {
                    args.depends_on =
                        templates(&value, "depends_on", "\"author:{ret.author_id}\"", errors);
                    Ok(())
                }
                "cache" => {
                    args.cache = Some(value);
                    Ok(())
                }
                "crate" => krate(&value).map(|k| args.krate = Some(k)),
                _ => {
                    let hint = match name.to_string().as_str() {
                        "keys" => Some("#[cache_put] stores one value: write `key = \"...\"`"),
                        "tag" => Some("write `tags = [\"...\"]`"),
                        "patterns" | "publish" | "bump" => Some("this belongs to #[invalidates]"),
                        _ => None,
                    };
                    Err(unknown("cache_put", &name, PUT_ARGS, hint))
                }
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("10"), Ok(10_000));
        assert!(parse_duration_ms("5x").is_err());
        assert!(parse_duration_ms("").is_err());
    }
}
