//! `#[derive(Command)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Data, DeriveInput, spanned::Spanned};

use crate::{is_stream, no_generics};

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    no_generics(input, "Command")?;
    let data = match &input.data {
        Data::Struct(data) => data,
        Data::Enum(data) => return expand_enum(&input.ident, data),
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
        }
    })
}

/// An enum of commands, each variant wrapping one: its streams are the
/// wrapped command's.
fn expand_enum(name: &syn::Ident, data: &syn::DataEnum) -> syn::Result<TokenStream> {
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
        }
    })
}
