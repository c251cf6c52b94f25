//! `#[derive(Command)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Data, DeriveInput, spanned::Spanned};

use crate::{is_stream, no_generics};

/// The stable name: `#[command(name = "...")]`, or the type's own name.
fn command_name(input: &DeriveInput) -> syn::Result<String> {
    let mut name = None;
    for attr in &input.attrs {
        if !attr.path().is_ident("command") {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let value: syn::LitStr = meta.value()?.parse()?;
                let text = value.value();
                if text.is_empty()
                    || text.chars().count() > 255
                    || text.chars().any(char::is_control)
                {
                    return Err(syn::Error::new_spanned(
                        &value,
                        "a command name is 1 to 255 characters without control characters",
                    ));
                }
                name = Some(text);
                Ok(())
            } else {
                Err(meta.error(
                    "#[command] takes `name = \"...\"`: the stable name recorded with command ids",
                ))
            }
        })?;
    }
    Ok(name.unwrap_or_else(|| input.ident.to_string()))
}

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    no_generics(input, "Command")?;
    let stable = command_name(input)?;
    let data = match &input.data {
        Data::Struct(data) => data,
        Data::Enum(data) => return expand_enum(&input.ident, &stable, data),
        Data::Union(_) => {
            return Err(syn::Error::new_spanned(
                &input.ident,
                "#[derive(Command)] works on a struct whose fields marked #[stream] hold the \
                 streams the command reads, or on an enum of commands",
            ));
        }
    };
    let mut adds = Vec::new();
    for (i, field) in data.fields.iter().enumerate() {
        if !is_stream(&field.attrs)? {
            continue;
        }
        let member = match &field.ident {
            Some(name) => quote! { #name },
            None => {
                let index = syn::Index::from(i);
                quote! { #index }
            }
        };
        let ty = &field.ty;
        // The check's error points at the marked field.
        adds.push(quote_spanned! {ty.span()=>
            <#ty as ::eventcore::__derive::StreamField>::add_to(&self.#member, &mut streams);
        });
    }
    let name = &input.ident;
    if adds.is_empty() {
        return Err(syn::Error::new_spanned(
            name,
            format!(
                "#[derive(Command)] needs the streams `{name}` reads: mark each field that holds \
                 a StreamId (or an Option or a collection of them) with #[stream]"
            ),
        ));
    }
    Ok(quote! {
        #[automatically_derived]
        impl ::eventcore::CommandStreams for #name {
            fn streams(&self) -> ::std::vec::Vec<::eventcore::StreamId> {
                let mut streams = ::std::vec::Vec::new();
                #(#adds)*
                streams
            }

            fn command_name(&self) -> ::std::borrow::Cow<'static, str> {
                ::std::borrow::Cow::Borrowed(#stable)
            }
        }
    })
}

/// An enum of commands, each variant wrapping one: its streams are the
/// wrapped command's.
fn expand_enum(name: &syn::Ident, stable: &str, data: &syn::DataEnum) -> syn::Result<TokenStream> {
    if data.variants.is_empty() {
        return Err(syn::Error::new_spanned(
            name,
            "#[derive(Command)] on an enum needs at least one variant",
        ));
    }
    let mut arms = Vec::new();
    for variant in &data.variants {
        let v = &variant.ident;
        let syn::Fields::Unnamed(fields) = &variant.fields else {
            return Err(syn::Error::new_spanned(
                v,
                format!(
                    "variant `{v}` must wrap one command, as `{v}(SomeCommand)`: an enum of \
                     commands takes each variant's streams from the command it wraps"
                ),
            ));
        };
        if fields.unnamed.len() != 1 {
            return Err(syn::Error::new_spanned(
                v,
                format!("variant `{v}` must wrap exactly one command"),
            ));
        }
        let ty = &fields.unnamed[0].ty;
        let call = quote_spanned! {ty.span()=>
            <#ty as ::eventcore::CommandStreams>::streams(command)
        };
        arms.push(quote! { #name::#v(command) => #call, });
    }
    Ok(quote! {
        #[automatically_derived]
        impl ::eventcore::CommandStreams for #name {
            fn streams(&self) -> ::std::vec::Vec<::eventcore::StreamId> {
                match self {
                    #(#arms)*
                }
            }

            fn command_name(&self) -> ::std::borrow::Cow<'static, str> {
                ::std::borrow::Cow::Borrowed(#stable)
            }
        }
    })
}
