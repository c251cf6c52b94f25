//! Streams a command discovers while deciding: read, folded and
//! version-checked in the one atomic append like the declared ones.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU32, Ordering},
};

use eventcore::{
    AppendOutcome, Command, CommandLogic, Event, EventStore, EventStoreExt, ExecuteError,
    MAX_DISCOVERY_ROUNDS, NewEvents, ReadAnswer, ReadRequest, StoreError, StoreIdentity, StreamId,
    StreamVersion, StreamWrites, execute, require,
};
use serde::{Deserialize, Serialize};

use crate::fixtures::stream;

/// A school: students choose a course, then enrol in it if a seat is free.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
enum School {
    Chose {
        #[stream]
        student: StreamId,
        course: StreamId,
    },
    Enrolled {
        #[stream]
        student: StreamId,
        course: StreamId,
    },
    SeatTaken {
        #[stream]
        course: StreamId,
        student: StreamId,
    },
    /// A link in a chain of streams, each naming the next.
    Next {
        #[stream]
        stream: StreamId,
        next: StreamId,
    },
}

/// Why an enrolment is refused.
#[derive(Debug, PartialEq, thiserror::Error)]
enum EnrolError {
    #[error("the student chose no course")]
    NoCourse,
    #[error("course {0} is full")]
    Full(StreamId),
}

/// Enrols a student in the course they chose: declares the student's
/// stream only, and discovers the course's from it.
#[derive(Debug, Clone, Command)]
struct Enrol {
    #[stream]
    student: StreamId,
    capacity: u32,
}

#[derive(Debug, Default)]
struct Enrolment {
    course: Option<StreamId>,
    seats_taken: u32,
}

impl CommandLogic for Enrol {
    type Event = School;
    type State = Enrolment;
    type Error = EnrolError;

    fn apply(&self, mut state: Enrolment, event: &School) -> Enrolment {
        match event {
            School::Chose { course, .. } => state.course = Some(course.clone()),
            School::SeatTaken { course, .. } if state.course.as_ref() == Some(course) => {
                state.seats_taken += 1;
            }
            _ => {}
        }
        state
    }

    fn discover_streams(&self, state: &Enrolment) -> Vec<StreamId> {
        state.course.iter().cloned().collect()
    }

    fn handle(&self, state: &Enrolment) -> Result<NewEvents<School>, EnrolError> {
        let course = state.course.clone().ok_or(EnrolError::NoCourse)?;
        require!(
            state.seats_taken < self.capacity,
            EnrolError::Full(course.clone())
        );
        Ok(vec![
            School::Enrolled {
                student: self.student.clone(),
                course: course.clone(),
            },
            School::SeatTaken {
                course,
                student: self.student.clone(),
            },
        ]
        .into())
    }
}

/// Writes `events` to `stream`, whose version is `version`.
async fn write<S: EventStore>(store: &S, stream: &StreamId, version: u64, events: &[School]) {
    let mut writes = StreamWrites::new();
    writes
        .expect(stream.clone(), StreamVersion::new(version))
        .expect("register");
    for event in events {
        writes.append(event).expect("append");
    }
    store.append(writes).await.expect("write");
}

async fn events_of<S: EventStore>(store: &S, stream: &StreamId) -> Vec<School> {
    let read = store
        .read_streams(std::slice::from_ref(stream))
        .await
        .expect("read");
    read.events()
        .iter()
        .map(|e| e.decode().expect("decode"))
        .collect()
}

/// A command reads a stream it learns about from its declared one, and
/// writes to both in one append that registers both.
pub async fn discovered_streams_are_read_and_written_atomically<S: EventStore + Clone + 'static>(
    store: &S,
) {
    let (student, course) = (stream("student-1"), stream("course-1"));
    let chose = School::Chose {
        student: student.clone(),
        course: course.clone(),
    };
    write(store, &student, 0, &[chose]).await;
    let taken = School::SeatTaken {
        course: course.clone(),
        student: stream("student-0"),
    };
    write(store, &course, 0, &[taken]).await;

    let enrol = Enrol {
        student: student.clone(),
        capacity: 2,
    };
    let done = execute(store, enrol.clone()).await.expect("a seat is free");
    assert_eq!(done.events_written, 2);
    assert_eq!(done.version_of(&student), Some(StreamVersion::new(2)));
    assert_eq!(
        done.version_of(&course),
        Some(StreamVersion::new(2)),
        "the discovered stream was registered in the append"
    );
    assert_eq!(events_of(store, &course).await.len(), 2);

    // The course is full now: the same discovery refuses, typed.
    let other = stream("student-2");
    write(
        store,
        &other,
        0,
        &[School::Chose {
            student: other.clone(),
            course: course.clone(),
        }],
    )
    .await;
    let refused = execute(
        store,
        Enrol {
            student: other.clone(),
            capacity: 2,
        },
    )
    .await;
    assert!(
        matches!(&refused, Err(ExecuteError::Rejected(EnrolError::Full(c))) if *c == course),
        "{refused:?}"
    );
}

/// Before the command's first append, another writer takes the last seat
/// of the course the command discovered.
#[derive(Clone)]
struct TakesTheLastSeat<S> {
    inner: S,
    course: StreamId,
    done: Arc<AtomicBool>,
    appends: Arc<AtomicU32>,
}

#[deny(clippy::missing_trait_methods)]
impl<S: EventStore> EventStore for TakesTheLastSeat<S> {
    async fn read(&self, request: ReadRequest) -> Result<ReadAnswer, StoreError> {
        self.inner.read(request).await
    }

    async fn append(&self, writes: StreamWrites) -> Result<AppendOutcome, StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if !self.done.swap(true, Ordering::SeqCst) {
            let now = self
                .inner
                .read_streams(std::slice::from_ref(&self.course))
                .await?
                .version(&self.course)
                .map_or(0, StreamVersion::get);
            let taken = School::SeatTaken {
                course: self.course.clone(),
                student: stream("someone-else"),
            };
            write(&self.inner, &self.course, now, &[taken]).await;
        }
        self.inner.append(writes).await
    }

    fn identity(&self) -> &StoreIdentity {
        self.inner.identity()
    }
}

/// A discovered stream that moves between the command's read and its
/// append makes the whole write conflict: nothing of the command is
/// written, and the retry decides on the new state (here: refuses, the
/// course being full).
pub async fn a_discovered_stream_that_moves_conflicts_the_whole_write<
    S: EventStore + Clone + 'static,
>(
    store: &S,
) {
    let (student, course) = (stream("student-late"), stream("course-small"));
    write(
        store,
        &student,
        0,
        &[School::Chose {
            student: student.clone(),
            course: course.clone(),
        }],
    )
    .await;
    let racing = TakesTheLastSeat {
        inner: store.clone(),
        course: course.clone(),
        done: Arc::default(),
        appends: Arc::default(),
    };
    let result = execute(
        &racing,
        Enrol {
            student: student.clone(),
            capacity: 1,
        },
    )
    .await;
    assert!(
        matches!(&result, Err(ExecuteError::Rejected(EnrolError::Full(c))) if *c == course),
        "the retry saw the seat taken: {result:?}"
    );
    assert_eq!(
        racing.appends.load(Ordering::SeqCst),
        1,
        "one append, refused by the discovered stream's version; the retry refused before appending"
    );
    assert_eq!(
        events_of(store, &student).await.len(),
        1,
        "nothing of the command on the declared stream"
    );
    let course_events = events_of(store, &course).await;
    assert_eq!(course_events.len(), 1, "only the other writer's seat");
}

/// Follows a chain of streams, each naming the next.
#[derive(Debug, Clone, Command)]
struct Follow {
    #[stream]
    start: StreamId,
}

impl CommandLogic for Follow {
    type Event = School;
    type State = Option<StreamId>;
    type Error = eventcore::Refusal;

    fn apply(&self, last: Option<StreamId>, event: &School) -> Option<StreamId> {
        match event {
            School::Next { next, .. } => Some(next.clone()),
            _ => last,
        }
    }

    fn discover_streams(&self, last: &Option<StreamId>) -> Vec<StreamId> {
        last.iter().cloned().collect()
    }

    fn handle(&self, _: &Option<StreamId>) -> Result<NewEvents<School>, eventcore::Refusal> {
        Ok(NewEvents::none())
    }
}

/// Discovery goes as many rounds as the command needs, up to the bound,
/// and stops with a typed error past it, writing nothing.
pub async fn discovery_rounds_are_bounded<S: EventStore + Clone + 'static>(store: &S) {
    let link = |i: u32| stream(&format!("chain-{i}"));
    let rounds = MAX_DISCOVERY_ROUNDS + 2;
    for i in 0..=rounds {
        let next = School::Next {
            stream: link(i),
            next: link(i + 1),
        };
        write(store, &link(i), 0, &[next]).await;
    }
    // A chain that ends within the bound: every link read and registered.
    let short = stream("short-0");
    write(
        store,
        &short,
        0,
        &[School::Next {
            stream: short.clone(),
            next: link(rounds - 2),
        }],
    )
    .await;
    let done = execute(store, Follow { start: short })
        .await
        .expect("3 rounds");
    // short-0, then chain-(rounds-2), chain-(rounds-1), chain-rounds, and
    // chain-(rounds+1), which is empty and names nothing.
    assert_eq!(done.stream_versions.len(), 5, "{:?}", done.stream_versions);

    let endless = execute(store, Follow { start: link(0) }).await;
    assert!(
        matches!(endless, Err(ExecuteError::TooManyDiscoveryRounds { rounds }) if rounds == MAX_DISCOVERY_ROUNDS),
        "{endless:?}"
    );
}
