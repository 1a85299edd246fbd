//! What the macros need to know about the annotated function: its
//! arguments, its return type and where its async body is (a native
//! `async fn`, or the `Box::pin(async move { .. })` left by `#[async_trait]`).

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{
    Expr, FnArg, GenericArgument, ItemFn, Pat, PathArguments, ReturnType, Stmt, Type,
    TypeParamBound,
};

use crate::args::Errors;

/// How `self` is received.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Receiver {
    Ref,
    Other,
}

/// Which part of a return type is cached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ShapeKind {
    Plain,
    Opt,
    Res,
    ResOpt,
}

pub(crate) struct FnInfo {
    pub(crate) receiver: Option<Receiver>,
    /// Arguments bound to a plain identifier, with their spans.
    pub(crate) args: Vec<syn::Ident>,
    /// Arguments bound to a pattern (not usable in templates).
    pub(crate) pattern_args: Vec<Span>,
    /// The return type as written (`None` for `()`).
    pub(crate) ret: Option<Type>,
    pub(crate) async_trait: bool,
}

impl FnInfo {
    pub(crate) fn analyze(func: &ItemFn, attr: &str, errors: &mut Errors) -> Option<FnInfo> {
        let sig = &func.sig;
        let mut receiver = None;
        let mut args = Vec::new();
        let mut pattern_args = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(r) => {
                    receiver = Some(if r.reference.is_some() && r.mutability.is_none() {
                        Receiver::Ref
                    } else {
                        Receiver::Other
                    });
                }
                FnArg::Typed(t) => match &*t.pat {
                    Pat::Ident(p) => args.push(p.ident.clone()),
                    other => pattern_args.push(other.span()),
                },
            }
        }
        let (ret, async_trait) = if sig.asyncness.is_some() {
            (
                match &sig.output {
                    ReturnType::Default => None,
                    ReturnType::Type(_, ty) => Some((**ty).clone()),
                },
                false,
            )
        } else if let Some(output) = async_trait_output(func) {
            (output, true)
        } else {
            errors.at(
                sig.fn_token.span,
                format!("#[{attr}] goes on an `async fn`; make this function `async`"),
            );
            return None;
        };
        Some(FnInfo {
            receiver,
            args,
            pattern_args,
            ret,
            async_trait,
        })
    }

    /// The statements of the async body to wrap, after a prefix to keep in
    /// front of the generated code: for `#[async_trait]`, its rebinding of
    /// the arguments (`let id = id;`), so that the key is built from the
    /// rebound names and they count as used.
    pub(crate) fn body_stmts(func: &ItemFn, async_trait: bool) -> (Vec<Stmt>, Vec<Stmt>) {
        if async_trait && let Some(Expr::Async(block)) = boxed_async(func) {
            let stmts = &block.block.stmts;
            let split = stmts.iter().position(is_ret_binding).unwrap_or(0);
            return (stmts[..split].to_vec(), stmts[split..].to_vec());
        }
        (Vec::new(), func.block.stmts.clone())
    }
}

/// `let __ret: Ret = { body };`, where `#[async_trait]` puts the body.
fn is_ret_binding(stmt: &Stmt) -> bool {
    let Stmt::Local(local) = stmt else {
        return false;
    };
    let pat = match &local.pat {
        Pat::Type(t) => &*t.pat,
        other => other,
    };
    matches!(pat, Pat::Ident(p) if p.ident == "__ret")
}

/// The single `Box::pin(async move { .. })` expression `#[async_trait]`
/// leaves as a method's body.
fn boxed_async(func: &ItemFn) -> Option<&Expr> {
    let [Stmt::Expr(Expr::Call(call), None)] = func.block.stmts.as_slice() else {
        return None;
    };
    let Expr::Path(path) = &*call.func else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "pin" || call.args.len() != 1 {
        return None;
    }
    match call.args.first() {
        Some(e @ Expr::Async(_)) => Some(e),
        _ => None,
    }
}

/// For an `#[async_trait]` method: the `Output` of its boxed future.
fn async_trait_output(func: &ItemFn) -> Option<Option<Type>> {
    boxed_async(func)?;
    let ReturnType::Type(_, ty) = &func.sig.output else {
        return None;
    };
    let output = find_future_output(ty)?;
    Some(match output {
        Type::Tuple(t) if t.elems.is_empty() => None,
        other => Some(other),
    })
}

fn find_future_output(ty: &Type) -> Option<Type> {
    match ty {
        Type::Path(p) => p.path.segments.iter().find_map(|seg| match &seg.arguments {
            PathArguments::AngleBracketed(a) => a.args.iter().find_map(|arg| match arg {
                GenericArgument::Type(t) => find_future_output(t),
                _ => None,
            }),
            _ => None,
        }),
        Type::TraitObject(obj) => obj.bounds.iter().find_map(|b| match b {
            TypeParamBound::Trait(t) => {
                t.path.segments.last().and_then(|seg| match &seg.arguments {
                    PathArguments::AngleBracketed(a) => a.args.iter().find_map(|arg| match arg {
                        GenericArgument::AssocType(assoc) if assoc.ident == "Output" => {
                            Some(assoc.ty.clone())
                        }
                        _ => None,
                    }),
                    _ => None,
                })
            }
            _ => None,
        }),
        Type::Paren(p) => find_future_output(&p.elem),
        _ => None,
    }
}

/// Whether a return type involves generic parameters the attribute can see:
/// the function's own, `Self`, or `impl Trait`. Sharing a value between
/// tasks needs `'static`, which such types do not promise. An impl's
/// parameters are out of the attribute's sight: a method that returns one
/// needs it bounded `'static` (the compiler says so, at the attribute).
pub(crate) fn mentions_generics(ty: &Type, func: &ItemFn) -> bool {
    use syn::visit::Visit;
    struct Finder<'a> {
        params: Vec<&'a syn::Ident>,
        found: bool,
    }
    impl<'ast> Visit<'ast> for Finder<'_> {
        fn visit_path(&mut self, path: &'ast syn::Path) {
            if let Some(ident) = path.get_ident()
                && self.params.contains(&ident)
            {
                self.found = true;
            }
            if path.segments.first().is_some_and(|s| s.ident == "Self") {
                self.found = true;
            }
            syn::visit::visit_path(self, path);
        }
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.found = true;
        }
    }
    let mut finder = Finder {
        params: func.sig.generics.type_params().map(|p| &p.ident).collect(),
        found: false,
    };
    finder.visit_type(ty);
    finder.found
}

/// Whether a type contains `impl Trait` (which a `let` cannot name).
pub(crate) fn has_impl_trait(ty: &Type) -> bool {
    use syn::visit::Visit;
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    finder.visit_type(ty);
    finder.0
}

/// The shape of a return type, and the type `ret` placeholders see.
pub(crate) fn shape_of(ret: &Type) -> (ShapeKind, Type) {
    if let Some((name, first)) = outer_generic(ret) {
        if name == "Result" {
            if let Some(("Option", inner)) = outer_generic(&first)
                .as_ref()
                .map(|(n, t)| (n.as_str(), t.clone()))
            {
                return (ShapeKind::ResOpt, inner);
            }
            return (ShapeKind::Res, first);
        }
        if name == "Option" {
            return (ShapeKind::Opt, first);
        }
    }
    (ShapeKind::Plain, ret.clone())
}

/// `Name<First, ..>` -> ("Name", First), for the last path segment.
fn outer_generic(ty: &Type) -> Option<(String, Type)> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let first = args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    })?;
    Some((last.ident.to_string(), first))
}
