//! `time.now_ns` from the proxy's clock instead of the guest's: the same
//! instant for the whole evaluation (as in OPA) and controllable in tests.

use regorus::Value;

use super::BuiltinResult;

pub fn now_ns(_args: &[Value], now_ns: u64) -> BuiltinResult {
    Ok(Value::from(now_ns))
}
