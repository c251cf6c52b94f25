//! `#[derive(Event)]` and `#[derive(Command)]`: the streams and type names
//! they produce, and a command written with them end to end.

use std::collections::{BTreeSet, HashSet};

use eventcore::{
    Command, CommandLogic, CommandStreams, Event, NewEvents, Refusal, StreamId, execute, require,
};
use eventcore_memory::InMemoryEventStore;
use serde::{Deserialize, Serialize};

fn id(s: &str) -> StreamId {
    StreamId::try_new(s).unwrap()
}

/// The name serde wrote for `event`: the tag of an internally tagged enum,
/// or the one key of an externally tagged one.
fn serde_name<E: Serialize>(event: &E, tag: Option<&str>) -> String {
    let value = serde_json::to_value(event).unwrap();
    let object = value.as_object().unwrap();
    match tag {
        Some(tag) => object[tag].as_str().unwrap().to_owned(),
        None => {
            assert_eq!(object.len(), 1, "externally tagged: {value}");
            object.keys().next().unwrap().clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
enum Plain {
    Opened {
        #[stream]
        account: StreamId,
        owner: String,
    },
    #[serde(rename = "MoneyDeposited")]
    Deposited {
        amount: u64,
        #[stream]
        account: StreamId,
    },
    Tuple(u64, #[stream] StreamId),
}

#[test]
fn the_stream_is_the_marked_field_and_the_type_is_serde_s_name() {
    let a = id("account-a");
    let events = [
        Plain::Opened {
            account: a.clone(),
            owner: "Ann".into(),
        },
        Plain::Deposited {
            amount: 5,
            account: a.clone(),
        },
        Plain::Tuple(7, a.clone()),
    ];
    let expected = ["Opened", "MoneyDeposited", "Tuple"];
    for (event, name) in events.iter().zip(expected) {
        assert_eq!(event.stream_id(), &a);
        assert_eq!(event.event_type(), name);
        assert_eq!(serde_name(event, None), event.event_type(), "{event:?}");
    }
}

/// Every serde `rename_all` rule: the stored type is the name serde writes
/// in the tag, so they cannot drift apart.
macro_rules! renamed_enum {
    ($name:ident, $rule:literal) => {
        #[derive(Debug, Clone, Serialize, Deserialize, Event)]
        #[serde(tag = "type", rename_all = $rule)]
        enum $name {
            AccountOpened {
                #[stream]
                account: StreamId,
            },
            MoneyHTTPDeposited {
                #[stream]
                account: StreamId,
            },
            #[serde(rename = "kept-as-is")]
            Explicit {
                #[stream]
                account: StreamId,
            },
        }

        impl $name {
            fn all(account: &StreamId) -> Vec<$name> {
                vec![
                    $name::AccountOpened {
                        account: account.clone(),
                    },
                    $name::MoneyHTTPDeposited {
                        account: account.clone(),
                    },
                    $name::Explicit {
                        account: account.clone(),
                    },
                ]
            }
        }
    };
}

renamed_enum!(Lower, "lowercase");
renamed_enum!(Upper, "UPPERCASE");
renamed_enum!(Pascal, "PascalCase");
renamed_enum!(Camel, "camelCase");
renamed_enum!(Snake, "snake_case");
renamed_enum!(ScreamingSnake, "SCREAMING_SNAKE_CASE");
renamed_enum!(Kebab, "kebab-case");
renamed_enum!(ScreamingKebab, "SCREAMING-KEBAB-CASE");

fn names<E: Event>(events: &[E]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.event_type().to_owned(), serde_name(e, Some("type"))))
        .collect()
}

#[test]
fn every_rename_all_rule_stores_the_name_serde_writes() {
    let a = id("a");
    let all = [
        names(&Lower::all(&a)),
        names(&Upper::all(&a)),
        names(&Pascal::all(&a)),
        names(&Camel::all(&a)),
        names(&Snake::all(&a)),
        names(&ScreamingSnake::all(&a)),
        names(&Kebab::all(&a)),
        names(&ScreamingKebab::all(&a)),
    ];
    for pairs in &all {
        for (stored, serde) in pairs {
            assert_eq!(stored, serde);
        }
    }
    // And the rules did apply.
    let stored: Vec<&str> = all.iter().map(|p| p[1].0.as_str()).collect();
    assert_eq!(
        stored,
        [
            "moneyhttpdeposited",
            "MONEYHTTPDEPOSITED",
            "MoneyHTTPDeposited",
            "moneyHTTPDeposited",
            "money_h_t_t_p_deposited",
            "MONEY_H_T_T_P_DEPOSITED",
            "money-h-t-t-p-deposited",
            "MONEY-H-T-T-P-DEPOSITED",
        ]
    );
    assert!(all.iter().all(|p| p[2].0 == "kept-as-is"));
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(stream = "account")]
enum Shared {
    Opened {
        account: StreamId,
    },
    Moved {
        account: StreamId,
        #[stream]
        target: StreamId,
    },
}

#[test]
fn one_stream_field_for_every_variant_unless_a_variant_marks_its_own() {
    let (a, b) = (id("a"), id("b"));
    assert_eq!(Shared::Opened { account: a.clone() }.stream_id(), &a);
    let moved = Shared::Moved {
        account: a,
        target: b.clone(),
    };
    assert_eq!(moved.stream_id(), &b);
}

#[derive(Command)]
struct Many {
    #[stream]
    one: StreamId,
    #[stream]
    maybe: Option<StreamId>,
    #[stream]
    several: Vec<StreamId>,
    #[stream]
    set: BTreeSet<StreamId>,
    #[stream]
    hashed: HashSet<StreamId>,
    #[stream]
    fixed: [StreamId; 2],
    #[allow(dead_code)]
    not_a_stream: u64,
}

#[test]
fn a_command_reads_every_stream_its_marked_fields_hold() {
    let command = Many {
        one: id("one"),
        maybe: Some(id("maybe")),
        several: vec![id("v1"), id("v2")],
        set: [id("s1")].into_iter().collect(),
        hashed: [id("h1")].into_iter().collect(),
        fixed: [id("f1"), id("f2")],
        not_a_stream: 3,
    };
    let mut streams = command.streams();
    streams.sort();
    let mut expected = ["one", "maybe", "v1", "v2", "s1", "h1", "f1", "f2"].map(id);
    expected.sort();
    assert_eq!(streams, expected);
    let none = Many {
        maybe: None,
        several: Vec::new(),
        set: BTreeSet::new(),
        hashed: HashSet::new(),
        ..command
    };
    assert_eq!(none.streams().len(), 3, "an absent option adds nothing");
}

#[derive(Command)]
struct TupleCommand(#[stream] StreamId, #[allow(dead_code)] u64);

/// An enum of commands reads the streams of the one it holds.
#[derive(Command)]
enum AnyCommand {
    Tuple(TupleCommand),
    Many(Box<Many>),
}

#[test]
fn an_enum_of_commands_reads_the_streams_of_the_one_it_holds() {
    assert_eq!(
        AnyCommand::Tuple(TupleCommand(id("t"), 1)).streams(),
        vec![id("t")]
    );
    let many = Many {
        one: id("one"),
        maybe: None,
        several: vec![id("v")],
        set: BTreeSet::new(),
        hashed: HashSet::new(),
        fixed: [id("f1"), id("f2")],
        not_a_stream: 0,
    };
    assert_eq!(AnyCommand::Many(Box::new(many)).streams().len(), 4);
}

#[test]
fn tuple_struct_fields_can_be_streams() {
    assert_eq!(TupleCommand(id("t"), 1).streams(), vec![id("t")]);
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
enum Ledger {
    Credited {
        #[stream]
        account: StreamId,
        amount: u64,
    },
    Debited {
        #[stream]
        account: StreamId,
        amount: u64,
    },
}

#[derive(Command)]
struct Transfer {
    #[stream]
    from: StreamId,
    #[stream]
    to: StreamId,
    amount: u64,
}

impl CommandLogic for Transfer {
    type Event = Ledger;
    type State = u64;
    type Error = eventcore::Refusal;

    fn apply(&self, balance: u64, event: &Ledger) -> u64 {
        match event {
            Ledger::Credited { account, amount } if *account == self.from => balance + amount,
            Ledger::Debited { account, amount } if *account == self.from => balance - amount,
            _ => balance,
        }
    }

    fn handle(&self, &balance: &u64) -> Result<NewEvents<Ledger>, Refusal> {
        require!(balance >= self.amount, "{} holds only {balance}", self.from);
        Ok(vec![
            Ledger::Debited {
                account: self.from.clone(),
                amount: self.amount,
            },
            Ledger::Credited {
                account: self.to.clone(),
                amount: self.amount,
            },
        ]
        .into())
    }
}

#[derive(Command)]
struct Fund {
    #[stream]
    account: StreamId,
    amount: u64,
}

impl CommandLogic for Fund {
    type Event = Ledger;
    type State = ();
    type Error = eventcore::Refusal;

    fn apply(&self, (): (), _: &Ledger) {}

    fn handle(&self, (): &()) -> Result<NewEvents<Ledger>, Refusal> {
        Ok(vec![Ledger::Credited {
            account: self.account.clone(),
            amount: self.amount,
        }]
        .into())
    }
}

#[tokio::test]
async fn a_derived_command_executes_and_its_events_read_back() {
    let store = InMemoryEventStore::new();
    let (a, b) = (id("acct-a"), id("acct-b"));
    execute(
        &store,
        Fund {
            account: a.clone(),
            amount: 10,
        },
    )
    .await
    .unwrap();
    let done = execute(
        &store,
        Transfer {
            from: a.clone(),
            to: b.clone(),
            amount: 4,
        },
    )
    .await
    .unwrap();
    assert_eq!(done.events_written, 2);
    let read = eventcore::EventStoreExt::read_streams(&store, &[a.clone(), b.clone()])
        .await
        .unwrap();
    let types: Vec<&str> = read.events().iter().map(|e| e.event_type()).collect();
    assert_eq!(types, ["Credited", "Debited", "Credited"]);
    let back: Vec<Ledger> = read.events().iter().map(|e| e.decode().unwrap()).collect();
    assert!(matches!(&back[1], Ledger::Debited { account, amount: 4 } if *account == a));
    assert!(matches!(&back[2], Ledger::Credited { account, amount: 4 } if *account == b));
}
