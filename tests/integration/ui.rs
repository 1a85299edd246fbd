//! Compile-time behaviour of the macros: every supported shape compiles and
//! runs; every misuse is an error at the offending token (see the `.stderr`
//! goldens; regenerate them with `TRYBUILD=overwrite`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
