//! `#[derive(Command)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Data, DeriveInput, spanned::Spanned};

use crate::{is_stream, no_generics};

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    no_generics(input, "Command")?;
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "#[derive(Command)] works on a struct whose fields marked #[stream] hold the streams \
             the command reads",
        ));
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
