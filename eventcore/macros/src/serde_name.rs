//! The name serde gives an enum variant, from the same attributes serde
//! reads: `#[serde(rename = "...")]` on the variant, else
//! `#[serde(rename_all = "...")]` on the enum applied to the variant's name.

use syn::{Attribute, LitStr, Token, meta::ParseNestedMeta};

/// A name given by `rename` or `rename_all`, with where it was written.
struct Given {
    value: String,
    span: LitStr,
}

/// The `rename_all` rule of an enum's `#[serde(...)]` attributes, if any.
pub(crate) fn rename_all(attrs: &[Attribute]) -> syn::Result<Option<Rule>> {
    let Some(given) = find(attrs, "rename_all")? else {
        return Ok(None);
    };
    Rule::parse(&given.value)
        .map(Some)
        .ok_or_else(|| syn::Error::new_spanned(given.span, "unknown serde rename_all rule"))
}

/// The name serde serialises the variant `ident` under.
pub(crate) fn variant_name(
    ident: &syn::Ident,
    attrs: &[Attribute],
    rule: Option<Rule>,
) -> syn::Result<String> {
    if let Some(given) = find(attrs, "rename")? {
        return Ok(given.value);
    }
    let name = ident.to_string();
    Ok(match rule {
        Some(rule) => rule.apply(&name),
        None => name,
    })
}

/// The value of `key` (`key = "..."`, or `key(serialize = "...",
/// deserialize = "...")` with both the same) in `#[serde(...)]` attributes.
fn find(attrs: &[Attribute], key: &str) -> syn::Result<Option<Given>> {
    let mut found = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if !meta.path.is_ident(key) {
                return skip(&meta);
            }
            if meta.input.peek(Token![=]) {
                let lit: LitStr = meta.value()?.parse()?;
                found = Some(Given {
                    value: lit.value(),
                    span: lit,
                });
                return Ok(());
            }
            let (mut ser, mut de) = (None::<LitStr>, None::<LitStr>);
            meta.parse_nested_meta(|inner| {
                let lit: LitStr = inner.value()?.parse()?;
                if inner.path.is_ident("serialize") {
                    ser = Some(lit);
                } else if inner.path.is_ident("deserialize") {
                    de = Some(lit);
                }
                Ok(())
            })?;
            match (ser, de) {
                (Some(s), Some(d)) if s.value() == d.value() => {
                    found = Some(Given {
                        value: s.value(),
                        span: s,
                    });
                    Ok(())
                }
                (Some(s), _) | (None, Some(s)) => Err(syn::Error::new_spanned(
                    s,
                    format!(
                        "#[derive(Event)] stores one type name per variant: give serde's `{key}` \
                         the same name for serialize and deserialize"
                    ),
                )),
                (None, None) => Ok(()),
            }
        })?;
    }
    Ok(found)
}

/// Consumes a serde attribute item this macro does not read.
fn skip(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let _: syn::Lit = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        let _: proc_macro2::TokenStream = content.parse()?;
    }
    Ok(())
}

/// serde's `rename_all` rules, as they apply to variant names.
#[derive(Clone, Copy)]
pub(crate) enum Rule {
    Lower,
    Upper,
    Pascal,
    Camel,
    Snake,
    ScreamingSnake,
    Kebab,
    ScreamingKebab,
}

impl Rule {
    fn parse(rule: &str) -> Option<Rule> {
        Some(match rule {
            "lowercase" => Rule::Lower,
            "UPPERCASE" => Rule::Upper,
            "PascalCase" => Rule::Pascal,
            "camelCase" => Rule::Camel,
            "snake_case" => Rule::Snake,
            "SCREAMING_SNAKE_CASE" => Rule::ScreamingSnake,
            "kebab-case" => Rule::Kebab,
            "SCREAMING-KEBAB-CASE" => Rule::ScreamingKebab,
            _ => return None,
        })
    }

    /// The rule applied to a variant name written in PascalCase, the way
    /// serde applies it.
    fn apply(self, variant: &str) -> String {
        let snake = || {
            let mut out = String::with_capacity(variant.len() + 4);
            for (i, ch) in variant.char_indices() {
                if i > 0 && ch.is_uppercase() {
                    out.push('_');
                }
                out.push(ch.to_ascii_lowercase());
            }
            out
        };
        match self {
            Rule::Lower => variant.to_ascii_lowercase(),
            Rule::Upper => variant.to_ascii_uppercase(),
            Rule::Pascal => variant.to_owned(),
            Rule::Camel => {
                let mut chars = variant.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_lowercase().to_string() + chars.as_str()
                })
            }
            Rule::Snake => snake(),
            Rule::ScreamingSnake => snake().to_ascii_uppercase(),
            Rule::Kebab => snake().replace('_', "-"),
            Rule::ScreamingKebab => snake().to_ascii_uppercase().replace('_', "-"),
        }
    }
}
