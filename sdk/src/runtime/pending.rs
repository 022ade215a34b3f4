//! Requests and calls waiting for an answer: key -> waiter, sharded so that the gateway's
//! connections rarely meet on a lock. The gateway keys by request id, a function by call id.

use super::failure::Failure;
use crate::message::Message;
use spright_core::ids::FnId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;

/// How a wait ended: the answer's message, or why there is none.
pub type Outcome = Result<Message, Failure>;

/// What an answer must match to be the one waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub request_id: u64,
    /// The function that must answer (a call's callee); `None` for anyone (the gateway takes
    /// the final answer of a sequence from whichever step gives it).
    pub callee: Option<FnId>,
}

impl Expect {
    fn matches(&self, request_id: u64, from: FnId) -> bool {
        self.request_id == request_id && self.callee.is_none_or(|c| c == from)
    }
}

struct Waiter {
    answer: oneshot::Sender<Outcome>,
    expect: Expect,
}

const SHARDS: usize = 16;

pub(crate) struct Pending {
    shards: [Mutex<HashMap<u64, Waiter>>; SHARDS],
}

impl Pending {
    pub fn new() -> Pending {
        Pending {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<HashMap<u64, Waiter>> {
        &self.shards[key as usize % SHARDS]
    }

    /// Starts waiting under `key`; the guard forgets it when dropped.
    pub fn open(&self, key: u64, expect: Expect) -> Awaiting<'_> {
        Awaiting {
            answer: self.insert(key, expect),
            pending: self,
            key,
            expect,
            open: true,
        }
    }

    fn insert(&self, key: u64, expect: Expect) -> oneshot::Receiver<Outcome> {
        let (answer, rx) = oneshot::channel();
        self.shard(key)
            .lock()
            .unwrap()
            .insert(key, Waiter { answer, expect });
        rx
    }

    fn close(&self, key: u64) {
        self.shard(key).lock().unwrap().remove(&key);
    }

    /// Hands `outcome` to the waiter under `key` if it waits for `request_id` from `from`.
    /// Returns the outcome when nobody takes it (its buffer, if any, is freed on drop).
    pub fn complete(
        &self,
        key: u64,
        request_id: u64,
        from: FnId,
        outcome: Outcome,
    ) -> Option<Outcome> {
        let waiter = {
            let mut shard = self.shard(key).lock().unwrap();
            match shard.get(&key) {
                Some(w) if w.expect.matches(request_id, from) => shard.remove(&key),
                _ => None,
            }
        };
        match waiter {
            Some(w) => w.answer.send(outcome).err(),
            None => Some(outcome),
        }
    }

    /// Fails every waiter `affected` picks with the failure `why` makes; returns how many.
    pub fn fail_where(
        &self,
        affected: impl Fn(&Expect) -> bool,
        why: impl Fn() -> Failure,
    ) -> usize {
        let mut failed = 0;
        for shard in &self.shards {
            let gone: Vec<Waiter> = {
                let mut shard = shard.lock().unwrap();
                let keys: Vec<u64> = shard
                    .iter()
                    .filter(|(_, w)| affected(&w.expect))
                    .map(|(&k, _)| k)
                    .collect();
                keys.iter().filter_map(|k| shard.remove(k)).collect()
            };
            for w in gone {
                failed += 1;
                let _ = w.answer.send(Err(why()));
            }
        }
        failed
    }

    /// Waiters now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

/// A wait for one answer. Dropping it (a client hanging up, a handler's own timeout) forgets
/// the wait, so no entry outlives its waiter.
pub struct Awaiting<'a> {
    pending: &'a Pending,
    key: u64,
    expect: Expect,
    answer: oneshot::Receiver<Outcome>,
    /// The entry may still be in the table (an answer removes it before it is sent).
    open: bool,
}

impl Awaiting<'_> {
    /// The key the answer is expected under (the gateway's request id, a function's call id).
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Waits for the answer for at most `timeout`; on a timeout the wait is forgotten.
    pub async fn outcome(&mut self, timeout: Duration) -> Outcome {
        let got = tokio::time::timeout(timeout, &mut self.answer).await;
        match got {
            Ok(answer) => {
                self.open = false;
                answer.unwrap_or(Err(Failure::Abandoned))
            }
            Err(_) => {
                self.forget();
                Err(Failure::Timeout {
                    ms: timeout.as_millis() as u64,
                })
            }
        }
    }

    /// Waits afresh under the same key, for a request being sent again.
    pub fn reopen(&mut self) {
        self.answer = self.pending.insert(self.key, self.expect);
        self.open = true;
    }

    /// Stops waiting.
    pub fn forget(&mut self) {
        if std::mem::take(&mut self.open) {
            self.pending.close(self.key);
        }
    }
}

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        self.forget();
    }
}
