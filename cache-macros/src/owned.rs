//! `soft_timeout`: the body may run on after the call has returned (the
//! cached copy answered), so the loader owns what it uses. `&self` is
//! cloned (`Self: Clone`) and the body's `self` is rewritten to the clone,
//! as `#[async_trait]` does; an argument `name: &T` is turned into its
//! owned form (`ToOwned`) before the loader, and borrowed back as `&T`
//! inside it, so the body reads as written.

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::{FnArg, ItemFn, Pat, Type};

use crate::args::Errors;
use crate::func::{FnInfo, Receiver};

/// Checks that a function's loader can own what it uses; errors at `span`
/// (the `soft_timeout` argument) or at the argument that cannot be owned.
pub(crate) fn check(func: &ItemFn, info: &FnInfo, span: Span, errors: &mut Errors) -> bool {
    let mut ok = true;
    if info.async_trait {
        errors.at(span, "`soft_timeout` is not supported under `#[async_trait]`: write the trait's method as a native `async fn` (Rust 1.75+) to use it");
        ok = false;
    }
    if info.receiver == Some(Receiver::Other) {
        errors.at(span, "`soft_timeout` lets the body run on after the call returns, so the body gets a clone of `&self`; it cannot take `self` or `&mut self`");
        ok = false;
    }
    for input in &func.sig.inputs {
        let FnArg::Typed(arg) = input else { continue };
        let by_ref = matches!(&*arg.ty, Type::Reference(_));
        match (&*arg.ty, &*arg.pat) {
            (Type::Reference(r), _) if matches!(&*r.elem, Type::ImplTrait(_)) => {
                errors.at(syn::spanned::Spanned::span(&r.elem), "`soft_timeout` gives the body an owned copy of each borrowed argument, and an `impl Trait` behind a reference has no owned form to name; take a generic parameter `T: ToOwned` or an owned value");
                ok = false;
            }
            (Type::Reference(r), _) if r.mutability.is_some() => {
                errors.at(r.and_token.span, "`soft_timeout` lets the body run on after the call returns, so it cannot borrow a `&mut` argument; pass an owned value");
                ok = false;
            }
            (_, Pat::Ident(_)) => {}
            (_, pat) if by_ref => {
                errors.at(syn::spanned::Spanned::span(pat), "`soft_timeout` gives the body an owned copy of each borrowed argument, which needs a name: bind this argument to a name and destructure it in the body");
                ok = false;
            }
            _ => {}
        }
    }
    ok
}

/// Statements before the loader (the clone of `self`, the owned form of
/// each borrowed argument) and at the start of its `async move` block (the
/// borrows back), and the body with `self` rewritten.
pub(crate) fn loader(
    func: &ItemFn,
    info: &FnInfo,
    body: TokenStream,
    span: Span,
) -> (TokenStream, TokenStream, TokenStream) {
    let mut before = TokenStream::new();
    let mut inside = TokenStream::new();
    let this = Ident::new("__cache_this", Span::mixed_site());
    // What the body does not name, it does not capture: nothing to own.
    let body = if info.receiver == Some(Receiver::Ref) && mentions(&body, "self") {
        let receiver = Ident::new("__self", Span::call_site());
        before.extend(
            quote_spanned!(span=> let #this = <Self as ::core::clone::Clone>::clone(self);),
        );
        inside.extend(quote!(let #receiver = &#this;));
        replace_self(body)
    } else {
        body
    };
    for input in &func.sig.inputs {
        let FnArg::Typed(arg) = input else { continue };
        let (Type::Reference(r), Pat::Ident(p)) = (&*arg.ty, &*arg.pat) else {
            continue;
        };
        let name = &p.ident;
        if !mentions(&body, &name.to_string()) {
            continue;
        }
        let elem = &r.elem;
        let target = without_lifetimes(quote!(#elem));
        let at = syn::spanned::Spanned::span(elem);
        let mutability = &p.mutability;
        if mutability.is_some() {
            // The body's `mut` now applies to the borrow back inside; the
            // signature's still counts as used.
            before.extend(quote!(let _ = &mut #name;));
        }
        before.extend(quote_spanned!(at=> let #name = ::std::borrow::ToOwned::to_owned(#name);));
        inside.extend(quote!(#[allow(unused_variables, unused_mut)] let #mutability #name: &#target = ::core::borrow::Borrow::borrow(&#name);));
    }
    (before, inside, body)
}

/// Whether `tokens` may name `name`: as an identifier (in macro calls
/// too), or inside a literal (`format!("{name}")`); erring towards yes.
fn mentions(tokens: &TokenStream, name: &str) -> bool {
    tokens.clone().into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => ident == name,
        TokenTree::Group(group) => mentions(&group.stream(), name),
        TokenTree::Literal(lit) => lit.to_string().contains(name),
        TokenTree::Punct(_) => false,
    })
}

/// `self` in the body, as the clone's name (`__self`); not a path's
/// `self::` (the module).
fn replace_self(tokens: TokenStream) -> TokenStream {
    let mut trees = tokens.into_iter().peekable();
    let mut out = Vec::new();
    while let Some(tree) = trees.next() {
        let path = matches!(trees.peek(), Some(TokenTree::Punct(p)) if p.as_char() == ':');
        out.push(match tree {
            TokenTree::Ident(ident) if ident == "self" && !path => {
                TokenTree::Ident(Ident::new("__self", ident.span()))
            }
            TokenTree::Group(group) => {
                let mut replaced = Group::new(group.delimiter(), replace_self(group.stream()));
                replaced.set_span(group.span());
                TokenTree::Group(replaced)
            }
            other => other,
        });
    }
    out.into_iter().collect()
}

/// A type with its named lifetimes elided (`'_`), to name the borrow back
/// inside the loader, where the function's lifetimes do not reach.
fn without_lifetimes(tokens: TokenStream) -> TokenStream {
    let mut out = TokenStream::new();
    let mut trees = tokens.into_iter().peekable();
    while let Some(tree) = trees.next() {
        match tree {
            TokenTree::Punct(p) if p.as_char() == '\'' => {
                // A lifetime: the quote and its name.
                if let Some(TokenTree::Ident(_)) = trees.peek() {
                    trees.next();
                    out.extend(quote!('_));
                } else {
                    out.extend([TokenTree::Punct(p)]);
                }
            }
            TokenTree::Group(group) => {
                let mut g = Group::new(group.delimiter(), without_lifetimes(group.stream()));
                g.set_span(group.span());
                out.extend([TokenTree::Group(g)]);
            }
            other => out.extend([other]),
        }
    }
    out
}
