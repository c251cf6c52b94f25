//! Derive macros for [eventcore](https://docs.rs/eventcore), re-exported by
//! it behind its default `derive` feature: use them as
//! `eventcore::Event` and `eventcore::Command`.
//!
//! - `#[derive(Event)]` on an enum implements `eventcore::Event`: each
//!   variant's stream is its field marked `#[stream]` (or the field named by
//!   `#[event(stream = "field")]` on the enum), and its event type is the
//!   name serde gives the variant, so the stored type and the serialised
//!   form cannot drift apart. `#[event(version = N)]` on a variant sets its
//!   schema version; `#[event(upcast = path)]` on the enum names the
//!   function that reads older versions.
//! - `#[derive(Command)]` on a struct implements `eventcore::CommandStreams`:
//!   the command's streams are its fields marked `#[stream]` (a `StreamId`,
//!   an `Option<StreamId>` or a collection of them). On an enum whose
//!   variants each wrap one command, a value's streams are its command's.
//!   Its `command_name`, recorded with command ids, is the type's name, or
//!   the one given by `#[command(name = "...")]`.
//! - `#[derive(FoldState)]` on a struct with named fields, each a fold
//!   (`Arc<F>` of an `eventcore::Fold`) or a state of folds, implements
//!   `eventcore::FoldState`: the state's folds are its fields, and a command
//!   names their streams field for field in the generated `{State}Streams`
//!   struct.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod command;
mod event;
mod fold_state;
mod serde_name;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Implements `eventcore::Event` for an enum. See the crate docs.
#[proc_macro_derive(Event, attributes(stream, event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    event::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Implements `eventcore::CommandStreams` for a struct. See the crate docs.
#[proc_macro_derive(Command, attributes(stream, command))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    command::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Implements `eventcore::FoldState` for a struct of folds. See the crate
/// docs.
#[proc_macro_derive(FoldState)]
pub fn derive_fold_state(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    fold_state::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Refuses generic parameters, which no derive supports.
fn no_generics(input: &DeriveInput, derive: &str) -> syn::Result<()> {
    if input.generics.params.is_empty() && input.generics.where_clause.is_none() {
        return Ok(());
    }
    Err(syn::Error::new_spanned(
        &input.generics,
        format!(
            "#[derive({derive})] does not support generic parameters: implement the trait by hand \
             for a generic type"
        ),
    ))
}

/// Whether `attrs` hold a bare `#[stream]`; an error if it has arguments.
fn is_stream(attrs: &[syn::Attribute]) -> syn::Result<bool> {
    let mut found = false;
    for attr in attrs {
        if attr.path().is_ident("stream") {
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                return Err(syn::Error::new_spanned(
                    attr,
                    "#[stream] takes no arguments: put it on the field that holds the stream id",
                ));
            }
            found = true;
        }
    }
    Ok(found)
}
