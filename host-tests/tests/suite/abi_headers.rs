// ---- test guest: a thin export `t_<hostcall>` per hostcall, so tests can
// call any hostcall with arbitrary (also bad) pointers and lengths.
use crate::guest::{call, put, returned, vm, PAUSE_HEADERS};
#[allow(dead_code)]
use citygate_host::{Request, Status};

const OK: i32 = Status::Ok as i32;
const NOT_FOUND: i32 = Status::NotFound as i32;
const BAD_ARG: i32 = Status::BadArgument as i32;
const BAD_MEM: i32 = Status::InvalidMemoryAccess as i32;
const REQ: i32 = 0;
const RESP: i32 = 2;

fn stream() -> (citygate_host::Vm, u32) {
    let mut vm = vm(PAUSE_HEADERS);
    let id = vm
        .open(
            Request::get("/parking?x=1")
                .header("X-Key", "v1")
                .header("x-key", "v2"),
        )
        .unwrap();
    (vm, id)
}

#[test]
fn get_value_returns_first_value_case_insensitively() {
    let (mut vm, id) = stream();
    let (k, kl) = put(&mut vm, 100, b"X-KEY");
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_get_header_map_value",
            id,
            &[REQ, k, kl, 200, 204]
        ),
        OK
    );
    assert_eq!(returned(&mut vm, 200), b"v1");
    let (k, kl) = put(&mut vm, 100, b":path");
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_get_header_map_value",
            id,
            &[REQ, k, kl, 200, 204]
        ),
        OK
    );
    assert_eq!(returned(&mut vm, 200), b"/parking?x=1");
    let (k, kl) = put(&mut vm, 100, b"absent");
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_get_header_map_value",
            id,
            &[REQ, k, kl, 200, 204]
        ),
        NOT_FOUND
    );
}

#[test]
fn pairs_round_trip_in_the_proxy_wasm_format() {
    let (mut vm, id) = stream();
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_get_header_map_pairs",
            id,
            &[REQ, 200, 204]
        ),
        OK
    );
    let map = citygate_host::Headers::deserialize(&returned(&mut vm, 200)).unwrap();
    assert_eq!(map.get(":method"), Some("GET"));
    assert_eq!(map.get_all("x-key"), vec!["v1", "v2"]);

    let new = citygate_host::Headers(vec![
        (":method".into(), "PUT".into()),
        ("A-B".into(), "c".into()),
    ]);
    let (p, n) = put(&mut vm, 1000, &new.serialize());
    assert_eq!(
        call(&mut vm, "t_proxy_set_header_map_pairs", id, &[REQ, p, n]),
        OK
    );
    assert_eq!(
        call(&mut vm, "t_proxy_get_header_map_size", id, &[REQ, 300]),
        OK
    );
    assert_eq!(
        vm.guest().read_u32(300).unwrap() as usize,
        new.serialize().len()
    );
    let (k, kl) = put(&mut vm, 100, b"a-b");
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_get_header_map_value",
            id,
            &[REQ, k, kl, 200, 204]
        ),
        OK
    );
    assert_eq!(returned(&mut vm, 200), b"c");
}

#[test]
fn add_replace_remove() {
    let (mut vm, id) = stream();
    let (k, kl) = put(&mut vm, 100, b"x-key");
    let (v, vl) = put(&mut vm, 120, b"v3");
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_add_header_map_value",
            id,
            &[REQ, k, kl, v, vl]
        ),
        OK
    );
    let (k2, k2l) = put(&mut vm, 140, b"X-New");
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_replace_header_map_value",
            id,
            &[REQ, k2, k2l, v, vl]
        ),
        OK
    );
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_replace_header_map_value",
            id,
            &[REQ, k, kl, v, vl]
        ),
        OK
    );
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_get_header_map_pairs",
            id,
            &[REQ, 200, 204]
        ),
        OK
    );
    let map = citygate_host::Headers::deserialize(&returned(&mut vm, 200)).unwrap();
    assert_eq!(map.get_all("x-key"), vec!["v3"]);
    assert_eq!(map.get("x-new"), Some("v3"));
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_remove_header_map_value",
            id,
            &[REQ, k, kl]
        ),
        OK
    );
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_get_header_map_value",
            id,
            &[REQ, k, kl, 200, 204]
        ),
        NOT_FOUND
    );
}

#[test]
fn maps_not_available_are_not_found_and_bad_types_are_bad_arguments() {
    let (mut vm, id) = stream();
    let root = vm.root_context_id();
    // No response yet, and the root context has no request.
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_get_header_map_pairs",
            id,
            &[RESP, 200, 204]
        ),
        NOT_FOUND
    );
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_get_header_map_pairs",
            root,
            &[REQ, 200, 204]
        ),
        NOT_FOUND
    );
    assert_eq!(
        call(&mut vm, "t_proxy_get_header_map_pairs", id, &[6, 200, 204]),
        NOT_FOUND
    );
    assert_eq!(
        call(&mut vm, "t_proxy_get_header_map_pairs", id, &[99, 200, 204]),
        BAD_ARG
    );
}

#[test]
fn bad_pointers_and_malformed_maps_return_statuses() {
    let (mut vm, id) = stream();
    let far = 10 << 20; // beyond the 4 pages of memory
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_get_header_map_value",
            id,
            &[REQ, far, 3, 200, 204]
        ),
        BAD_MEM
    );
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_get_header_map_value",
            id,
            &[REQ, 100, -1, 200, 204]
        ),
        BAD_MEM
    );
    let (k, kl) = put(&mut vm, 100, b":path");
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_get_header_map_value",
            id,
            &[REQ, k, kl, far, 204]
        ),
        BAD_MEM
    );
    assert_eq!(
        call(&mut vm, "t_proxy_get_header_map_pairs", id, &[REQ, 200, -4]),
        BAD_MEM
    );
    // A count that promises more pairs than there are bytes.
    let (p, n) = put(&mut vm, 1000, &[9, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(
        call(&mut vm, "t_proxy_set_header_map_pairs", id, &[REQ, p, n]),
        Status::ParseFailure as i32
    );
    let (p, n) = put(&mut vm, 1000, &[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(
        call(&mut vm, "t_proxy_set_header_map_pairs", id, &[REQ, p, n]),
        Status::ParseFailure as i32
    );
    // The stream still works afterwards.
    assert_eq!(
        call(
            &mut vm,
            "t_proxy_get_header_map_value",
            id,
            &[REQ, k, kl, 200, 204]
        ),
        OK
    );
}
