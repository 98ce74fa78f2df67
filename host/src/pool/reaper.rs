//! Drops finished instances on a thread of their own, so tearing down a
//! wasmtime store (tens of microseconds) is never on a caller's path.

use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

type Garbage = Box<dyn Send>;

static REAPER: OnceLock<Option<Sender<Garbage>>> = OnceLock::new();

/// Drops `value` on the reaper thread (or here, if the thread cannot start).
pub fn reap<T: Send + 'static>(value: T) {
    let sender = REAPER.get_or_init(|| {
        let (sender, receiver) = channel::<Garbage>();
        std::thread::Builder::new()
            .name("cairn-reaper".into())
            .spawn(move || {
                for garbage in receiver {
                    drop(garbage);
                }
            })
            .ok()
            .map(|_| sender)
    });
    if let Some(sender) = sender {
        // A send only fails when the thread is gone; the value then drops here.
        let _ = sender.send(Box::new(value));
    }
}
