//! Scenarios for odd values: what is written comes back exactly, and what
//! could not come back is never written.

use eventcore::{
    Event, EventStore, EventStoreExt, ExecuteError, ExecuteOptions, StoreError, StreamId,
    StreamVersion, StreamWrites, execute_with,
};
use serde::{Deserialize, Serialize};

use crate::fixtures::stream;

/// An event holding a float, as a measurement or a price in a float would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Measured {
    stream: StreamId,
    reading: Reading,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reading {
    value: f64,
    others: Vec<f64>,
}

impl Event for Measured {
    fn stream_id(&self) -> &StreamId {
        &self.stream
    }

    fn event_type(&self) -> &'static str {
        "Measured"
    }
}

fn measured(stream: &StreamId, value: f64, others: Vec<f64>) -> Measured {
    Measured {
        stream: stream.clone(),
        reading: Reading { value, others },
    }
}

/// Floats that are hard to keep: signed zero, the extremes, subnormals,
/// values whose shortest form needs 17 digits, and a spread of others.
fn hard_floats() -> Vec<f64> {
    let mut values = vec![
        0.0,
        -0.0,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        f64::EPSILON,
        5e-324,
        -5e-324,
        2.225_073_858_507_201e-308,
        0.1,
        0.1 + 0.2,
        1.0 / 3.0,
        9_007_199_254_740_993.0,
        1e308,
        1e-308,
        123_456_789.012_345_68,
        std::f64::consts::PI,
    ];
    let mut rng = fastrand::Rng::with_seed(11);
    values.extend(
        (0..200)
            .map(|_| f64::from_bits(rng.u64(..)))
            .filter(|v| v.is_finite()),
    );
    values
}

/// Every finite `f64` comes back bit for bit, `-0.0` and `f64::MAX`
/// included, and the payload text comes back exactly as it was appended:
/// no store renormalises numbers.
pub async fn floats_round_trip_bit_exactly<S: EventStore + Clone + 'static>(store: &S) {
    let id = stream("floats");
    let values = hard_floats();
    let mut writes = StreamWrites::new();
    writes
        .expect(id.clone(), StreamVersion::INITIAL)
        .expect("register");
    for chunk in values.chunks(16) {
        writes
            .append(&measured(&id, chunk[0], chunk.to_vec()))
            .expect("a finite float is accepted");
    }
    let sent: Vec<String> = writes
        .events()
        .iter()
        .map(|e| e.payload().to_owned())
        .collect();
    store.append(writes).await.expect("append");
    let read = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect("read");
    let texts: Vec<&str> = read.events().iter().map(|e| e.payload()).collect();
    assert_eq!(texts, sent, "the payload text as appended");
    let back: Vec<f64> = read
        .events()
        .iter()
        .flat_map(|e| e.decode::<Measured>().expect("decode").reading.others)
        .collect();
    assert_eq!(back.len(), values.len());
    for (got, want) in back.iter().zip(&values) {
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{want:e} came back as {got:e}"
        );
    }
}

/// NaN and the infinities, which JSON writes as `null`, are refused when
/// the event is added to a write, with the field path, by `StreamWrites`
/// and by `execute`; nothing is written, and the stream stays readable.
pub async fn non_finite_floats_are_refused<S: EventStore + Clone + 'static>(store: &S) {
    let id = stream("non-finite");
    let mut writes = StreamWrites::new();
    writes
        .expect(id.clone(), StreamVersion::INITIAL)
        .expect("register");
    writes
        .append(&measured(&id, 1.5, vec![]))
        .expect("a finite one");
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = writes
            .append(&measured(&id, bad, vec![]))
            .expect_err("refused");
        assert!(
            matches!(&err, StoreError::WouldNotDecode { path, event_type, .. }
                if path == "reading.value" && event_type == "Measured"),
            "{bad}: {err:?}"
        );
        let err = writes
            .append(&measured(&id, 0.0, vec![1.0, bad]))
            .expect_err("refused");
        assert!(
            matches!(&err, StoreError::WouldNotDecode { path, .. } if path == "reading.others[1]"),
            "{bad}: {err:?}"
        );
    }
    assert_eq!(writes.events().len(), 1, "only the finite one was added");
    store.append(writes).await.expect("append");

    let err = execute_with(store, RecordNan(id.clone()), ExecuteOptions::new())
        .await
        .expect_err("refused");
    assert!(
        matches!(err, ExecuteError::Store(StoreError::WouldNotDecode { .. })),
        "{err:?}"
    );
    let read = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect("the stream stays readable");
    assert_eq!(read.events().len(), 1, "nothing more was written");
    assert_eq!(
        read.events()[0]
            .decode::<Measured>()
            .expect("decode")
            .reading
            .value,
        1.5
    );
}

/// A command that records a NaN reading.
#[derive(Debug, Clone)]
struct RecordNan(StreamId);

impl eventcore::CommandStreams for RecordNan {
    fn streams(&self) -> Vec<StreamId> {
        vec![self.0.clone()]
    }
}

impl eventcore::CommandLogic for RecordNan {
    type Event = Measured;
    type State = ();
    type Error = eventcore::Refusal;

    fn apply(&self, state: (), _event: &Measured) {
        state
    }

    fn handle(&self, _state: &()) -> Result<eventcore::NewEvents<Measured>, eventcore::Refusal> {
        Ok(vec![measured(&self.0, f64::NAN, vec![])].into())
    }
}
