//! Code generation. The annotated body is wrapped, never hidden behind a
//! per-function static: the key is built from the arguments first, then the
//! body becomes an `async move` block handed to the runtime, which runs it
//! only on a miss (`#[cached]`) or awaits it and then invalidates
//! (`#[invalidates]`). Generated code reaches the runtime only through
//! `<crate>::__private`, and its own locals use mixed-site hygiene.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{AttrStyle, Attribute, Expr, Ident, ItemFn, Path, Stmt, Type};

use crate::args::{CachedArgs, Errors, InvalidatesArgs, PutArgs, TtlArg};
use crate::func::{FnInfo, Receiver, has_impl_trait, mentions_generics};
use crate::template::{Segment, Template};
use crate::validate::{self, Write, names_ret};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Cached,
    Invalidates,
    Put,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Cached => "cached",
            Kind::Invalidates => "invalidates",
            Kind::Put => "cache_put",
        }
    }
}

pub(crate) fn entry(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let msg = format!("#[{}] goes on an `async fn` with a body", kind.name());
            let err = syn::Error::new(Span::call_site(), msg).to_compile_error();
            return quote!(#err #item);
        }
    };
    if is_sibling_marker(&args) {
        return func.into_token_stream();
    }
    let mut errors = Errors::default();
    let mut func = func;
    let siblings = take_siblings(kind, &mut func, &mut errors);
    let expanded = match kind {
        Kind::Cached => {
            let args = CachedArgs::parse(args, &mut errors);
            FnInfo::analyze(&func, "cached", &mut errors).and_then(|info| {
                validate::cached(&func, &info, &args, &mut errors).map(|plan| cached(&plan))
            })
        }
        Kind::Invalidates | Kind::Put => {
            let mut ops = vec![Op::parse(kind, args, None, &mut errors)];
            ops.extend(
                siblings
                    .into_iter()
                    .map(|(kind, args, span)| Op::parse(kind, args, Some(span), &mut errors)),
            );
            FnInfo::analyze(&func, kind.name(), &mut errors).and_then(|info| {
                validate::writes(&func, &info, &ops, &mut errors).map(|plan| writes(&plan))
            })
        }
    };
    match (errors.finish(), expanded) {
        (None, Some(tokens)) => tokens,
        (Some(e), _) => {
            // Keep the function as it was next to the error (less the write
            // attributes this expansion took), so that one mistake in the
            // attribute does not cascade into errors at every caller.
            let err = e.to_compile_error();
            quote!(#err #func)
        }
        (None, None) => func.into_token_stream(),
    }
}

/// What a sibling attribute's arguments become once the first attribute
/// has taken them: it stays on the function (so its import counts as used)
/// and expands to the function unchanged.
const SIBLING_MARKER: &str = "__cache_applied_by_the_first_attribute";

fn is_sibling_marker(args: &TokenStream) -> bool {
    let mut tokens = args.clone().into_iter();
    matches!((tokens.next(), tokens.next()), (Some(proc_macro2::TokenTree::Ident(i)), None) if i == SIBLING_MARKER)
}

/// Takes the arguments of this crate's other attributes on the function:
/// the write attributes after this one (`#[invalidates]`, `#[cache_put]`),
/// which this expansion applies together with its own, in the order
/// written. A `#[cached]` beside a write attribute (or a second
/// `#[cached]`) is an error. Attributes are recognised by their last path
/// segment.
fn take_siblings(
    kind: Kind,
    func: &mut ItemFn,
    errors: &mut Errors,
) -> Vec<(Kind, TokenStream, Span)> {
    let mut siblings = Vec::new();
    for attr in &mut func.attrs {
        let Some(name) = attr.path().segments.last().map(|s| s.ident.to_string()) else {
            continue;
        };
        let sibling = match name.as_str() {
            "cached" => Kind::Cached,
            "invalidates" => Kind::Invalidates,
            "cache_put" => Kind::Put,
            _ => continue,
        };
        match (kind, sibling) {
            (Kind::Cached, Kind::Cached) => {
                errors.at(
                    attr.path().span(),
                    "#[cached] is given twice on this function; keep one",
                );
            }
            (Kind::Cached, _) | (_, Kind::Cached) => {
                errors.at(attr.path().span(), "a function either reads through the cache (#[cached]) or writes (#[invalidates], #[cache_put]), not both; put the read and the write on two functions");
            }
            _ => {
                let args = match &attr.meta {
                    syn::Meta::List(list) => list.tokens.clone(),
                    _ => TokenStream::new(),
                };
                siblings.push((sibling, args, attr.path().span()));
            }
        }
        let path = attr.path().clone();
        let marker = Ident::new(SIBLING_MARKER, Span::call_site());
        attr.meta = syn::parse_quote!(#path(#marker));
    }
    siblings
}

impl Op {
    /// A write attribute's arguments; `span` is the attribute's, for a
    /// sibling (whose empty arguments have no span of their own).
    fn parse(kind: Kind, args: TokenStream, span: Option<Span>, errors: &mut Errors) -> Op {
        match kind {
            Kind::Put => {
                let mut args = PutArgs::parse(args, errors);
                args.span = args.span.or(span);
                Op::Put(args)
            }
            _ => {
                let before = errors.len();
                let mut args = InvalidatesArgs::parse(args, errors);
                args.span = args.span.or(span);
                Op::Invalidates(args, errors.len() == before)
            }
        }
    }
}

fn helper(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

fn default_crate() -> Path {
    syn::parse_quote!(::cache_runtime)
}

/// The expression a placeholder path stands for, spanned at its template.
fn place_expr(place: &[String], span: Span) -> TokenStream {
    let mut parts = place.iter().map(|p| {
        if p == "self" {
            quote_spanned!(span=> self)
        } else {
            Ident::new(p, span).into_token_stream()
        }
    });
    let first = parts.next().unwrap_or_default();
    quote!(#first #(. #parts)*)
}

/// Values of argument placeholders, rendered before the body runs (the body
/// may move the arguments).
#[derive(Default)]
struct Prerendered {
    places: Vec<(Vec<String>, Ident, Span)>,
    /// A batch read's name for one id: rendered where it is bound (per id),
    /// not before the body.
    element: Option<String>,
}

impl Prerendered {
    fn var(&mut self, place: &[String], span: Span) -> Ident {
        if let Some((_, var, _)) = self.places.iter().find(|(p, _, _)| p == place) {
            return var.clone();
        }
        let var = Ident::new(
            &format!("__cache_p{}", self.places.len()),
            Span::mixed_site(),
        );
        self.places.push((place.to_vec(), var.clone(), span));
        var
    }

    fn lets(&self, krate: &Path) -> TokenStream {
        let lets = self.places.iter().map(|(place, var, span)| {
            let expr = place_expr(place, *span);
            quote_spanned!(*span=> let #var: ::std::string::String = #krate::__private::render_part(&#expr);)
        });
        quote!(#(#lets)*)
    }
}

/// Appends the value of `expr` to the key `k` (see `Part` in the runtime's
/// `key.rs`: integers without `fmt`); needs `__private::{IntegerPart,
/// DisplayPart}` in scope (`part_traits`).
fn push_part(k: &Ident, krate: &Path, expr: &TokenStream, span: Span) -> TokenStream {
    quote_spanned!(span=> (&#krate::__private::Part(&#expr)).kind().append(&mut #k, &#expr);)
}

/// The traits `push_part` calls through, in scope for a key's block.
fn part_traits(krate: &Path) -> TokenStream {
    quote!(use #krate::__private::{DisplayPart as _, IntegerPart as _};)
}

/// Code that builds a template into a `String`: argument placeholders from
/// their pre-rendered values (or directly when `pre` is `None`), `ret`
/// placeholders from the value bound as `ret`.
fn build(t: &Template, krate: &Path, pre: Option<&mut Prerendered>) -> TokenStream {
    build_with(t, krate, pre, quote!(finish))
}

/// [`build`], finished with `finish` (`finish_key`: the read's key, in
/// place when short).
fn build_with(
    t: &Template,
    krate: &Path,
    mut pre: Option<&mut Prerendered>,
    finish: TokenStream,
) -> TokenStream {
    let k = helper("__k");
    let cap = t.literal_len();
    let pushes = t.segments.iter().map(|s| match s {
        Segment::Lit(l) => quote!(#k.lit(#l);),
        Segment::Place(place)
            if place[0] == "ret"
                || pre
                    .as_deref()
                    .and_then(|p| p.element.as_deref())
                    .is_some_and(|e| place[0] == e) =>
        {
            push_part(&k, krate, &place_expr(place, t.span()), t.span())
        }
        Segment::Place(place) => match pre.as_deref_mut() {
            Some(pre) => {
                let var = pre.var(place, t.span());
                quote!(#k.rendered(&#var);)
            }
            None => push_part(&k, krate, &place_expr(place, t.span()), t.span()),
        },
    });
    let traits = part_traits(krate);
    quote!({
        #traits
        let mut #k = #krate::__private::KeyBuilder::with_capacity(#cap);
        #(#pushes)*
        #k.#finish()
    })
}

/// The cache handle: borrowed where that cannot conflict with the body (a
/// field of `&self`, or the default), cloned (one `Arc`) where the body may
/// take what the handle comes from (`&mut self`, `self`, an argument).
fn cache_handle(
    cache: Option<&Expr>,
    info: &FnInfo,
    krate: &Path,
    var: &Ident,
) -> (TokenStream, TokenStream) {
    match cache {
        Some(expr) => {
            let root = expr_root(expr);
            let borrowed_self =
                info.receiver == Some(Receiver::Ref) && root.as_ref().is_some_and(|r| r == "self");
            // One statement each, so that no temporary of the expression (a
            // lock guard, say) outlives it. Borrowed: method-call autoref
            // finds `AsRef<Cache>` on the value itself, so `self.cache()`
            // returning `&Cache` borrows from `self`, not from a temporary.
            if borrowed_self {
                let r = quote_spanned!(expr.span()=> {
                    use #krate::__private::CacheHandle as _;
                    #krate::__private::cache_ref((#expr).cache_handle())
                });
                (quote!(let #var = #r;), quote!(#var))
            } else {
                let r = quote_spanned!(expr.span()=> #krate::__private::cache_owned(&#expr as &dyn ::core::convert::AsRef<#krate::Cache>));
                (
                    quote!(let #var = #r;),
                    quote!(::core::option::Option::as_ref(&#var)),
                )
            }
        }
        None => (
            quote!(let #var = #krate::__private::default_cache();),
            quote!(#var),
        ),
    }
}

/// Puts `inner` (statements producing the function's value) where the
/// function's body was; inner attributes (`#![allow(..)]`) stay inside.
fn rebuild(func: &ItemFn, info: &FnInfo, inner: TokenStream) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    let (outer, inner_attrs): (Vec<&Attribute>, Vec<&Attribute>) = attrs
        .iter()
        .partition(|a| matches!(a.style, AttrStyle::Outer));
    let body = if info.async_trait {
        // `#[async_trait]` ran first and boxed the body; keep its shape.
        let pin = match block.stmts.first() {
            Some(Stmt::Expr(Expr::Call(call), None)) => call.func.to_token_stream(),
            _ => quote!(::std::boxed::Box::pin),
        };
        quote!({ #(#inner_attrs)* #pin(async move { #inner }) })
    } else {
        quote!({ #(#inner_attrs)* #inner })
    };
    quote!(#(#outer)* #vis #sig #body)
}

fn cached(plan: &validate::Cached<'_>) -> TokenStream {
    if let Some(batch) = &plan.batch {
        return cached_batch(plan, batch);
    }
    let validate::Cached {
        func,
        info,
        args,
        ret,
        batch: _,
    } = *plan;
    let krate = args.krate.clone().unwrap_or_else(default_crate);
    let fn_name = func.sig.ident.to_string();
    let key_code = match &args.key {
        Some(key) => build_with(key, &krate, None, quote!(finish_key)),
        None => default_key(func, info, args.cache.as_ref(), ret, &krate),
    };
    let version_code = match &args.version {
        Some(v) => {
            let code = build(v, &krate, None);
            quote!(::core::option::Option::Some(#code))
        }
        None => quote!(::core::option::Option::None),
    };

    let mut pre = Prerendered::default();
    let ret_arg = helper("__ret");
    let ret_ident = Ident::new("ret", Span::call_site());
    // Tags and dependencies: the parts built from arguments always, the
    // parts that name `ret` only when there is a value.
    let mut link_lists = Vec::new();
    let mut ret_pushes = Vec::new();
    for (templates, var) in [
        (&args.tags, helper("__tags")),
        (&args.depends_on, helper("__depends_on")),
    ] {
        let (with_ret, without): (Vec<&Template>, Vec<&Template>) =
            templates.iter().partition(|t| t.uses_ret());
        let now: Vec<TokenStream> = without
            .iter()
            .map(|t| build(t, &krate, Some(&mut pre)))
            .collect();
        let later: Vec<TokenStream> = with_ret
            .iter()
            .map(|t| build(t, &krate, Some(&mut pre)))
            .collect();
        let n = templates.len();
        link_lists.push(quote! {
            let mut #var: ::std::vec::Vec<::std::string::String> = ::std::vec::Vec::with_capacity(#n);
            #(#var.push(#now);)*
        });
        ret_pushes.extend(later.into_iter().map(|code| quote!(#var.push(#code);)));
    }
    let pre_lets = pre.lets(&krate);
    let ret_branch = if ret_pushes.is_empty() {
        quote!(let _ = #ret_arg;)
    } else {
        quote!(if let ::core::option::Option::Some(#ret_ident) = #ret_arg { #(#ret_pushes)* })
    };
    let (tags_var, deps_var) = (helper("__tags"), helper("__depends_on"));
    let links_var = helper("__links");
    let unless_code = args.unless.as_ref().map(|unless| {
        let test = decision(unless, &krate, Some(&ret_ident));
        quote! {
            if let ::core::option::Option::Some(#ret_ident) = #ret_arg {
                if #test {
                    #links_var = #links_var.store(false);
                }
            }
        }
    });
    let tags_closure = quote! {
        move |#ret_arg: ::core::option::Option<&_>| -> #krate::Links {
            #(#link_lists)*
            #ret_branch
            #[allow(unused_mut)]
            let mut #links_var = #krate::Links::of(#tags_var, #deps_var);
            #unless_code
            #links_var
        }
    };

    let name = args.name.as_ref().map(|n| n.value()).unwrap_or(fn_name);
    let mut setters = lifetime_setters(args.ttl, args.jitter, args.idle);
    if let Some((ms, _)) = args.cache_none {
        setters.push(quote!(.cache_none(::core::time::Duration::from_millis(#ms))));
    }
    if let Some((ms, _)) = args.stale {
        setters.push(quote!(.stale(::core::time::Duration::from_millis(#ms))));
    }
    if let Some((beta, _)) = args.early {
        setters.push(quote!(.early(#beta)));
    }
    if let Some((ms, _)) = args.fail_safe {
        setters.push(quote!(.fail_safe(::core::time::Duration::from_millis(#ms))));
    }
    if let Some((ms, _)) = args.fail_safe_throttle {
        setters.push(quote!(.fail_safe_throttle(::core::time::Duration::from_millis(#ms))));
    }
    if let Some(bytes) = args.max_size {
        setters.push(quote!(.max_size(#bytes)));
    }
    if let Some(on) = args.single_flight {
        setters.push(quote!(.single_flight(#on)));
    }
    if let Some((true, _)) = args.lock {
        setters.push(quote!(.distributed_lock()));
    }
    if let Some(ms) = args.local_ttl {
        setters.push(quote!(.local_ttl(::core::time::Duration::from_millis(#ms))));
    }
    if let Some((ms, _)) = args.lock_wait {
        setters.push(quote!(.lock_wait(::core::time::Duration::from_millis(#ms))));
    }
    let options = helper("__CACHE_OPTIONS");
    let shape = helper("__cache_shape");
    let share = helper("__cache_share");
    let generic = mentions_generics(ret, func);
    let share_code = if generic {
        quote!(::core::option::Option::None)
    } else {
        // At the return type: in a generic impl whose parameter is not
        // `'static`, the compiler's message (bound it) points there.
        let probe = quote_spanned!(ret.span()=> (&#krate::__private::ShareProbe::<#ret>(::core::marker::PhantomData)).sharer());
        quote!({
            use #krate::__private::{ShareByClone as _, ShareNot as _};
            #probe
        })
    };
    let typed_code = if generic {
        quote!(::core::option::Option::None)
    } else {
        let probe = quote_spanned!(ret.span()=> (&&&&#krate::__private::TypedProbe::<#ret>(::core::marker::PhantomData)).typed());
        quote!({
            use #krate::__private::{TypedNot as _, TypedOpt as _, TypedPlain as _, TypedRes as _, TypedResOpt as _};
            #probe
        })
    };
    // Located at the return type (same hygiene), so a value that cannot be
    // stored is reported there.
    let shape_at_ret = Ident::new("__cache_shape", Span::mixed_site().located_at(ret.span()));
    let assert = quote_spanned!(ret.span()=> #krate::__private::assert_cacheable(&#shape_at_ret, ::core::marker::PhantomData::<#ret>););
    let (cache_let, cond_let, cache_use) = cache_and_condition(args, info, &krate);
    // `hard_timeout`: the outcome of an abandoned loader; a return type
    // that cannot carry it is reported at the return type.
    let hard_timeout = match args.hard_timeout {
        Some((ms, span)) => {
            let outcome = quote_spanned!(span=> #krate::__private::timed_out::<#ret>());
            quote!(::core::option::Option::Some(#krate::__private::HardTimeout::new(
                ::core::time::Duration::from_millis(#ms),
                #outcome,
            )))
        }
        None => quote!(::core::option::Option::None),
    };
    let key_var = helper("__cache_key");
    let version_var = helper("__cache_version");
    let (prefix, stmts) = FnInfo::body_stmts(func, info.async_trait);
    let body = quote!(#(#stmts)*);
    // `soft_timeout`: a loader that owns what it uses, for a read that may
    // return before it ends, made only past a miss (`own`): a hit clones
    // nothing.
    let (run, soft_arg, loader) = match args.soft_timeout {
        Some((ms, span)) => {
            let (before, inside, body) = crate::owned::loader(func, info, body, span);
            (
                quote!(cached_soft::<_, #ret, _, _, _, _>),
                quote!(::core::time::Duration::from_millis(#ms),),
                quote!(|| { #before move || async move { #inside #body } }),
            )
        }
        None => (
            quote!(cached::<_, #ret, _, _, _>),
            quote!(),
            quote!(move || async move { #body }),
        ),
    };
    let call = quote! {
        #krate::__private::#run(
            #shape,
            #cache_use,
            &#options,
            #key_var,
            #version_var,
            #share,
            #typed_code,
            #tags_closure,
            #hard_timeout,
            #soft_arg
            #loader,
        )
    };
    // A hit in process is the value itself, returned; the rest of a read is
    // awaited. Matched in a statement of its own, so that the function's
    // future holds that small future only, not the value (a match
    // scrutinee's temporary would live across the `.await`).
    let finish = if args.soft_timeout.is_some() {
        quote!(#call.await)
    } else {
        let (value, rest) = (helper("__cache_value"), helper("__cache_rest"));
        quote! {
            let #rest = match #call {
                #krate::__private::Begun::Ready(#value) => return #value,
                #krate::__private::Begun::Pending(#rest) => #rest,
            };
            #rest.await
        }
    };
    let inner = quote! {
        let #shape = {
            use #krate::__private::{PickOpt as _, PickPlain as _, PickRes as _, PickResOpt as _};
            (&&&#krate::__private::ShapeProbe::<#ret>::new()).shape()
        };
        let #share = #share_code;
        #assert
        const #options: #krate::__private::CacheOptions = #krate::__private::CacheOptions::new(#name) #(#setters)*;
        #cache_let
        #(#prefix)*
        #cond_let
        let #key_var: #krate::__private::Key = #key_code;
        let #version_var: ::core::option::Option<::std::string::String> = #version_code;
        #pre_lets
        #finish
    };
    rebuild(func, info, inner)
}

/// `#[cached(batch, key = "user:{id}")]`: the keys are built per id
/// before the body; the body becomes a loader called with the missing ids
/// (bound to the ids' argument), the other arguments cloned per call.
fn cached_batch(plan: &validate::Cached<'_>, batch: &validate::BatchPlan) -> TokenStream {
    let validate::Cached {
        func,
        info,
        args,
        ret,
        batch: _,
    } = *plan;
    let krate = args.krate.clone().unwrap_or_else(default_crate);
    let key = args.key.as_ref().expect("checked: a batch read has a key");
    let element = Ident::new(&batch.element, key.span());
    let key_code = build(key, &krate, None);
    let mut pre = Prerendered {
        element: Some(batch.element.clone()),
        ..Prerendered::default()
    };
    let ret_ident = Ident::new("ret", Span::call_site());
    let mut link_lists = Vec::new();
    for (templates, var) in [
        (&args.tags, helper("__tags")),
        (&args.depends_on, helper("__depends_on")),
    ] {
        let parts: Vec<TokenStream> = templates
            .iter()
            .map(|t| build(t, &krate, Some(&mut pre)))
            .collect();
        let n = templates.len();
        link_lists.push(quote! {
            let mut #var: ::std::vec::Vec<::std::string::String> = ::std::vec::Vec::with_capacity(#n);
            #(#var.push(#parts);)*
        });
    }
    let pre_lets = pre.lets(&krate);
    let (tags_var, deps_var) = (helper("__tags"), helper("__depends_on"));
    let name = args
        .name
        .as_ref()
        .map(|n| n.value())
        .unwrap_or_else(|| func.sig.ident.to_string());
    let mut setters = lifetime_setters(args.ttl, args.jitter, None);
    if let Some((ms, _)) = args.cache_none {
        setters.push(quote!(.cache_none(::core::time::Duration::from_millis(#ms))));
    }
    if let Some(bytes) = args.max_size {
        setters.push(quote!(.max_size(#bytes)));
    }
    if let Some(on) = args.single_flight {
        setters.push(quote!(.single_flight(#on)));
    }
    if let Some(ms) = args.local_ttl {
        setters.push(quote!(.local_ttl(::core::time::Duration::from_millis(#ms))));
    }
    let options = helper("__CACHE_OPTIONS");
    let (cache_let, cond_let, cache_use) = cache_and_condition(args, info, &krate);
    let ids = &batch.ids;
    let (ids_var, keys_var, missing) = (
        helper("__cache_ids"),
        helper("__cache_keys"),
        helper("__cache_missing"),
    );
    let rebind = match batch.kind {
        validate::IdsArg::Slice => quote!(&#missing[..]),
        validate::IdsArg::VecRef => quote!(&#missing),
        validate::IdsArg::Vec => quote!(#missing),
    };
    // Every other argument the body may use, cloned for each call.
    let others: Vec<&Ident> = info.args.iter().filter(|a| *a != ids).collect();
    let assert = quote_spanned!(ret.span()=> #krate::__private::assert_batch::<#ret>(););
    let (prefix, stmts) = FnInfo::body_stmts(func, info.async_trait);
    let inner = quote! {
        #assert
        const #options: #krate::__private::CacheOptions = #krate::__private::CacheOptions::new(#name) #(#setters)*;
        #cache_let
        #(#prefix)*
        #cond_let
        let #ids_var: ::std::vec::Vec<_> = #ids.iter().cloned().collect();
        let #keys_var: ::std::vec::Vec<::std::string::String> =
            #ids_var.iter().map(|#element| #key_code).collect();
        #pre_lets
        #krate::__private::cached_batch::<#ret, _, _, _>(
            #cache_use,
            &#options,
            #ids_var,
            #keys_var,
            move |#element: &_, #ret_ident: &_| -> #krate::Links {
                let _ = (#element, #ret_ident);
                #(#link_lists)*
                #krate::Links::of(#tags_var, #deps_var)
            },
            move |#missing: ::std::vec::Vec<_>| {
                #(let #others = ::core::clone::Clone::clone(&#others);)*
                async move {
                    let #ids = #rebind;
                    #(#stmts)*
                }
            },
        ).await
    };
    rebuild(func, info, inner)
}

/// The cache handle's binding, the `condition`'s (decided before the body
/// is made: it may move the arguments), and the cache a read uses (none,
/// counted as bypassed, when the condition is false).
fn cache_and_condition(
    args: &CachedArgs,
    info: &FnInfo,
    krate: &Path,
) -> (TokenStream, TokenStream, TokenStream) {
    let (cache_let, cache_use) = cache_handle(args.cache.as_ref(), info, krate, &helper("__cache"));
    let cond_var = helper("__cache_condition");
    match &args.condition {
        Some(cond) => {
            let test = decision(cond, krate, None);
            (
                cache_let,
                quote!(let #cond_var: ::core::primitive::bool = #test;),
                quote!(#krate::__private::when(#cache_use, #cond_var)),
            )
        }
        None => (cache_let, quote!(), cache_use),
    }
}

/// The code of a `condition` or `unless`: a closure is called with `arg`
/// (the value), any other expression is used as it is; either must be a
/// `bool`, which the compiler reports at the user's expression.
fn decision(expr: &Expr, krate: &Path, arg: Option<&Ident>) -> TokenStream {
    match (expr, arg) {
        (Expr::Closure(_), Some(arg)) => {
            quote_spanned!(expr.span()=> #krate::__private::unless(#arg, #expr))
        }
        _ => {
            let var = Ident::new(
                "__cache_decision",
                Span::mixed_site().located_at(expr.span()),
            );
            quote_spanned!(expr.span()=> {
                let #var: ::core::primitive::bool = #expr;
                #var
            })
        }
    }
}

/// `module::function@types:arg1:arg2` (or `Type::method@types:...` for
/// methods), each argument through its `Display`, escaped. `@types` tags the
/// return type and the function's type parameters, so two functions that
/// differ only in types (trait impls for several types, generic calls) never
/// share a key. The argument the cache comes from is left out.
fn default_key(
    func: &ItemFn,
    info: &FnInfo,
    cache: Option<&Expr>,
    ret: &Type,
    krate: &Path,
) -> TokenStream {
    let cache_root = cache.and_then(expr_root);
    let k = helper("__k");
    let prefix = if info.receiver.is_some() {
        quote!(#k.lit(::core::any::type_name::<Self>());)
    } else {
        quote!(#k.lit(::core::module_path!());)
    };
    let suffix = format!("::{}", func.sig.ident);
    let type_params = func.sig.generics.type_params().map(|p| &p.ident);
    let parts = info
        .args
        .iter()
        .filter(|a| cache_root.as_ref() != Some(*a))
        .map(|a| {
            let part = push_part(&k, krate, &a.to_token_stream(), a.span());
            quote_spanned!(a.span()=> #k.lit(":"); #part)
        });
    let traits = part_traits(krate);
    quote!({
        #traits
        let mut #k = #krate::__private::KeyBuilder::with_capacity(64);
        #prefix
        #k.lit(#suffix);
        #k.lit(&#krate::__private::type_tag(&[::core::any::type_name::<#ret>() #(, ::core::any::type_name::<#type_params>())*]));
        #(#parts)*
        #k.finish_key()
    })
}

/// The variable an expression starts from: `cache` in `cache`, `&cache` or
/// `cache.inner`, `self` in `self.cache`.
fn expr_root(expr: &Expr) -> Option<Ident> {
    match expr {
        Expr::Path(p) => p.path.get_ident().cloned(),
        Expr::Field(f) => expr_root(&f.base),
        Expr::Reference(r) => expr_root(&r.expr),
        Expr::Paren(p) => expr_root(&p.expr),
        Expr::MethodCall(m) => expr_root(&m.receiver),
        _ => None,
    }
}

/// One write attribute of a function: `#[invalidates]` or `#[cache_put]`.
pub(crate) enum Op {
    /// With whether its arguments parsed without error.
    Invalidates(InvalidatesArgs, bool),
    Put(PutArgs),
}

/// `#[invalidates]` and `#[cache_put]`, however many are on the function:
/// the body runs, and once it has succeeded every invalidation and every
/// put is handed to the runtime together, which applies each cache's share
/// in one step (invalidations first, then puts; see `Cache::change`).
fn writes(plan: &validate::Writes<'_>) -> TokenStream {
    let validate::Writes { func, info, .. } = *plan;
    let krate = plan
        .ops
        .iter()
        .find_map(|op| match op {
            Write::Invalidates(a) => a.krate.clone(),
            Write::Put(a, _) => a.krate.clone(),
        })
        .unwrap_or_else(default_crate);
    let mut pre = Prerendered::default();
    let changes = helper("__cache_changes");
    let ok_var = helper("__cache_ok");
    let mut cache_lets = Vec::new();
    let mut consts = Vec::new();
    let mut before = Vec::new();
    let mut after = Vec::new();
    for (i, op) in plan.ops.iter().enumerate() {
        let cache_var = helper(&format!("__cache{i}"));
        match op {
            Write::Invalidates(args) => {
                let (cache_let, cache_use) =
                    cache_handle(args.cache.as_ref(), info, &krate, &cache_var);
                cache_lets.push(cache_let);
                let [keys, tags, patterns, bumps] =
                    [&args.keys, &args.tags, &args.patterns, &args.bump].map(|list| {
                        list.iter()
                            .map(|t| build(t, &krate, Some(&mut pre)))
                            .collect::<Vec<TokenStream>>()
                    });
                let publish = match &args.publish {
                    Some(p) => quote!(::core::option::Option::Some(#p)),
                    None => quote!(::core::option::Option::None),
                };
                // `condition`: over the arguments, decided before the body
                // (which may move them); naming `ret`, decided after it, on
                // the `Ok` value.
                let cond_var = helper(&format!("__cache_condition{i}"));
                let cond_after = match &args.condition {
                    // (A function that returns nothing was refused.)
                    Some(cond) if names_ret(cond) => decision(cond, &krate, None),
                    Some(cond) => {
                        let test = decision(cond, &krate, None);
                        before.push(quote!(let #cond_var: ::core::primitive::bool = #test;));
                        quote!(#cond_var)
                    }
                    None => quote!(true),
                };
                after.push(quote! {
                    if #cond_after {
                        #changes.invalidate(
                            #cache_use,
                            ::std::vec![#(#keys),*],
                            ::std::vec![#(#tags),*],
                            ::std::vec![#(#patterns),*],
                            ::std::vec![#(#bumps),*],
                            #publish,
                        );
                    }
                });
            }
            Write::Put(args, key) => {
                let (cache_let, cache_use) =
                    cache_handle(args.cache.as_ref(), info, &krate, &cache_var);
                cache_lets.push(cache_let);
                let key_code = build(key, &krate, Some(&mut pre));
                let [tags, deps] = [&args.tags, &args.depends_on].map(|list| {
                    list.iter()
                        .map(|t| build(t, &krate, Some(&mut pre)))
                        .collect::<Vec<TokenStream>>()
                });
                let setters = lifetime_setters(args.ttl, args.jitter, args.idle);
                let name = func.sig.ident.to_string();
                let options = helper(&format!("__CACHE_OPTIONS{i}"));
                consts.push(quote!(const #options: #krate::__private::CacheOptions = #krate::__private::CacheOptions::new(#name) #(#setters)*;));
                // Taken before the body (the write) runs: a concurrent write
                // that invalidates the key meanwhile keeps this put out.
                let ticket = helper(&format!("__cache_ticket{i}"));
                before.push(quote!(let #ticket = #krate::__private::ticket(#cache_use).await;));
                after.push(quote! {
                    #changes.put(
                        #cache_use,
                        #krate::__private::encode_put(
                            #cache_use,
                            &#ticket,
                            #key_code,
                            #ok_var,
                            &#options,
                            #krate::Links::of(::std::vec![#(#tags),*], ::std::vec![#(#deps),*]),
                        ),
                    );
                });
            }
        }
    }
    let pre_lets = pre.lets(&krate);
    // `impl Trait` cannot be named in a `let`; such a body needs no hint.
    let annotation = match &info.ret {
        Some(ret) if !has_impl_trait(ret) => quote!(: #ret),
        Some(_) => quote!(),
        None => quote!(: ()),
    };
    let result = helper("__cache_result");
    let plan = helper("__cache_plan");
    let ret_ident = Ident::new("ret", Span::call_site());
    let (prefix, stmts) = FnInfo::body_stmts(func, info.async_trait);
    let inner = quote! {
        #(#consts)*
        #(#cache_lets)*
        #(#prefix)*
        #(#before)*
        #pre_lets
        let #result #annotation = async move { #(#stmts)* }.await;
        // Render and encode everything before awaiting, so no borrow of the
        // result is held across the await (the future stays `Send` whatever
        // `T` is).
        let #plan = match {
            use #krate::__private::{OutcomeOfResult as _, OutcomeOfValue as _};
            (&#krate::__private::OutcomeProbe(&#result)).success()
        } {
            ::core::option::Option::Some(#ok_var) => {
                #[allow(unused_variables)]
                let #ret_ident = #ok_var;
                let mut #changes = #krate::__private::Changes::new();
                #(#after)*
                ::core::option::Option::Some(#changes)
            }
            ::core::option::Option::None => ::core::option::Option::None,
        };
        if let ::core::option::Option::Some(#plan) = #plan {
            #plan.apply().await;
        }
        #result
    };
    rebuild(func, info, inner)
}

/// The `CacheOptions` setters for `ttl`, `jitter` and `idle`.
fn lifetime_setters(
    ttl: Option<TtlArg>,
    jitter: Option<f32>,
    idle: Option<(u64, Span)>,
) -> Vec<TokenStream> {
    let mut setters = Vec::new();
    match ttl {
        Some(TtlArg::Millis(ms)) => {
            setters.push(quote!(.ttl(::core::time::Duration::from_millis(#ms))))
        }
        Some(TtlArg::Forever) => setters.push(quote!(.forever())),
        None => {}
    }
    if let Some(j) = jitter {
        setters.push(quote!(.jitter(#j)));
    }
    if let Some((ms, _)) = idle {
        setters.push(quote!(.idle(::core::time::Duration::from_millis(#ms))));
    }
    setters
}
