//! Manager logic against the in-memory backend (`runta_backend::fake`): the
//! state machine, admission, idempotency, reconcile and the monitor, without
//! root or containers. End-to-end behaviour is in `tests/` against a real daemon.

use std::sync::Arc;
use std::time::Duration;

use runta_api::{
    Action, CreateRuntimeRequest, RequestsSpec, ResourcesSpec, RuntimeStatus as S, TenantQuota,
};
use runta_backend::fake::{FakeBackend, Op};
use runta_backend::BackendState;
use uuid::Uuid;

use super::{Error, Manager, ManagerConfig};
use crate::store::{RuntimeRecord, Store};

const T: &str = "acme";

struct Fixture {
    m: Arc<Manager>,
    fake: Arc<FakeBackend>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A manager configuration for logic tests: a large host, no grace.
pub(super) fn config_for_tests() -> ManagerConfig {
    ManagerConfig {
        capacity_memory_mib: 64 * 1024,
        host_memory_mib: 64 * 1024,
        pids_limit: 512,
        quota_defaults: TenantQuota {
            runtimes: 100,
            vcpus: 64.0,
            memory_mib: 1 << 20,
            disk_gib: None,
            checkpoints: 10,
            checkpoint_bytes: 1 << 30,
            pids: 1 << 20,
        },
        host_cpus: 4.0,
        stop_grace: Duration::ZERO,
        default_image: "base".into(),
        default_vcpus: 1.0,
        default_memory_mib: 256,
        default_disk_gib: None,
        ingress_domain: "runta.localhost".into(),
        ingress_https_port: 8443,
        ingress_http_port: 8081,
        network: runta_backend::network::Network::new("f00d", 99),
        builds: Default::default(),
    }
}

fn fixture_with(capacity_memory_mib: u64) -> Fixture {
    let dir = std::env::temp_dir().join(format!("runta-manager-test-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(Store::open(&dir.join("runta.db")).unwrap());
    let fake = Arc::new(FakeBackend::new());
    let cfg = ManagerConfig {
        capacity_memory_mib,
        ..config_for_tests()
    };
    let m = Manager::new(store, fake.clone(), cfg, Default::default());
    Fixture {
        m,
        fake,
        _dir: TempDir(dir),
    }
}

fn fixture() -> Fixture {
    fixture_with(64 * 1024)
}

fn req(name: &str, memory_mib: u64) -> CreateRuntimeRequest {
    CreateRuntimeRequest {
        name: name.into(),
        resources: ResourcesSpec {
            requests: RequestsSpec {
                memory_mib: Some(memory_mib),
                ..Default::default()
            },
            limits: None,
        },
        ..Default::default()
    }
}

impl Fixture {
    async fn create(&self, name: &str) -> RuntimeRecord {
        self.m.create(T, req(name, 256), None, true).await.unwrap()
    }

    fn get(&self, id: Uuid) -> Option<RuntimeRecord> {
        self.m.store.get_runtime(id).unwrap()
    }

    fn events(&self, id: Uuid) -> Vec<String> {
        self.m
            .store
            .events(id, 0, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    /// Writes `status` into the record as a daemon cut short would have left it.
    fn force(&self, id: Uuid, status: S, desired: S) {
        let mut r = self.get(id).unwrap();
        r.status = status;
        r.desired_status = desired;
        self.m.store.update_runtime(&mut r).unwrap();
    }
}

fn precondition(e: Error) -> String {
    match e {
        Error::FailedPrecondition(m) => m,
        other => panic!("expected failed_precondition, got {other:?}"),
    }
}

#[tokio::test]
async fn lifecycle_moves_through_the_table_and_records_each_step() {
    let f = fixture();
    let r = f.create("a").await;
    assert_eq!(r.status, S::Running);
    assert!(r.started_at.is_some());
    assert_eq!(f.fake.state_of(r.id), BackendState::Running { pid: 1 });
    assert_eq!(
        f.m.view(&r).allowed_actions,
        runta_api::allowed_actions(S::Running)
    );

    let r = f.m.act(T, "a", Action::Pause).await.unwrap();
    assert_eq!((r.status, r.desired_status), (S::Paused, S::Paused));
    assert_eq!(f.fake.state_of(r.id), BackendState::Paused);
    let r = f.m.act(T, "a", Action::Resume).await.unwrap();
    assert_eq!(r.status, S::Running);
    let r = f.m.act(T, "a", Action::Stop).await.unwrap();
    assert_eq!((r.status, r.desired_status), (S::Shutdown, S::Shutdown));
    assert_eq!(f.fake.state_of(r.id), BackendState::Stopped);
    let before = r.started_at;
    let r = f.m.act(T, "a", Action::Start).await.unwrap();
    assert_eq!(r.status, S::Running);
    assert!(r.started_at > before, "a boot moves started_at");
    assert_eq!(
        f.events(r.id),
        ["created", "started", "paused", "resumed", "stopped", "started"]
    );
    assert_eq!(f.get(r.id).unwrap().status, S::Running, "the store agrees");
}

#[tokio::test]
async fn asking_for_the_current_status_is_a_no_op_and_calls_nothing() {
    let f = fixture();
    let r = f.create("a").await;
    let rev = f.get(r.id).unwrap().revision;
    let calls = f.fake.calls().len();
    for a in [Action::Start, Action::Resume] {
        assert_eq!(f.m.act(T, "a", a).await.unwrap().status, S::Running);
    }
    assert_eq!(f.get(r.id).unwrap().revision, rev, "a no-op writes nothing");
    assert_eq!(f.fake.calls().len(), calls);
    f.m.act(T, "a", Action::Pause).await.unwrap();
    let after_pause = f.fake.calls().len();
    assert_eq!(after_pause, calls + 1, "only the pause reached the backend");
    f.m.act(T, "a", Action::Pause).await.unwrap();
    assert_eq!(f.fake.calls().len(), after_pause);
    f.m.act(T, "a", Action::Stop).await.unwrap();
    let n = f.fake.count(Op::Stop);
    f.m.act(T, "a", Action::Stop).await.unwrap();
    assert_eq!(f.fake.count(Op::Stop), n);
}

#[tokio::test]
async fn impossible_actions_are_409_naming_the_status_and_change_nothing() {
    let f = fixture();
    let r = f.create("a").await;
    f.m.act(T, "a", Action::Stop).await.unwrap();
    let rev = f.get(r.id).unwrap().revision;
    for a in [Action::Pause, Action::Resume] {
        let m = precondition(f.m.act(T, "a", a).await.unwrap_err());
        assert_eq!(m, format!("cannot {a} runtime \"a\": it is shutdown"));
    }
    assert_eq!(
        f.get(r.id).unwrap().revision,
        rev,
        "a refusal writes nothing"
    );
    f.m.act(T, "a", Action::Start).await.unwrap();
    f.m.act(T, "a", Action::Pause).await.unwrap();
    let m = precondition(f.m.act(T, "a", Action::Start).await.unwrap_err());
    assert_eq!(m, "cannot start runtime \"a\": it is paused");
    // Delete, exec and the others are not lifecycle verbs of `act`.
    assert!(matches!(
        f.m.act(T, "a", Action::Delete).await,
        Err(Error::Internal(_))
    ));
    assert_eq!(f.get(r.id).unwrap().status, S::Paused);
}

#[tokio::test]
async fn a_failed_create_leaves_nothing() {
    let f = fixture();
    f.fake.fail(Op::Create);
    let err = f.m.create(T, req("a", 256), None, true).await.unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err:?}");
    assert!(f.m.list(&Default::default()).unwrap().is_empty());
    assert!(f.m.find(T, "a").is_err());
    let id = f
        .fake
        .calls()
        .into_iter()
        .find_map(|(op, id)| (op == Op::Create).then_some(id).flatten())
        .unwrap();
    assert!(f.events(id).is_empty(), "its events are gone too");
    assert_eq!(f.fake.state_of(id), BackendState::Missing);
    // The name and the capacity are free again.
    f.fake.heal(Op::Create);
    assert_eq!(f.create("a").await.status, S::Running);
}

#[tokio::test]
async fn an_unknown_image_is_refused_before_anything_is_recorded() {
    let f = fixture();
    let mut rq = req("a", 256);
    rq.image = Some("nope".into());
    let err = f.m.create(T, rq, None, true).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { ref field, .. } if field == "image"));
    assert_eq!(f.fake.count(Op::Create), 0);
    assert!(f.m.list(&Default::default()).unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_boot_is_error_and_start_leads_out_of_it() {
    let f = fixture();
    let r = f.create("a").await;
    f.m.act(T, "a", Action::Stop).await.unwrap();
    f.fake.fail(Op::Start);
    assert!(f.m.act(T, "a", Action::Start).await.is_err());
    let r2 = f.get(r.id).unwrap();
    assert_eq!(r2.status, S::Error);
    assert!(r2.error.as_deref().unwrap().starts_with("boot failed:"));
    assert_eq!(f.events(r.id).last().unwrap(), "error");
    assert_eq!(
        f.m.view(&r2).allowed_actions,
        [Action::Start, Action::Stop, Action::Delete, Action::Update]
    );
    f.fake.heal(Op::Start);
    let r3 = f.m.act(T, "a", Action::Start).await.unwrap();
    assert_eq!((r3.status, r3.error), (S::Running, None));
}

#[tokio::test]
async fn a_failed_backend_call_leaves_the_status_as_it_was() {
    let f = fixture();
    let r = f.create("a").await;
    f.fake.fail(Op::Pause);
    assert!(f.m.act(T, "a", Action::Pause).await.is_err());
    assert_eq!(f.get(r.id).unwrap().status, S::Running);
    f.fake.fail(Op::Stop);
    assert!(f.m.act(T, "a", Action::Stop).await.is_err());
    assert_eq!(f.get(r.id).unwrap().status, S::Running);
}

#[tokio::test]
async fn a_failed_delete_is_error_and_delete_again_finishes_it() {
    let f = fixture();
    let r = f.create("a").await;
    f.fake.fail(Op::Delete);
    assert!(f.m.delete(T, "a").await.is_err());
    let r2 = f.get(r.id).unwrap();
    assert_eq!(r2.status, S::Error);
    assert!(r2.error.as_deref().unwrap().starts_with("delete failed:"));
    f.fake.heal(Op::Delete);
    f.m.delete(T, "a").await.unwrap();
    assert!(f.get(r.id).is_none());
    assert!(f.events(r.id).is_empty());
    assert_eq!(f.fake.state_of(r.id), BackendState::Missing);
}

#[tokio::test]
async fn admission_counts_what_is_live_and_frees_it_on_stop() {
    // Room for two runtimes of 256 MiB.
    let f = fixture_with(512);
    f.create("a").await;
    f.create("b").await;
    let err = f.m.create(T, req("c", 256), None, true).await.unwrap_err();
    assert!(matches!(err, Error::ResourceExhausted(_)), "{err:?}");
    assert_eq!(f.fake.count(Op::Create), 2, "refused before the backend");
    // Paused and suspended still hold their memory; shut down does not.
    f.m.act(T, "a", Action::Pause).await.unwrap();
    assert!(f.m.create(T, req("c", 256), None, true).await.is_err());
    f.m.act(T, "a", Action::Stop).await.unwrap();
    f.create("c").await;
    // Booting "a" again would not fit now.
    let err = f.m.act(T, "a", Action::Start).await.unwrap_err();
    assert!(matches!(err, Error::ResourceExhausted(_)), "{err:?}");
    assert_eq!(f.m.find(T, "a").unwrap().status, S::Shutdown);
    f.m.delete(T, "c").await.unwrap();
    assert_eq!(
        f.m.act(T, "a", Action::Start).await.unwrap().status,
        S::Running
    );
}

#[tokio::test]
async fn create_is_idempotent_per_key_and_refuses_a_reused_key() {
    let f = fixture();
    let a =
        f.m.create(T, req("a", 256), Some("k1"), true)
            .await
            .unwrap();
    let again =
        f.m.create(T, req("a", 256), Some("k1"), true)
            .await
            .unwrap();
    // The same runtime, booted once.
    assert_eq!(again.id, a.id);
    assert_eq!(f.fake.count(Op::Create), 1);
    let err =
        f.m.create(T, req("a", 512), Some("k1"), true)
            .await
            .unwrap_err();
    assert!(matches!(err, Error::Invalid { ref field, .. } if field == "Idempotency-Key"));
    // Without a key a second create of the same name is a conflict.
    let err = f.m.create(T, req("a", 256), None, true).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
}

/// Every stored status against every backend state, as a restarted daemon
/// finds them.
#[tokio::test]
async fn reconcile_makes_every_record_true() {
    use BackendState as B;
    let backend_states = [B::Running { pid: 1 }, B::Paused, B::Stopped, B::Missing];
    // (stored, desired) → expected per backend state; None: the record is gone.
    type Row = ((S, S), [Option<S>; 4]);
    let cases: &[Row] = &[
        // Cut short mid-create: booted now, whatever was left.
        ((S::Creating, S::Running), [Some(S::Running); 4]),
        (
            (S::Running, S::Running),
            [
                Some(S::Running),
                Some(S::Paused),
                Some(S::Crashed),
                Some(S::Crashed),
            ],
        ),
        (
            (S::Paused, S::Paused),
            [
                Some(S::Running),
                Some(S::Paused),
                Some(S::Crashed),
                Some(S::Crashed),
            ],
        ),
        (
            (S::Suspended, S::Running),
            [
                Some(S::Running),
                Some(S::Suspended),
                Some(S::Crashed),
                Some(S::Crashed),
            ],
        ),
        // A stop cut short is finished.
        ((S::Running, S::Shutdown), [Some(S::Shutdown); 4]),
        ((S::Paused, S::Shutdown), [Some(S::Shutdown); 4]),
        ((S::Shutdown, S::Shutdown), [Some(S::Shutdown); 4]),
        ((S::Error, S::Running), [Some(S::Error); 4]),
        ((S::Crashed, S::Running), [Some(S::Crashed); 4]),
        // A delete cut short is finished.
        ((S::Deleting, S::Deleting), [None; 4]),
    ];
    for &((stored, desired), expected) in cases {
        for (state, want) in backend_states.into_iter().zip(expected) {
            let f = fixture();
            let r = f.create("a").await;
            f.force(r.id, stored, desired);
            f.fake.set_state(r.id, state);
            f.m.reconcile().await.unwrap();
            let got = f.get(r.id).map(|r| r.status);
            assert_eq!(
                got, want,
                "stored {stored} (desired {desired}), backend {state:?}"
            );
            let live = matches!(f.fake.state_of(r.id), B::Running { .. } | B::Paused);
            match got {
                // What the record says runs, runs (and what is frozen is frozen).
                Some(S::Running) => assert!(matches!(f.fake.state_of(r.id), B::Running { .. })),
                Some(S::Paused | S::Suspended) => assert_eq!(f.fake.state_of(r.id), B::Paused),
                // Reconcile leaves a failed record to its owner (start or delete).
                Some(S::Error | S::Crashed) if stored.is_failed() => {}
                // Nothing is left running behind a record that says it is not.
                Some(_) => assert!(
                    !live,
                    "{stored}/{state:?}: left {:?}",
                    f.fake.state_of(r.id)
                ),
                None => assert_eq!(f.fake.state_of(r.id), B::Missing),
            }
            if got == Some(S::Crashed) && stored != S::Crashed {
                assert_eq!(f.events(r.id).last().unwrap(), "crashed");
                assert!(f.get(r.id).unwrap().error.is_some());
            }
        }
    }
}

#[tokio::test]
async fn reconcile_reports_a_create_it_cannot_finish_as_error() {
    let f = fixture();
    let r = f.create("a").await;
    f.force(r.id, S::Creating, S::Running);
    f.fake.set_state(r.id, BackendState::Missing);
    f.fake.fail(Op::Start);
    f.m.reconcile().await.unwrap();
    let r = f.get(r.id).unwrap();
    assert_eq!(r.status, S::Error);
    assert!(r.error.unwrap().contains("could not be finished"));
}

#[tokio::test]
async fn the_monitor_marks_a_dead_init_crashed_and_counts_oom_kills() {
    let f = fixture();
    let r = f.create("a").await;
    f.fake.oom_kill(r.id);
    f.m.scan().await.unwrap();
    assert_eq!(
        f.get(r.id).unwrap().status,
        S::Running,
        "an OOM kill keeps the status"
    );
    assert_eq!(f.events(r.id).last().unwrap(), "oom_killed");
    f.fake.set_state(r.id, BackendState::Stopped);
    f.m.scan().await.unwrap();
    let r = f.get(r.id).unwrap();
    assert_eq!(r.status, S::Crashed);
    assert!(r.error.is_some());
    assert_eq!(f.events(r.id).last().unwrap(), "crashed");
    // Crashed is not a dead end.
    assert_eq!(
        f.m.act(T, "a", Action::Start).await.unwrap().status,
        S::Running
    );
}

#[tokio::test]
async fn idle_suspend_and_wake() {
    let f = fixture();
    let mut rq = req("a", 256);
    rq.idle_timeout_secs = Some(1);
    let r = f.m.create(T, rq, None, true).await.unwrap();
    f.m.scan().await.unwrap();
    assert_eq!(f.get(r.id).unwrap().status, S::Running, "not idle yet");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.m.scan().await.unwrap();
    assert_eq!(f.get(r.id).unwrap().status, S::Suspended);
    assert_eq!(f.fake.state_of(r.id), BackendState::Paused);
    // Pause takes ownership of the freeze without a backend call.
    let pauses = f.fake.count(Op::Pause);
    let p = f.m.act(T, "a", Action::Pause).await.unwrap();
    assert_eq!(p.status, S::Paused);
    assert_eq!(f.fake.count(Op::Pause), pauses);
    f.m.act(T, "a", Action::Resume).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.m.scan().await.unwrap();
    assert_eq!(f.get(r.id).unwrap().status, S::Suspended);
    // Start of a suspended runtime wakes it, as resume does.
    let w = f.m.act(T, "a", Action::Start).await.unwrap();
    assert_eq!(w.status, S::Running);
    assert_eq!(f.events(r.id).last().unwrap(), "woken");
}

#[tokio::test]
async fn resize_applies_live_only_where_the_runtime_is_up() {
    let f = fixture();
    let r = f.create("a").await;
    let mut up = runta_api::UpdateRuntimeRequest {
        resources: Some(ResourcesSpec {
            requests: RequestsSpec {
                memory_mib: Some(512),
                ..Default::default()
            },
            limits: None,
        }),
        ..Default::default()
    };
    f.m.update(T, "a", up.clone()).await.unwrap();
    assert_eq!(f.fake.limits_of(r.id).unwrap().memory_limit_mib, 512);
    f.m.act(T, "a", Action::Stop).await.unwrap();
    let n = f.fake.count(Op::Update);
    up.resources.as_mut().unwrap().requests.memory_mib = Some(384);
    let r2 = f.m.update(T, "a", up).await.unwrap();
    assert_eq!(r2.memory_limit_mib, 384);
    assert_eq!(
        f.fake.count(Op::Update),
        n,
        "a shut-down runtime is not touched"
    );
    assert_eq!(r2.status, S::Shutdown);
}
