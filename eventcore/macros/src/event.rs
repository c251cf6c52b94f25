//! `#[derive(Event)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Data, DeriveInput, LitInt, LitStr, spanned::Spanned};

use crate::{is_stream, no_generics, serde_name};

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    no_generics(input, "Event")?;
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "#[derive(Event)] works on an enum, one variant per kind of event",
        ));
    };
    if data.variants.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "#[derive(Event)] needs at least one variant",
        ));
    }
    let EnumArgs { shared, upcast } = enum_args(&input.attrs)?;
    let rule = serde_name::rename_all(&input.attrs)?;
    let name = &input.ident;
    let mut stream_arms = Vec::new();
    let mut type_arms = Vec::new();
    let mut version_arms = Vec::new();
    let mut seen_names: Vec<(String, &syn::Ident)> = Vec::new();
    for variant in &data.variants {
        let v = &variant.ident;
        let type_name = serde_name::variant_name(v, &variant.attrs, rule)?;
        if let Some((_, other)) = seen_names.iter().find(|(n, _)| *n == type_name) {
            return Err(syn::Error::new_spanned(
                v,
                format!("variants `{other}` and `{v}` would both be stored as `{type_name}`"),
            ));
        }
        seen_names.push((type_name.clone(), v));
        let (pattern, binding, ty) = stream_of(variant, shared.as_ref())?;
        // The check's error points at the marked field.
        let as_id = quote_spanned! {ty.span()=>
            <#ty as ::eventcore::__derive::IsStreamId>::as_stream_id(#binding)
        };
        stream_arms.push(quote! { #name::#v #pattern => #as_id, });
        type_arms.push(quote! { #name::#v { .. } => #type_name, });
        if let Some(version) = variant_version(variant)? {
            if version > 1 && upcast.is_none() {
                return Err(syn::Error::new_spanned(
                    v,
                    format!(
                        "variant `{v}` is at schema version {version}, but the enum names no \
                         upcaster to read its older versions: add #[event(upcast = path)] on the \
                         enum, a fn(&str, u32, serde_json::Value) -> Result<serde_json::Value, \
                         eventcore::BoxError>"
                    ),
                ));
            }
            version_arms.push(quote! { #type_name => #version, });
        }
    }
    let schema_version = (!version_arms.is_empty()).then(|| {
        quote! {
            fn schema_version(event_type: &str) -> u32 {
                match event_type {
                    #(#version_arms)*
                    _ => 1,
                }
            }
        }
    });
    let upcast = upcast.map(|path| {
        quote! {
            fn upcast(
                event_type: &str,
                from_version: u32,
                payload: ::eventcore::__derive::JsonValue,
            ) -> ::core::result::Result<::eventcore::__derive::JsonValue, ::eventcore::BoxError> {
                #path(event_type, from_version, payload)
            }
        }
    });
    Ok(quote! {
        #[automatically_derived]
        impl ::eventcore::Event for #name {
            fn stream_id(&self) -> &::eventcore::StreamId {
                match self {
                    #(#stream_arms)*
                }
            }

            fn event_type(&self) -> &'static str {
                match self {
                    #(#type_arms)*
                }
            }

            #schema_version

            #upcast
        }
    })
}

/// The arguments of `#[event(...)]` on the enum.
struct EnumArgs {
    /// The field named by `stream = "field"`: every variant's stream.
    shared: Option<syn::Ident>,
    /// The function named by `upcast = path`.
    upcast: Option<syn::Path>,
}

fn enum_args(attrs: &[syn::Attribute]) -> syn::Result<EnumArgs> {
    let mut args = EnumArgs {
        shared: None,
        upcast: None,
    };
    for attr in attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("stream") {
                let name: LitStr = meta.value()?.parse()?;
                args.shared = Some(name.parse::<syn::Ident>()?);
                Ok(())
            } else if meta.path.is_ident("upcast") {
                args.upcast = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                Err(meta.error(
                    "unknown #[event] argument on the enum: it takes `stream = \"field\"` and \
                     `upcast = path`; rename an event type with #[serde(rename = \"...\")] on the \
                     variant",
                ))
            }
        })?;
    }
    Ok(args)
}

/// The schema version given by `#[event(version = N)]` on a variant, if any.
fn variant_version(variant: &syn::Variant) -> syn::Result<Option<u32>> {
    let mut version = None;
    for attr in variant.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("version") {
                let lit: LitInt = meta.value()?.parse()?;
                let n: u32 = lit.base10_parse()?;
                if n == 0 {
                    return Err(syn::Error::new_spanned(
                        lit,
                        "schema versions start at 1 (the version of events written before any \
                         change)",
                    ));
                }
                version = Some(n);
                Ok(())
            } else {
                Err(meta.error(
                    "unknown #[event] argument on a variant: it takes `version = N`, the schema \
                     version this code writes the variant at",
                ))
            }
        })?;
    }
    Ok(version)
}

/// The pattern that binds a variant's stream field, the binding, and the
/// field's type.
fn stream_of<'a>(
    variant: &'a syn::Variant,
    shared: Option<&syn::Ident>,
) -> syn::Result<(TokenStream, syn::Ident, &'a syn::Type)> {
    let v = &variant.ident;
    let mut marked = None;
    for (i, field) in variant.fields.iter().enumerate() {
        if is_stream(&field.attrs)? {
            if marked.is_some() {
                return Err(syn::Error::new_spanned(
                    field,
                    format!(
                        "variant `{v}` has two #[stream] fields: an event belongs to one stream"
                    ),
                ));
            }
            marked = Some((i, field));
        }
    }
    if marked.is_none()
        && let Some(shared) = shared
    {
        marked = variant
            .fields
            .iter()
            .enumerate()
            .find(|(_, f)| f.ident.as_ref() == Some(shared));
        if marked.is_none() {
            return Err(syn::Error::new_spanned(
                v,
                format!(
                    "variant `{v}` has no field `{shared}`, which #[event(stream = ...)] names as \
                     every variant's stream; add it, or mark this variant's stream field with \
                     #[stream]"
                ),
            ));
        }
    }
    let Some((index, field)) = marked else {
        return Err(syn::Error::new_spanned(
            v,
            format!(
                "variant `{v}` has no stream: mark the field that holds its StreamId with \
                 #[stream], or name one field for every variant with #[event(stream = \"field\")] \
                 on the enum"
            ),
        ));
    };
    let binding = syn::Ident::new("__eventcore_stream", field.span());
    let pattern = match &field.ident {
        Some(name) => quote! { { #name: #binding, .. } },
        None => {
            let skipped = (0..index).map(|_| quote! { _, });
            quote! { ( #(#skipped)* #binding, .. ) }
        }
    };
    Ok((pattern, binding, &field.ty))
}
