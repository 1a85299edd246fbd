//! The checks between parsing and expansion. Parsing (`args`) reads each
//! argument on its own; here the arguments are checked against each other
//! and against the function (what placeholders may name, which settings
//! exclude which), every error reported at its token. What passes is a
//! plan `expand` turns into code without further checks.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Expr, ItemFn, Type};

use crate::args::{CachedArgs, Errors, InvalidatesArgs, PutArgs, TtlArg};
use crate::expand::Op;
use crate::func::{FnInfo, ShapeKind, shape_of};
use crate::template::Template;

/// A `#[cached]` whose arguments hold together and fit its function.
pub(crate) struct Cached<'a> {
    pub(crate) func: &'a ItemFn,
    pub(crate) info: &'a FnInfo,
    pub(crate) args: &'a CachedArgs,
    /// The return type (there is one).
    pub(crate) ret: &'a Type,
    /// With `batch`: where the ids are and what the key calls each one.
    pub(crate) batch: Option<BatchPlan>,
}

/// How a batch read's ids reach its body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum IdsArg {
    /// `ids: &[K]`
    Slice,
    /// `ids: &Vec<K>`
    VecRef,
    /// `ids: Vec<K>`
    Vec,
}

/// A checked `#[cached(batch)]`.
pub(crate) struct BatchPlan {
    /// The argument that holds the ids, and its kind.
    pub(crate) ids: syn::Ident,
    pub(crate) kind: IdsArg,
    /// The placeholder root that names one id in the key (`id` in
    /// `user:{id}`).
    pub(crate) element: String,
}

/// One checked write attribute.
pub(crate) enum Write<'a> {
    Invalidates(&'a InvalidatesArgs),
    /// With the key the value is stored under.
    Put(&'a PutArgs, &'a Template),
}

/// The write attributes of a function, checked.
pub(crate) struct Writes<'a> {
    pub(crate) func: &'a ItemFn,
    pub(crate) info: &'a FnInfo,
    pub(crate) ops: Vec<Write<'a>>,
}

/// Checks a `#[cached]`: `None` (with every error reported) if it cannot
/// be expanded.
pub(crate) fn cached<'a>(
    func: &'a ItemFn,
    info: &'a FnInfo,
    args: &'a CachedArgs,
    errors: &mut Errors,
) -> Option<Cached<'a>> {
    let Some(ret) = &info.ret else {
        errors.at(
            func.sig.fn_token.span,
            "#[cached] needs a return value to cache; this function returns `()`",
        );
        return None;
    };
    let batch = match &args.batch {
        Some((named, span)) => Some(batch_plan(func, info, args, named.as_ref(), *span, errors)?),
        None => None,
    };
    let element = batch.as_ref().map(|b| b.element.as_str());
    // The spelling tells only when it is plainly a `Result` of a non-Option;
    // aliases are resolved by type at compile time (`assert_cacheable`).
    if let (Some((_, span)), ShapeKind::Res, None) = (args.cache_none, shape_of(ret).0, &batch) {
        errors.at(span, "`cache_none` caches `None`, but this function does not return an `Option` (or `Result<Option<_>, _>`); remove it");
    }
    check_combinations(args, errors);
    if let Some(cond) = args.condition.as_ref().filter(|c| names_ret(c)) {
        errors.at(cond.span(), "`condition` is decided before the body runs, so it cannot name the returned value `ret`; to decide from the value whether to store it, write `unless = ...`");
    }
    let scope = Scope {
        info,
        ret_allowed: false,
        element,
    };
    let tag_scope = Scope {
        info,
        ret_allowed: true,
        element,
    };
    let mut ok = true;
    if let Some(key) = &args.key {
        ok &= scope.check(key, "key", errors);
    } else {
        for span in &info.pattern_args {
            errors.at(*span, "the default key is built from the arguments, and this one is a pattern; name it, or give the attribute a `key = \"...\"`");
            ok = false;
        }
    }
    if let Some(version) = &args.version {
        ok &= scope.check(version, "version", errors);
    }
    ok &= tag_scope.check_links(&args.tags, &args.depends_on, errors);
    if let (Some((_, span)), None) = (args.soft_timeout, &batch) {
        ok &= crate::owned::check(func, info, span, errors);
    }
    ok.then_some(Cached {
        func,
        info,
        args,
        ret,
        batch,
    })
}

/// Checks a `#[cached(batch)]`: the argument holding the ids (named, or the
/// one slice or `Vec`), the key's placeholder for one id, and the
/// arguments a batch read does not take.
fn batch_plan(
    func: &ItemFn,
    info: &FnInfo,
    args: &CachedArgs,
    named: Option<&syn::Ident>,
    span: Span,
    errors: &mut Errors,
) -> Option<BatchPlan> {
    let mut ok = true;
    let unsupported = [
        ("version", args.version.as_ref().map(Template::span)),
        ("stale", args.stale.map(|(_, s)| s)),
        ("early", args.early.map(|(_, s)| s)),
        ("idle", args.idle.map(|(_, s)| s)),
        ("lock", args.lock.map(|(_, s)| s)),
        ("lock_wait", args.lock_wait.map(|(_, s)| s)),
        ("fail_safe", args.fail_safe.map(|(_, s)| s)),
        (
            "fail_safe_throttle",
            args.fail_safe_throttle.map(|(_, s)| s),
        ),
        ("hard_timeout", args.hard_timeout.map(|(_, s)| s)),
        ("soft_timeout", args.soft_timeout.map(|(_, s)| s)),
        ("unless", args.unless.as_ref().map(Spanned::span)),
    ];
    for (what, at) in unsupported {
        if let Some(at) = at {
            errors.at(at, format!("`{what}` is not supported on a batch read; read the ids one by one with a `#[cached]` function of its own to use it"));
            ok = false;
        }
    }
    if info.receiver == Some(crate::func::Receiver::Other) {
        errors.at(span, "a batch read may call its body twice (for ids another caller was loading and did not store), so it takes `&self`, not `self` or `&mut self`");
        ok = false;
    }
    // The arguments that could hold the ids, with their kinds.
    let candidates: Vec<(syn::Ident, Option<IdsArg>)> = func
        .sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            syn::FnArg::Typed(t) => match &*t.pat {
                syn::Pat::Ident(p) => Some((p.ident.clone(), ids_kind(&t.ty))),
                _ => None,
            },
            syn::FnArg::Receiver(_) => None,
        })
        .collect();
    let (ids, kind) = match named {
        Some(name) => match candidates.iter().find(|(i, _)| i == name) {
            Some((ids, Some(kind))) => (ids.clone(), *kind),
            Some(_) => {
                errors.at(name.span(), format!("`{name}` holds the ids of a batch read, so it must be a slice or a `Vec`: `{name}: &[u64]`"));
                return None;
            }
            None => {
                errors.at(
                    name.span(),
                    format!("`batch = {name}` names no argument of this function"),
                );
                return None;
            }
        },
        None => {
            let found: Vec<_> = candidates
                .iter()
                .filter_map(|(i, k)| k.map(|k| (i.clone(), k)))
                .collect();
            match found.as_slice() {
                [(ids, kind)] => (ids.clone(), *kind),
                [] => {
                    errors.at(span, "a batch read takes its ids as a slice or a `Vec` argument, such as `ids: &[u64]`; this function has none");
                    return None;
                }
                _ => {
                    errors.at(span, "several arguments could hold the ids; name the one that does: `batch = ids`");
                    return None;
                }
            }
        }
    };
    let Some(key) = &args.key else {
        errors.at(span, "a batch read caches each id under its own key; give it one that names the id, such as `key = \"user:{id}\"`");
        return None;
    };
    let mut roots: Vec<&str> = key
        .places()
        .map(|p| p[0].as_str())
        .filter(|root| !["self", "ret"].contains(root) && !info.args.iter().any(|a| a == root))
        .collect();
    roots.dedup();
    let element = match roots.as_slice() {
        [one] => (*one).to_owned(),
        [] => {
            errors.at(key.span(), format!("a batch key names each id with a placeholder that is not an argument, such as `{{id}}` in `user:{{id}}` (the ids are in `{ids}`)"));
            return None;
        }
        _ => {
            errors.at(key.span(), "a batch key names one id: it may have one placeholder that is not an argument (such as `{id}` in `user:{id}`), and this one has several");
            return None;
        }
    };
    ok.then_some(BatchPlan { ids, kind, element })
}

/// The kind of an argument that can hold a batch's ids.
fn ids_kind(ty: &Type) -> Option<IdsArg> {
    let is_vec = |ty: &Type| matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Vec"));
    match ty {
        Type::Reference(r) if matches!(&*r.elem, Type::Slice(_)) => Some(IdsArg::Slice),
        Type::Reference(r) if is_vec(&r.elem) => Some(IdsArg::VecRef),
        ty if is_vec(ty) => Some(IdsArg::Vec),
        _ => None,
    }
}

/// Checks the write attributes of a function: `None` (with every error
/// reported) if they cannot be expanded.
pub(crate) fn writes<'a>(
    func: &'a ItemFn,
    info: &'a FnInfo,
    ops: &'a [Op],
    errors: &mut Errors,
) -> Option<Writes<'a>> {
    let scope = Scope {
        info,
        ret_allowed: true,
        element: None,
    };
    if info.ret.is_none() && ops.iter().any(|op| matches!(op, Op::Put(_))) {
        errors.at(
            func.sig.fn_token.span,
            "#[cache_put] stores the returned value; this function returns `()`",
        );
        return None;
    }
    let mut checked = Vec::with_capacity(ops.len());
    let mut ok = true;
    for op in ops {
        match op {
            Op::Invalidates(args, parsed) => {
                ok &= invalidates(args, *parsed, &scope, errors);
                checked.push(Write::Invalidates(args));
            }
            Op::Put(args) => match put(args, &scope, errors) {
                Some(key) => checked.push(Write::Put(args, key)),
                None => ok = false,
            },
        }
    }
    ok.then_some(Writes {
        func,
        info,
        ops: checked,
    })
}

/// Checks `#[cached]` arguments that only make sense together or apart.
fn check_combinations(args: &CachedArgs, errors: &mut Errors) {
    if let (Some((_, stale)), Some((_, early))) = (args.stale, args.early) {
        errors.at(early, "`early` and `stale` are two refresh policies; choose one (`stale` serves the old value while one caller refreshes, `early` refreshes before expiry)");
        let _ = stale;
    }
    let distributed = matches!(args.lock, Some((true, _)));
    if let (true, Some(false), Some(span)) =
        (distributed, args.single_flight, args.single_flight_span)
    {
        errors.at(span, "`lock = \"distributed\"` makes callers wait for one loader across processes; `single_flight = false` asks every caller to load; choose one");
    }
    if let (false, Some((_, span))) = (distributed, args.lock_wait) {
        errors.at(span, "`lock_wait` bounds how long a caller waits for another process's loader; it needs `lock = \"distributed\"`");
    }
    if let Some((_, span)) = args.idle
        && (args.stale.is_some() || args.early.is_some())
    {
        errors.at(span, "`idle` expires an entry that is not read, while `stale` and `early` refresh it by its TTL; choose one");
    }
    if let (Some((_, span)), Some(_)) = (args.idle, args.fail_safe) {
        errors.at(span, "`idle` expires an entry that is not read, while `fail_safe` keeps it past its TTL to answer when the loader fails; choose one");
    }
    if let (Some((_, span)), None) = (args.fail_safe_throttle, args.fail_safe) {
        errors.at(span, "`fail_safe_throttle` says how long a fail-safe copy answers without the loader; it needs `fail_safe = \"...\"`");
    }
    if let Some((0, span)) = args.hard_timeout {
        errors.at(span, "a `hard_timeout` of zero would abandon every loader; give it a duration such as \"2s\"");
    }
    if let Some((soft, span)) = args.soft_timeout {
        if args.stale.is_none() && args.early.is_none() && args.fail_safe.is_none() {
            errors.at(span, "`soft_timeout` answers with the cached copy while the loader goes on, so it needs a copy past the TTL to answer with: add `fail_safe = \"...\"`, `stale = \"...\"` or `early = ...`");
        }
        if let Some((hard, _)) = args.hard_timeout
            && soft >= hard
        {
            errors.at(span, "`soft_timeout` must be shorter than `hard_timeout`: past the hard timeout the loader is abandoned, so a later soft timeout would never act");
        }
    }
    check_idle(args.idle, args.ttl, errors);
    if let Some(TtlArg::Forever) = args.ttl {
        let span = args.ttl_span.unwrap_or_else(Span::call_site);
        if args.stale.is_some() || args.early.is_some() {
            errors.at(span, "an entry cached \"forever\" never goes stale, so `stale`/`early` would never act; give a finite `ttl`");
        }
        if args.fail_safe.is_some() {
            errors.at(span, "an entry cached \"forever\" never expires, so `fail_safe` would never act; give a finite `ttl`");
        }
    }
}

/// Checks one `#[invalidates]` (each error reported; `false` if any).
fn invalidates(
    args: &InvalidatesArgs,
    parsed: bool,
    scope: &Scope<'_>,
    errors: &mut Errors,
) -> bool {
    if args.keys.is_empty()
        && args.tags.is_empty()
        && args.patterns.is_empty()
        && args.bump.is_empty()
        && args.publish.is_none()
    {
        // Only worth saying when nothing else was wrong with its arguments.
        if parsed {
            let span = args.span.unwrap_or_else(Span::call_site);
            errors.at(span, "#[invalidates] has nothing to do; give it `keys = [...]`, `tags = [...]`, `patterns = [...]`, `bump = [...]` or `publish = \"...\"`");
        }
        return false;
    }
    let mut ok = true;
    if let Some(cond) = args.condition.as_ref().filter(|c| names_ret(c))
        && scope.info.ret.is_none()
    {
        errors.at(
            cond.span(),
            "`ret` names the returned value, but this function returns nothing",
        );
        ok = false;
    }
    for (list, what) in [
        (&args.keys, "key"),
        (&args.tags, "tag"),
        (&args.patterns, "pattern"),
        (&args.bump, "version"),
    ] {
        for t in list {
            ok &= scope.check(t, what, errors);
        }
    }
    ok
}

/// Checks one `#[cache_put]` (each error reported): its key, if all is
/// well.
fn put<'a>(args: &'a PutArgs, scope: &Scope<'_>, errors: &mut Errors) -> Option<&'a Template> {
    check_idle(args.idle, args.ttl, errors);
    let Some(key) = &args.key else {
        let span = args.span.unwrap_or_else(Span::call_site);
        errors.at(span, "#[cache_put] needs the key to store under: `key = \"post:{ret.id}\"` (it may name the arguments and `ret`, the value)");
        return None;
    };
    let ok = scope.check(key, "key", errors);
    (scope.check_links(&args.tags, &args.depends_on, errors) && ok).then_some(key)
}

/// A time-to-idle at least as long as the TTL would never act.
fn check_idle(idle: Option<(u64, Span)>, ttl: Option<TtlArg>, errors: &mut Errors) {
    if let (Some((idle, span)), Some(TtlArg::Millis(ttl))) = (idle, ttl)
        && idle >= ttl
    {
        errors.at(span, format!("`idle` ({idle} ms) is not shorter than `ttl` ({ttl} ms), so it would never expire anything; make it shorter, or leave it out"));
    }
}

/// Where a placeholder's root may point.
pub(crate) struct Scope<'a> {
    info: &'a FnInfo,
    ret_allowed: bool,
    /// A batch read's name for one id.
    element: Option<&'a str>,
}

impl Scope<'_> {
    /// Checks every tag and dependency (each error reported; `false` if any).
    fn check_links(&self, tags: &[Template], deps: &[Template], errors: &mut Errors) -> bool {
        let tags = tags.iter().map(|t| (t, "tag"));
        let deps = deps.iter().map(|t| (t, "dependency"));
        tags.chain(deps)
            .fold(true, |ok, (t, what)| self.check(t, what, errors) && ok)
    }

    fn check(&self, t: &Template, what: &str, errors: &mut Errors) -> bool {
        let mut ok = true;
        for place in t.places() {
            let root = place[0].as_str();
            if root == "ret" && self.ret_allowed && self.info.args.iter().any(|a| a == "ret") {
                errors.at(t.span(), "`ret` names the returned value here, and an argument is also called `ret`; rename the argument");
                ok = false;
                continue;
            }
            let known = self.info.args.iter().any(|a| a == root)
                || (root == "self" && self.info.receiver.is_some())
                || self.element == Some(root);
            if known {
                continue;
            }
            ok = false;
            if root == "ret" {
                if self.ret_allowed {
                    if self.info.ret.is_none() {
                        errors.at(
                            t.span(),
                            format!(
                                "`{}` names the returned value, but this function returns nothing",
                                place.join(".")
                            ),
                        );
                    } else {
                        ok = true;
                    }
                } else {
                    errors.at(
                        t.span(),
                        format!("the {what} is needed before the body runs, so it cannot name the returned value `{}`; build it from the arguments (tags may use `ret`)", place.join(".")),
                    );
                }
                continue;
            }
            let mut names: Vec<String> = self.info.args.iter().map(|a| format!("`{a}`")).collect();
            if self.info.receiver.is_some() {
                names.insert(0, "`self`".into());
            }
            if self.ret_allowed && self.info.ret.is_some() {
                names.push("`ret` (the returned value)".into());
            }
            let available = if names.is_empty() {
                "this function has no arguments".to_string()
            } else {
                format!("it can name {}", names.join(", "))
            };
            errors.at(
                t.span(),
                format!(
                    "the placeholder `{{{}}}` in this {what} names nothing; {available}",
                    place.join(".")
                ),
            );
        }
        ok
    }
}

/// Whether an expression names `ret` (as an identifier anywhere in it).
pub(crate) fn names_ret(expr: &Expr) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            proc_macro2::TokenTree::Ident(i) => i == "ret",
            proc_macro2::TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(expr.to_token_stream())
}
