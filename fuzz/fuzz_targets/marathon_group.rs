//! Marathon group JSON as `PUT /v2/groups` and `PUT /v2/groups/{id}` read it
//! (`parse_group`). Every body is an update or a clear 4xx.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marathon::groups::parse_group;
use model::AppId;

fuzz_target!(|body: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    let id = AppId::parse("/prod").expect("id");
    for default_id in [None, Some(&id)] {
        if let Err(e) = parse_group(value.clone(), default_id) {
            assert!((400..500).contains(&e.status), "status {} for {e:?}", e.status);
            assert!(!e.message.is_empty(), "no message: {e:?}");
        }
    }
});
