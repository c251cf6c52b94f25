//! `#[derive(FoldState)]`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{Data, DeriveInput, Fields};

use crate::no_generics;

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    no_generics(input, "FoldState")?;
    let fields = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(named) if !named.named.is_empty() => &named.named,
            _ => {
                return Err(syn::Error::new_spanned(
                    &input.ident,
                    "#[derive(FoldState)] works on a struct with named fields, each a fold \
                     (`Arc<F>`) or a state of folds",
                ));
            }
        },
        _ => {
            return Err(syn::Error::new_spanned(
                &input.ident,
                "#[derive(FoldState)] works on a struct with named fields, each a fold \
                 (`Arc<F>`) or a state of folds",
            ));
        }
    };
    let state = &input.ident;
    let vis = &input.vis;
    let streams = format_ident!("{}Streams", state);
    let names: Vec<_> = fields.iter().filter_map(|f| f.ident.as_ref()).collect();
    let types: Vec<_> = fields.iter().map(|f| &f.ty).collect();
    let struct_doc = format!(
        "The stream of each fold of [`{state}`], field for field: what a command's \
         `Decide::folds` returns."
    );
    let field_docs: Vec<String> = names
        .iter()
        .map(|n| format!("The stream of `{state}::{n}`."))
        .collect();
    Ok(quote! {
        #[doc = #struct_doc]
        #[derive(Debug, Clone, Copy)]
        #vis struct #streams<'a> {
            #(
                #[doc = #field_docs]
                pub #names: <#types as ::eventcore::FoldState>::Streams<'a>,
            )*
        }

        impl ::eventcore::FoldState for #state {
            type Streams<'a> = #streams<'a>;
            const LEN: usize = 0 #(+ <#types as ::eventcore::FoldState>::LEN)*;

            fn slots(streams: Self::Streams<'_>, out: &mut ::std::vec::Vec<::eventcore::Slot>) {
                #(<#types as ::eventcore::FoldState>::slots(streams.#names, out);)*
            }

            fn assemble(parts: &[::eventcore::Part]) -> ::core::option::Option<Self> {
                let mut at = 0usize;
                #(
                    let #names = {
                        let n = <#types as ::eventcore::FoldState>::LEN;
                        let mine = parts.get(at..at + n)?;
                        at += n;
                        <#types as ::eventcore::FoldState>::assemble(mine)?
                    };
                )*
                if at != parts.len() {
                    return ::core::option::Option::None;
                }
                ::core::option::Option::Some(#state { #(#names,)* })
            }

            fn apply_event<Ev: ::eventcore::Event>(&mut self, streams: Self::Streams<'_>, event: &Ev) {
                #(<#types as ::eventcore::FoldState>::apply_event(&mut self.#names, streams.#names, event);)*
            }
        }
    })
}
