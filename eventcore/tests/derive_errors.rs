//! Misuse of `#[derive(Event)]` and `#[derive(Command)]`, and a fold that
//! would read the command deciding on it, are compile errors that say what
//! to do; each case in `tests/ui` with the error it gives.

#[test]
fn misuse_of_the_derives_fails_to_compile_with_a_clear_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
