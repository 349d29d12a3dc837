// ---- test guest: a thin export `t_<hostcall>` per hostcall, so tests can
// call any hostcall with arbitrary (also bad) pointers and lengths.
use crate::guest::{call, put, returned, wat, PAUSE_HEADERS};
#[allow(dead_code)]
use citygate_host::{Plugin, SharedStore, Status, Vm};
use wasmtime::Val;

const OK: i32 = Status::Ok as i32;

fn worker(store: &SharedStore) -> Vm {
    Plugin::from_bytes(wat(PAUSE_HEADERS))
        .unwrap()
        .vm()
        .vm_id("city")
        .shared(store)
        .start()
        .unwrap()
}

#[test]
fn two_workers_share_data_with_cas() {
    let store = SharedStore::new();
    let (mut a, mut b) = (worker(&store), worker(&store));
    let (k, kl) = put(&mut a, 100, b"bucket");
    let (v, vl) = put(&mut a, 120, b"one");
    assert_eq!(
        call(&mut a, "t_proxy_set_shared_data", 1, &[k, kl, v, vl, 0]),
        OK
    );

    put(&mut b, 100, b"bucket");
    assert_eq!(
        call(
            &mut b,
            "t_proxy_get_shared_data",
            1,
            &[k, kl, 200, 204, 208]
        ),
        OK
    );
    assert_eq!(returned(&mut b, 200), b"one");
    let cas = b.guest().read_u32(208).unwrap() as i32;
    assert_ne!(cas, 0);

    // a writes with the current CAS; b's CAS is now stale.
    assert_eq!(
        call(&mut a, "t_proxy_set_shared_data", 1, &[k, kl, v, vl, cas]),
        OK
    );
    let (v2, v2l) = put(&mut b, 120, b"two");
    assert_eq!(
        call(&mut b, "t_proxy_set_shared_data", 1, &[k, kl, v2, v2l, cas]),
        Status::CasMismatch as i32
    );
    assert_eq!(store.get("city", "bucket").unwrap().0, b"one");

    let (m, ml) = put(&mut a, 300, b"missing");
    assert_eq!(
        call(
            &mut a,
            "t_proxy_get_shared_data",
            1,
            &[m, ml, 200, 204, 208]
        ),
        Status::NotFound as i32
    );
    assert_eq!(
        call(
            &mut a,
            "t_proxy_get_shared_data",
            1,
            &[k, kl, 200, 204, 1 << 30]
        ),
        Status::InvalidMemoryAccess as i32
    );
    assert_eq!(
        call(
            &mut a,
            "t_proxy_set_shared_data",
            1,
            &[k, 1 << 30, v, vl, 0]
        ),
        Status::InvalidMemoryAccess as i32
    );
}

#[test]
fn stores_do_not_leak_between_tests_or_vm_ids() {
    let store = SharedStore::new();
    let mut a = worker(&store);
    let (k, kl) = put(&mut a, 100, b"bucket");
    let (v, vl) = put(&mut a, 120, b"x");
    assert_eq!(
        call(&mut a, "t_proxy_set_shared_data", 1, &[k, kl, v, vl, 0]),
        OK
    );
    assert!(store.get("other-vm", "bucket").is_none());
    assert!(SharedStore::new().get("city", "bucket").is_none());
}

#[test]
fn queues_register_resolve_enqueue_dequeue_and_notify_the_owner() {
    let store = SharedStore::new();
    let (mut owner, mut producer) = (worker(&store), worker(&store));
    let (n, nl) = put(&mut owner, 100, b"jwks");
    assert_eq!(
        call(
            &mut owner,
            "t_proxy_register_shared_queue",
            1,
            &[n, nl, 200]
        ),
        OK
    );
    let id = owner.guest().read_u32(200).unwrap() as i32;

    let (vm, vml) = put(&mut producer, 120, b"city");
    put(&mut producer, 100, b"jwks");
    assert_eq!(
        call(
            &mut producer,
            "t_proxy_resolve_shared_queue",
            1,
            &[vm, vml, n, nl, 200]
        ),
        OK
    );
    assert_eq!(producer.guest().read_u32(200).unwrap() as i32, id);
    let (x, xl) = put(&mut producer, 300, b"refresh");
    assert_eq!(
        call(
            &mut producer,
            "t_proxy_enqueue_shared_queue",
            1,
            &[id, x, xl]
        ),
        OK
    );

    assert_eq!(producer.deliver_queue_ready().unwrap(), 0);
    assert_eq!(owner.deliver_queue_ready().unwrap(), 1);
    assert_eq!(
        call(
            &mut owner,
            "t_proxy_dequeue_shared_queue",
            1,
            &[id, 400, 404]
        ),
        OK
    );
    assert_eq!(returned(&mut owner, 400), b"refresh");
    assert_eq!(
        call(
            &mut owner,
            "t_proxy_dequeue_shared_queue",
            1,
            &[id, 400, 404]
        ),
        Status::Empty as i32
    );
    assert_eq!(
        call(
            &mut owner,
            "t_proxy_dequeue_shared_queue",
            1,
            &[99, 400, 404]
        ),
        Status::NotFound as i32
    );
    let (u, ul) = put(&mut owner, 500, b"nope");
    assert_eq!(
        call(
            &mut owner,
            "t_proxy_resolve_shared_queue",
            1,
            &[vm, vml, u, ul, 200]
        ),
        Status::NotFound as i32
    );
}

#[test]
fn metrics_follow_envoy_rules_and_are_shared() {
    let store = SharedStore::new();
    let (mut a, mut b) = (worker(&store), worker(&store));
    let (n, nl) = put(&mut a, 100, b"citygate_auth_denied");
    assert_eq!(
        call(&mut a, "t_proxy_define_metric", 1, &[0, n, nl, 200]),
        OK
    );
    let counter = a.guest().read_u32(200).unwrap() as i32;
    put(&mut b, 100, b"citygate_auth_denied");
    assert_eq!(
        call(&mut b, "t_proxy_define_metric", 1, &[0, n, nl, 200]),
        OK
    );
    assert_eq!(b.guest().read_u32(200).unwrap() as i32, counter);

    let inc = |vm: &mut Vm, name: &'static str, id: i32, v: i64| {
        vm.guest()
            .call_vals(name, 1, &[Val::I32(id), Val::I64(v)])
            .unwrap()
            .unwrap()
    };
    assert_eq!(inc(&mut a, "t_proxy_increment_metric", counter, 2), OK);
    assert_eq!(inc(&mut b, "t_proxy_increment_metric", counter, 1), OK);
    assert_eq!(
        inc(&mut a, "t_proxy_increment_metric", counter, -1),
        Status::BadArgument as i32
    );
    assert_eq!(a.metric("citygate_auth_denied"), Some(3));
    assert_eq!(call(&mut a, "t_proxy_get_metric", 1, &[counter, 304]), OK);
    assert_eq!(a.guest().read_u32(304).unwrap(), 3);

    let (h, hl) = put(&mut a, 100, b"citygate_eval_us");
    assert_eq!(
        call(&mut a, "t_proxy_define_metric", 1, &[2, h, hl, 200]),
        OK
    );
    let hist = a.guest().read_u32(200).unwrap() as i32;
    assert_eq!(inc(&mut a, "t_proxy_record_metric", hist, 42), OK);
    assert_eq!(a.histogram("citygate_eval_us"), Some(vec![42]));
    assert_eq!(
        call(&mut a, "t_proxy_get_metric", 1, &[hist, 304]),
        Status::BadArgument as i32
    );
    assert_eq!(
        call(&mut a, "t_proxy_get_metric", 1, &[77, 304]),
        Status::NotFound as i32
    );
    assert_eq!(
        call(&mut a, "t_proxy_define_metric", 1, &[9, h, hl, 200]),
        Status::BadArgument as i32
    );
    assert_eq!(
        call(&mut a, "t_proxy_get_metric", 1, &[counter, 1 << 30]),
        Status::InvalidMemoryAccess as i32
    );
}
